"""gossamer_common: what every Gossamer component shares.

- :mod:`~gossamer_common.settings`: typed settings from env vars and flags, with ``--help``;
- :mod:`~gossamer_common.logging`: structlog JSON lines on stderr, secrets redacted;
- :mod:`~gossamer_common.metrics` / :mod:`~gossamer_common.process_metrics`: a lock-free
  Prometheus registry for the proxy's hot path and the standard ``process_*`` metrics;
- :mod:`~gossamer_common.admin` (+ the sans-io :mod:`~gossamer_common.http_request_parser`):
  the admin HTTP server (``/metrics``, ``/live``, ``/ready``, ``/shutdown``, extra routes);
- :mod:`~gossamer_common.shutdown`: SIGTERM/SIGINT → stop accepting → drain → exit;
- :mod:`~gossamer_common.runtime`: uvloop and garbage-collector tuning.
"""
