"""Gossamer's wire API: the Linkerd-compatible protobuf/gRPC modules and their helpers.

- ``gossamer_api.proxy.<name>_pb2`` / ``_pb2_grpc``: generated from ``libs/api/proto``
  (``make protos``); package names, field numbers and services match Linkerd's proxy API.
- ``gossamer_api.proxy.<name>_grpc``: grpclib stubs from the same protos, for the proxy's
  control-plane clients (importing them never imports grpcio, which keeps the sidecar small).
- ``gossamer_api.addresses``: ``ipaddress`` values to and from ``io.linkerd.proxy.net`` messages.
- ``gossamer_api.transport_header``: sans-io framing of the ``transport.l5d.io/v1`` header.
- ``gossamer_api.grpc_paths``: the gRPC method paths that servers and proxies agree on.
"""
