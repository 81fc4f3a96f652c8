"""The viz web dashboard: golden metrics of namespaces, workloads and pods, and the edges
between them, as server-rendered pages (with JSON twins) read from the viz Prometheus.

``python -m gossamer_cli.viz.web`` runs it; ``gossamer viz install`` deploys it as the ``web``
component and local mode runs it in the node namespace. The pieces: :mod:`.guard` (names and
Host checks), :mod:`.httpio` (request parsing and responses), :mod:`.data` (the queries, shared
with ``gossamer viz stat``/``edges``), :mod:`.pages` (HTML) and :mod:`.server` (asyncio I/O).
"""
