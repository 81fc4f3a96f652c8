"""gRPC channels to the control plane (destination, policy).

Plaintext when the service has no ``*_SVC_NAME`` (local mode, or a loopback address, where
Linkerd skips TLS too); otherwise TLS with the trust anchors as roots, the service identity
as the expected server name, and the proxy's own certificate as client certificate once it
has one. See :mod:`.identity` for the ALPN caveat.
"""

from __future__ import annotations

import grpc
from gossamer_tls import private_key_to_pem
from gossamer_tls.pem import certificates_to_pem

from gossamer_proxy.mesh.tls_contexts import Credentials

__all__ = ["control_channel", "grpc_target"]


def grpc_target(addr: str) -> str:
    """Drop the root dot of ``name.ns.svc.cluster.local.:8086``, which gRPC's resolver rejects."""
    host, sep, port = addr.rpartition(":")
    if sep and host.endswith(".") and not host.endswith(".."):
        return f"{host[:-1]}:{port}"
    return addr


def control_channel(
    addr: str,
    *,
    server_name: str | None,
    trust_anchors_pem: str | None,
    credentials: Credentials | None = None,
) -> grpc.aio.Channel:
    target = grpc_target(addr)
    if server_name is None:
        return grpc.aio.insecure_channel(target)
    if not trust_anchors_pem:
        raise ValueError(f"TLS to {server_name} needs trust anchors")
    if credentials is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=trust_anchors_pem.encode(),
            private_key=private_key_to_pem(credentials.private_key),
            certificate_chain=certificates_to_pem((credentials.leaf, *credentials.intermediates)),
        )
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=trust_anchors_pem.encode())
    return grpc.aio.secure_channel(
        target, creds, options=(("grpc.ssl_target_name_override", server_name),)
    )
