"""The proxy's mesh cores: identity, discovery, balancing, resilience, routing and policy.

The data path (listeners, HTTP/1, HTTP/2, opaque forwarding) plugs these in.

Sans-io (no asyncio, sockets or gRPC; time and randomness are parameters):
``backoff``, ``ewma``, ``balancer``, ``accrual``, ``queue`` (fail-fast), ``retry_budget``,
``retry``, ``request``, ``routes``, ``profile``, ``split``, ``classify``, ``authz``,
``authz_metrics``, ``tls_labels``, ``l5d_headers``, ``tls_detect``, ``transport``,
``endpoints``, ``outbound_policy``, ``schedule``, ``certify``, ``idle``.

I/O shell: ``identity`` (Certify and renewal), ``tls_contexts`` (mesh ``ssl`` contexts),
``channels`` (gRPC channels to the control plane), ``control_stream`` (one resilient
server-streaming call), ``discovery`` (Get/GetProfile watches), ``policy_watch`` (inbound
WatchPort, outbound Watch), ``watch_state``, ``settings`` (``LINKERD2_PROXY_*``).
"""
