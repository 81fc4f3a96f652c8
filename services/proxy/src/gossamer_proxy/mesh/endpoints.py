"""Endpoint sets from ``Destination.Get`` streams (sans-io).

A ``Get`` stream sends ``add`` (a set of weighted addresses), ``remove`` (addresses) and
``no_endpoints {exists}`` messages in any order and possibly with duplicates
(linkerd-wire.md §1.5, §3.1). :class:`EndpointTable` folds them into the current set keyed by
``(ip, port)``: an ``add`` of a known address replaces what we knew about it, a ``remove``
of an unknown address is a no-op, ``no_endpoints`` empties the set and records whether the
service exists. An address that cannot be decoded is skipped and reported, so one bad entry
never costs the rest of the update.

:class:`Endpoint` is everything the data path needs to reach one endpoint: TLS identity and
SNI (``server_name``, defaulting to the identity), the protocol hint (``h2`` upgrades HTTP/1,
``opaque`` skips detection), the proxy inbound port for the transport header, an authority
override and the ``dst_*`` metric labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gossamer_api.addresses import AddressError, IPAddress, tcp_address_from_proto

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from gossamer_api.proxy import destination_pb2

__all__ = ["Endpoint", "EndpointTable", "UpdateResult", "endpoint_from_proto"]

Address = tuple[IPAddress, int]
ProtocolHint = Literal["h2", "opaque"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: IPAddress
    port: int
    weight: int = 10000
    labels: tuple[tuple[str, str], ...] = ()
    identity: str | None = None
    """The server's mesh identity (DNS-like name or SPIFFE URI); ``None`` = plaintext."""
    server_name: str | None = None
    """What to send as SNI; Linkerd defaults it to the identity."""
    protocol_hint: ProtocolHint | None = None
    opaque_transport_port: int | None = None
    """The peer proxy's inbound port: connect there with a transport header."""
    authority_override: str | None = None
    http2_params: destination_pb2.Http2ClientParams | None = field(default=None, compare=False)

    @property
    def address(self) -> Address:
        return (self.ip, self.port)

    @property
    def sni(self) -> str | None:
        return self.server_name or self.identity

    @property
    def metric_labels(self) -> dict[str, str]:
        """The labels for metrics, prefixed ``dst_`` as Linkerd exports them."""
        return {f"dst_{k}": v for k, v in self.labels}


def _identity(message: destination_pb2.TlsIdentity) -> tuple[str | None, str | None]:
    kind = message.WhichOneof("strategy")
    identity: str | None = None
    if kind == "dns_like_identity":
        identity = message.dns_like_identity.name or None
    elif kind == "uri_like_identity":
        identity = message.uri_like_identity.uri or None
    server_name = message.server_name.name if message.HasField("server_name") else ""
    return identity, (server_name or identity)


def endpoint_from_proto(
    message: destination_pb2.WeightedAddr, set_labels: Mapping[str, str] | None = None
) -> Endpoint:
    """Decode one ``WeightedAddr``; raises :class:`AddressError` for an unusable address."""
    ip, port = tcp_address_from_proto(message.addr)
    if port == 0:
        raise AddressError(f"endpoint {ip} has port 0")
    labels = dict(set_labels or {})
    labels.update(message.metric_labels)
    identity = server_name = None
    if message.HasField("tls_identity"):
        identity, server_name = _identity(message.tls_identity)
    hint: ProtocolHint | None = None
    transport_port: int | None = None
    if message.HasField("protocol_hint"):
        kind = message.protocol_hint.WhichOneof("protocol")
        hint = kind if kind in ("h2", "opaque") else None
        if message.protocol_hint.HasField("opaque_transport"):
            inbound = message.protocol_hint.opaque_transport.inbound_port
            if not 0 < inbound <= 65535:
                raise AddressError(f"endpoint {ip}:{port} has opaque transport port {inbound}")
            transport_port = inbound
    override = None
    if message.HasField("authority_override"):
        override = message.authority_override.authority_override or None
    return Endpoint(
        ip=ip,
        port=port,
        weight=message.weight,
        labels=tuple(sorted(labels.items())),
        identity=identity,
        server_name=server_name,
        protocol_hint=hint,
        opaque_transport_port=transport_port,
        authority_override=override,
        http2_params=message.http2 if message.HasField("http2") else None,
    )


@dataclass(frozen=True, slots=True)
class UpdateResult:
    changed: bool
    errors: tuple[str, ...] = ()


class EndpointTable:
    """The endpoints of one ``Get`` target, as last told by the destination service."""

    def __init__(self) -> None:
        self.endpoints: dict[Address, Endpoint] = {}
        #: ``None`` until the first message; ``False`` after ``no_endpoints{exists:false}``.
        self.exists: bool | None = None
        self._resync = False

    @property
    def known(self) -> bool:
        """Whether any message has arrived (before that, the target is still resolving)."""
        return self.exists is not None

    def begin_resync(self) -> None:
        """A new stream replaces a broken one: keep serving the old set until it speaks.

        The server resends its full state on a new stream, so the first ``add`` then
        *replaces* the set (endpoints that vanished during the outage are dropped) instead
        of being merged into it.
        """
        self._resync = True

    def apply(self, update: destination_pb2.Update) -> UpdateResult:
        kind = update.WhichOneof("update")
        errors: list[str] = []
        before = dict(self.endpoints)
        before_exists = self.exists
        if self._resync and kind is not None:
            self._resync = False
            if kind == "add":
                self.endpoints.clear()
        if kind == "add":
            set_labels = dict(update.add.metric_labels)
            for weighted in update.add.addrs:
                try:
                    endpoint = endpoint_from_proto(weighted, set_labels)
                except AddressError as exc:
                    errors.append(f"skipped endpoint: {exc}")
                    continue
                self.endpoints[endpoint.address] = endpoint
            self.exists = True
        elif kind == "remove":
            for addr in update.remove.addrs:
                try:
                    self.endpoints.pop(tcp_address_from_proto(addr), None)
                except AddressError as exc:
                    errors.append(f"skipped removal: {exc}")
            self.exists = True
        elif kind == "no_endpoints":
            self.endpoints.clear()
            self.exists = update.no_endpoints.exists
        else:
            errors.append("Update has no add, remove or no_endpoints set")
        changed = before != self.endpoints or before_exists != self.exists
        return UpdateResult(changed=changed, errors=tuple(errors))

    def reset(self) -> None:
        """Forget everything (used only when a target is evicted, never on disconnect)."""
        self.endpoints.clear()
        self.exists = None
        self._resync = False
