"""The TLS labels Linkerd puts on proxy metrics (linkerd-wire.md §8).

Server (inbound) side: ``tls="true",client_id="<id>"`` for meshed mTLS (``client_id`` empty
when the client sent no certificate), ``tls="no_identity",no_tls_reason="no_tls_from_remote"``
for plaintext, ``tls="opaque",sni="<sni>"`` for TLS passed through to the application, and
``tls="disabled"`` when the proxy has no identity. Client (outbound) side:
``tls="true",server_id="<id>"`` or ``tls="no_identity",no_tls_reason="…"`` (e.g.
``not_provided_by_service_discovery``), or ``tls="disabled"``.
"""

from __future__ import annotations

__all__ = ["inbound_tls_labels", "outbound_tls_labels"]


def inbound_tls_labels(
    *,
    tls: bool,
    client_id: str | None = None,
    passthrough_sni: str | None = None,
    identity_disabled: bool = False,
) -> dict[str, str]:
    if identity_disabled:
        return {"tls": "disabled"}
    if passthrough_sni is not None:
        return {"tls": "opaque", "sni": passthrough_sni}
    if tls:
        return {"tls": "true", "client_id": client_id or ""}
    return {"tls": "no_identity", "no_tls_reason": "no_tls_from_remote"}


def outbound_tls_labels(
    *,
    server_id: str | None,
    no_tls_reason: str = "not_provided_by_service_discovery",
    identity_disabled: bool = False,
) -> dict[str, str]:
    if identity_disabled:
        return {"tls": "disabled"}
    if server_id:
        return {"tls": "true", "server_id": server_id}
    return {"tls": "no_identity", "no_tls_reason": no_tls_reason}
