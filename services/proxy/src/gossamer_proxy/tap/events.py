"""``TapEvent`` messages for one observed request (sans-io: times come from the record).

Each tapped request yields up to three events: ``RequestInit`` (when it is forwarded, or
answered by the proxy itself), ``ResponseInit`` (its response head) and ``ResponseEnd``
(bytes, ``grpc-status`` or the HTTP/2 reset code). Every event carries the request's
addresses, direction and metadata: ``tls`` (``true`` for mesh mTLS, else Linkerd's reason)
and the peer identities in the endpoint metadata, the endpoint's discovery labels in the
destination metadata (outbound), and the route's labels.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import AddressError, tcp_address_to_proto
from gossamer_api.proxy import http_types_pb2, net_pb2, tap_pb2

from ..observe import ObservedRequest

__all__ = ["EventBuilder", "http_method", "http_scheme"]

TapEvent = tap_pb2.TapEvent
_MAX_HEADERS = 64
_MAX_HEADER_BYTES = 4096

_REGISTERED_METHODS = {
    name.encode(): value for name, value in http_types_pb2.HttpMethod.Registered.items()
}


def http_method(method: bytes) -> http_types_pb2.HttpMethod:
    value = _REGISTERED_METHODS.get(method)
    if value is not None:
        return http_types_pb2.HttpMethod(registered=value)
    return http_types_pb2.HttpMethod(unregistered=method.decode("latin-1")[:64])


def http_scheme(scheme: bytes) -> http_types_pb2.Scheme:
    lowered = scheme.lower()
    if lowered == b"http":
        return http_types_pb2.Scheme(registered=http_types_pb2.Scheme.HTTP)
    if lowered == b"https":
        return http_types_pb2.Scheme(registered=http_types_pb2.Scheme.HTTPS)
    return http_types_pb2.Scheme(unregistered=scheme.decode("latin-1")[:64])


def _duration(seconds: float) -> Duration:
    nanos = max(round(seconds * 1e9), 0)
    return Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def _address(addr: tuple[str, int] | None) -> net_pb2.TcpAddress | None:
    return None if addr is None else _cached_address(addr[0], addr[1])


@functools.lru_cache(maxsize=4096)
def _cached_address(host: str, port: int) -> net_pb2.TcpAddress | None:
    """Parsed once per address (callers copy it, never change it); bounded."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return tcp_address_to_proto(ip, port)
    except (ValueError, AddressError):
        return None


def _headers(headers: Sequence[tuple[bytes, bytes]]) -> http_types_pb2.Headers:
    """At most 64 headers of at most 4 KiB each: a tap never copies unbounded input."""
    message = http_types_pb2.Headers()
    for name, value in headers[:_MAX_HEADERS]:
        message.headers.add(
            name=name.decode("latin-1")[:_MAX_HEADER_BYTES], value=value[:_MAX_HEADER_BYTES]
        )
    return message


class EventBuilder:
    """Builds the events of one request for one tap (``headers``: Extract.Http.Headers)."""

    __slots__ = ("headers",)

    def __init__(self, *, headers: bool) -> None:
        self.headers = headers

    @staticmethod
    def base(request: ObservedRequest) -> TapEvent:
        """The request's addresses, direction and metadata, shared by its events (build it
        once its destination is known, and never change it)."""
        inbound = request.direction == "inbound"
        event = TapEvent(proxy_direction=TapEvent.INBOUND if inbound else TapEvent.OUTBOUND)
        source, destination = _address(request.source), _address(request.dst_addr)
        if source is not None:
            event.source.CopyFrom(source)
        if destination is not None:
            event.destination.CopyFrom(destination)
        if inbound:
            meta = event.source_meta.labels
            meta["tls"] = "true" if request.client_id else "no_identity"
            if request.client_id:
                meta["client_id"] = request.client_id
        else:
            meta = event.destination_meta.labels
            meta.update(request.dst_labels)
            meta["tls"] = "true" if request.server_id else "no_identity"
            if request.server_id:
                meta["server_id"] = request.server_id
        if request.route_labels:
            event.route_meta.labels.update(request.route_labels)
        return event

    def _stream_id(self, request: ObservedRequest) -> tap_pb2.TapEvent.Http.StreamId:
        return TapEvent.Http.StreamId(
            base=request.connection.connection_id & 0xFFFFFFFF, stream=request.stream_id
        )

    @staticmethod
    def _event(base: TapEvent) -> TapEvent:
        event = TapEvent()
        event.CopyFrom(base)
        return event

    def request_init(self, request: ObservedRequest, base: TapEvent) -> TapEvent:
        event = self._event(base)
        init = event.http.request_init
        init.id.CopyFrom(self._stream_id(request))
        init.method.CopyFrom(http_method(request.method))
        init.scheme.CopyFrom(http_scheme(request.scheme or b"http"))
        init.authority = request.authority.decode("latin-1")
        init.path = request.path.decode("latin-1")
        if self.headers:
            init.headers.CopyFrom(_headers(request.headers))
        return event

    def response_init(self, request: ObservedRequest, base: TapEvent) -> TapEvent:
        event = self._event(base)
        init = event.http.response_init
        init.id.CopyFrom(self._stream_id(request))
        started = request.precise_started
        responded = request.precise_response
        init.since_request_init.CopyFrom(_duration((responded or started) - started))
        init.http_status = request.status
        if self.headers:
            init.headers.CopyFrom(_headers(request.response_headers))
        return event

    def response_end(self, request: ObservedRequest, base: TapEvent) -> TapEvent:
        event = self._event(base)
        end = event.http.response_end
        end.id.CopyFrom(self._stream_id(request))
        started = request.precise_started
        ended = request.precise_ended if request.precise_ended is not None else started
        responded = request.precise_response if request.precise_response is not None else ended
        end.since_request_init.CopyFrom(_duration(ended - started))
        end.since_response_init.CopyFrom(_duration(ended - responded))
        end.response_bytes = request.response_bytes
        if request.reset_code is not None:
            end.eos.reset_error_code = request.reset_code
        elif request.grpc_status is not None:
            end.eos.grpc_status_code = request.grpc_status
        if self.headers and request.trailers:
            end.trailers.CopyFrom(_headers(request.trailers))
        return event
