"""HTTP/2 (and so gRPC) proxying over the ``h2`` state machine."""
