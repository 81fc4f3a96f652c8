"""The proxy's metric families under Linkerd's legacy names and labels (linkerd-wire.md §8).

HTTP: ``request_total``, ``response_total`` and ``response_latency_ms`` (time to the response
head, in milliseconds). Transport: ``tcp_open_total``, ``tcp_open_connections``,
``tcp_read_bytes_total``, ``tcp_write_bytes_total`` and ``tcp_close_total``.

Outbound traffic to a discovered endpoint also carries that endpoint's ``metric_labels``
from the Destination service, each prefixed ``dst_`` (``dst_namespace``, ``dst_service``,
``dst_pod``…). They differ per endpoint, so they are rendered after each family's fixed
labels (:meth:`~gossamer_common.metrics.Family.labels_extra`), resolved once per
:class:`TargetLabels`.

The hot path never touches a family: a connection resolves its :class:`HttpTargetStats` /
:class:`TcpStats` once, and those cache the per-status children, so one request costs a few
integer increments, one bisect and two dict lookups keyed by small ints.

Bounded series. Labels that untrusted input chooses must not grow memory or scrapes without
limit (issue 16: 5,000 distinct ``Host`` values kept 14 MB and a 37 MB ``/metrics``):

- Idle series expire, as with Linkerd's ``LINKERD2_PROXY_METRICS_RETAIN_IDLE`` (default
  10 minutes): :meth:`ProxyMetrics.expire_idle` (time passed in) forgets cached stats that
  no connection holds any more, then drops every series unchanged for ``retain_idle``
  seconds and held by nobody (:meth:`gossamer_common.metrics.Registry.expire_idle`).
- The ``authority`` label (the request's ``Host``/``:authority``, which a client picks
  freely) takes at most ``max_authorities`` distinct values at a time (default 256,
  ``GOSSAMER_PROXY_METRICS_MAX_AUTHORITIES``). Beyond that, new authorities are counted
  under the single value :data:`OVERFLOW_AUTHORITY` (``_overflow``: never a real authority
  label, which always carries a port) until expiry frees room. So totals stay right and
  the number of series stays bounded by ``max_authorities + 1`` per target and status.
- ``grpc_status`` label values outside gRPC's codes (0-16) count as 2 (UNKNOWN), as the
  gRPC spec says of codes a client does not know.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gossamer_common.metrics import LATENCY_MS_BUCKETS, Counter, Gauge, Histogram, Registry

__all__ = [
    "OVERFLOW_AUTHORITY",
    "BoundedValues",
    "HttpTargetStats",
    "ProxyMetrics",
    "TargetLabels",
    "TcpStats",
    "dst_label_pairs",
    "tls_values",
]

#: ``(tls, no_tls_reason, client_id, server_id)`` for plaintext traffic without discovery
#: (outbound) and from a plain client (inbound); :func:`tls_values` builds the others.
OUTBOUND_NO_TLS = ("no_identity", "not_provided_by_service_discovery", "", "")
INBOUND_NO_TLS = ("no_identity", "no_tls_from_remote", "", "")
DEFAULT_SRV = ("", "default", "all-unauthenticated")

#: The ``authority`` label of requests beyond :attr:`ProxyMetrics.max_authorities`.
OVERFLOW_AUTHORITY = "_overflow"
_GRPC_UNKNOWN = 2

_HTTP_TARGET_LABELS = (
    "direction",
    "authority",
    "target_addr",
    "target_ip",
    "target_port",
    "tls",
    "no_tls_reason",
    "client_id",
    "server_id",
    "srv_group",
    "srv_kind",
    "srv_name",
    "srv_port",
)
_RESPONSE_LABELS = (*_HTTP_TARGET_LABELS, "status_code", "classification", "grpc_status", "error")
_LATENCY_LABELS = (*_HTTP_TARGET_LABELS, "status_code")
_TCP_LABELS = (
    "direction",
    "peer",
    "target_addr",
    "target_ip",
    "target_port",
    "tls",
    "no_tls_reason",
    "client_id",
    "server_id",
    "srv_group",
    "srv_kind",
    "srv_name",
    "srv_port",
)
_TCP_CLOSE_LABELS = (*_TCP_LABELS, "classification", "errno")


def tls_values(labels: dict[str, str]) -> tuple[str, str, str, str]:
    """:mod:`.mesh.tls_labels` output as the ``(tls, no_tls_reason, client_id, server_id)``
    values of the proxy's families (absent labels are empty, which Prometheus treats alike)."""
    return (
        labels.get("tls", ""),
        labels.get("no_tls_reason", ""),
        labels.get("client_id", ""),
        labels.get("server_id", ""),
    )


@dataclass(frozen=True, slots=True)
class TargetLabels:
    """The labels that identify where a connection or request is going, and how securely."""

    direction: str
    target_ip: str
    target_port: int
    inbound: bool
    #: ``(tls, no_tls_reason, client_id, server_id)``; empty means plaintext defaults.
    tls: tuple[str, ...] = ()
    #: ``(srv_group, srv_kind, srv_name)`` of the inbound policy (inbound only).
    srv: tuple[str, str, str] = DEFAULT_SRV
    #: The endpoint's Destination ``metric_labels`` (``EndpointPlan.dst_labels``: sorted
    #: ``(name, value)`` pairs, ``dst_``-prefixed; outbound only).
    dst: tuple[tuple[str, str], ...] = ()

    def dst_extra(self) -> tuple[tuple[str, str], ...]:
        """:attr:`dst` as ``dst_*`` label pairs (names made valid; empty values dropped)."""
        return dst_label_pairs(self.dst)

    def values(self, authority: str) -> tuple[str, ...]:
        ip = self.target_ip
        addr = f"[{ip}]:{self.target_port}" if ":" in ip else f"{ip}:{self.target_port}"
        tls = self.tls or (INBOUND_NO_TLS if self.inbound else OUTBOUND_NO_TLS)
        if self.inbound:
            srv: tuple[str, ...] = (*self.srv, str(self.target_port))
        else:
            srv = ("", "", "", "")
        return (self.direction, authority, addr, ip, str(self.target_port), *tls, *srv)


_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def dst_label_pairs(labels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Endpoint labels as ``dst_*`` label pairs, as Linkerd labels outbound traffic.

    ``EndpointPlan.dst_labels`` arrive prefixed already; a name without the prefix gets it.
    Characters a Prometheus label name cannot hold become ``_``, empty values are dropped
    and a name seen twice keeps its first value.
    """
    out: dict[str, str] = {}
    for name, value in labels:
        if value:
            clean = _INVALID_LABEL_CHARS.sub("_", name)
            out.setdefault(clean if clean.startswith("dst_") else "dst_" + clean, value)
    return tuple(sorted(out.items()))


def classify(status: int, grpc_status: int | None, error: bool) -> str:
    """Linkerd's response classification: 5xx, non-OK gRPC status or an error is a failure."""
    if error or status >= 500:
        return "failure"
    if grpc_status is not None and grpc_status != 0:
        return "failure"
    return "success"


class HttpTargetStats:
    """HTTP counters for one (direction, authority, target); held by connections."""

    __slots__ = (
        "_extra",
        "_last",
        "_last_key",
        "_metrics",
        "_responses",
        "_values",
        "requests",
    )

    def __init__(
        self,
        metrics: ProxyMetrics,
        values: tuple[str, ...],
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._metrics = metrics
        self._values = values
        self._extra = extra
        self.requests: Counter = metrics.request_total.labels_extra(values, extra)
        self._responses: dict[tuple[int, int | None, str], tuple[Counter, Histogram]] = {}
        self._last_key: tuple[int, int | None, str] | None = None
        self._last: tuple[Counter, Histogram] = (self.requests, Histogram(()))  # placeholder

    def _children(
        self, status: int, grpc_status: int | None, error: str
    ) -> tuple[Counter, Histogram]:
        key = (status, grpc_status, error)
        if key == self._last_key:  # nearly every response repeats the previous status
            return self._last
        if grpc_status is not None and not 0 <= grpc_status <= 16:
            grpc_status = _GRPC_UNKNOWN  # the peer chose it: keep the label set bounded
        # ``_last_key`` stays the key as received: it maps to the same (bounded) children.
        children = self._responses.get((status, grpc_status, error))
        if children is None:
            status_text = str(status) if status else ""
            grpc_text = "" if grpc_status is None else str(grpc_status)
            classification = classify(status, grpc_status, bool(error))
            counter = self._metrics.response_total.labels_extra(
                (*self._values, status_text, classification, grpc_text, error), self._extra
            )
            latency = self._metrics.response_latency_ms.labels_extra(
                (*self._values, status_text), self._extra
            )
            children = (counter, latency)
            self._responses[(status, grpc_status, error)] = children
        self._last_key = key
        self._last = children
        return children

    # Both check the last key inline: a repeated status (nearly every response) then costs
    # no call to :meth:`_children`.

    def observe_latency(self, status: int, latency_ms: float) -> None:
        key = (status, None, "")
        children = self._last if key == self._last_key else self._children(status, None, "")
        children[1].observe(latency_ms)

    def response(self, status: int, grpc_status: int | None = None, error: str = "") -> None:
        key = (status, grpc_status, error)
        if key == self._last_key:
            self._last[0].value += 1
        else:
            self._children(status, grpc_status, error)[0].value += 1


class TcpStats:
    """Transport counters for one (direction, peer, target)."""

    __slots__ = (
        "_close",
        "_extra",
        "_metrics",
        "_values",
        "open_connections",
        "opened",
        "read",
        "written",
    )

    def __init__(
        self,
        metrics: ProxyMetrics,
        values: tuple[str, ...],
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._metrics = metrics
        self._values = values
        self._extra = extra
        self.opened: Counter = metrics.tcp_open_total.labels_extra(values, extra)
        self.open_connections: Gauge = metrics.tcp_open_connections.labels_extra(values, extra)
        self.read: Counter = metrics.tcp_read_bytes_total.labels_extra(values, extra)
        self.written: Counter = metrics.tcp_write_bytes_total.labels_extra(values, extra)
        self._close: dict[int, Counter] = {}

    def open(self) -> None:
        self.opened.value += 1
        self.open_connections.value += 1

    def close(self, errno: int = 0) -> None:
        self.open_connections.value -= 1
        counter = self._close.get(errno)
        if counter is None:
            counter = self._metrics.tcp_close_total.labels_extra(
                (*self._values, "failure" if errno else "success", str(errno) if errno else ""),
                self._extra,
            )
            self._close[errno] = counter
        counter.value += 1


class BoundedValues:
    """Admits at most ``limit`` distinct label values; the rest become ``overflow`` (sans-io)."""

    def __init__(self, limit: int, overflow: str) -> None:
        if limit < 0:
            raise ValueError(f"limit must not be negative: {limit}")
        self.limit = limit
        self.overflow = overflow
        self._admitted: set[str] = set()

    def admit(self, value: str) -> str:
        """``value`` if it is (or may become) one of the admitted values, else ``overflow``."""
        admitted = self._admitted
        if value in admitted:
            return value
        if len(admitted) < self.limit:
            admitted.add(value)
            return value
        return self.overflow

    def retain(self, live: Iterable[str]) -> None:
        """Keep only the admitted values still in ``live`` (after series expired)."""
        self._admitted.intersection_update(live)

    def __len__(self) -> int:
        return len(self._admitted)


def _refcount_in_cache(cache: Mapping[Any, object], key: object) -> int:
    return sys.getrefcount(cache[key])


# References while _refcount_in_cache runs when only the cache holds the value.
_CACHE_ONLY_REFS = _refcount_in_cache({("k",): object()}, ("k",))


class ProxyMetrics:
    """All proxy families in one registry, plus caches of per-target stats."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        retain_idle: float = 600.0,
        max_authorities: int = 256,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        self.retain_idle = retain_idle
        self.authorities = BoundedValues(max_authorities, OVERFLOW_AUTHORITY)
        r = self.registry
        self.request_total = r.counter_family(
            "request_total", "Total count of HTTP requests.", _HTTP_TARGET_LABELS
        )
        self.response_total = r.counter_family(
            "response_total", "Total count of HTTP responses.", _RESPONSE_LABELS
        )
        self.response_latency_ms = r.histogram_family(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response "
            "stream completing",
            _LATENCY_LABELS,
            LATENCY_MS_BUCKETS,
        )
        self.tcp_open_total = r.counter_family(
            "tcp_open_total", "Total count of opened connections", _TCP_LABELS
        )
        self.tcp_open_connections = r.gauge_family(
            "tcp_open_connections", "Number of currently-open connections", _TCP_LABELS
        )
        self.tcp_read_bytes_total = r.counter_family(
            "tcp_read_bytes_total", "Total count of bytes read from peers", _TCP_LABELS
        )
        self.tcp_write_bytes_total = r.counter_family(
            "tcp_write_bytes_total", "Total count of bytes written to peers", _TCP_LABELS
        )
        self.tcp_close_total = r.counter_family(
            "tcp_close_total", "Total count of closed connections", _TCP_CLOSE_LABELS
        )
        self._http: dict[tuple[TargetLabels, str], HttpTargetStats] = {}
        self._tcp: dict[tuple[TargetLabels, str], TcpStats] = {}

    def http(self, target: TargetLabels, authority: str) -> HttpTargetStats:
        key = (target, authority if not target.inbound else "")
        stats = self._http.get(key)
        if stats is None:
            # Overflowing authorities share one cache entry, not one each.
            label = self.authorities.admit(key[1]) if key[1] else ""
            label_key = (target, label)
            stats = self._http.get(label_key)
            if stats is None:
                stats = HttpTargetStats(self, target.values(label), target.dst_extra())
                self._http[label_key] = stats
        return stats

    def expire_idle(self, now: float) -> int:
        """Drop series idle for :attr:`retain_idle` seconds that no connection holds.

        Returns how many series went. Call it periodically (the proxy's housekeeping does);
        the first call only starts the idle clocks.
        """
        for cache in (self._http, self._tcp):
            for key in list(cache):
                if _refcount_in_cache(cache, key) <= _CACHE_ONLY_REFS:
                    del cache[key]
        expired = self.registry.expire_idle(now, self.retain_idle)
        if expired:
            live = {
                values[1]
                for family in (self.request_total, self.response_total, self.response_latency_ms)
                for values, _ in family.children()
            }
            self.authorities.retain(live)
        return expired

    def tcp(self, target: TargetLabels, peer: str) -> TcpStats:
        """``peer`` is ``src`` for accepted connections and ``dst`` for opened ones."""
        key = (target, peer)
        stats = self._tcp.get(key)
        if stats is None:
            values = target.values("")
            stats = TcpStats(self, (values[0], peer, *values[2:]), target.dst_extra())
            self._tcp[key] = stats
        return stats
