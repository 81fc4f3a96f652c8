"""``gossamer viz top`` (pure): tap events folded into Linkerd's top table.

Rows are keyed by (source, destination, method, path); a request counts once it ends.
Best, Worst and Last are its response latencies (request to response head), and a request
succeeds unless its status is 5xx, its gRPC status is not OK or it was reset, as in
``linkerd viz top``. Sources and destinations are pod names where the address belongs to a
known pod, else the IP. Requests still waiting for their end are kept up to
:data:`MAX_PENDING` (oldest dropped), so a lossy stream cannot grow the table's memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gossamer_api.proxy import tap_pb2

from gossamer_cli.viz.tap_render import PodInfo, address, method_text

__all__ = ["HEADER", "TopTable", "format_latency"]

TapEvent = tap_pb2.TapEvent
MAX_PENDING: Final = 10_000
MAX_ROWS: Final = 1_000
HEADER = ("Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last",
          "Success Rate")  # fmt: skip


@dataclass
class _Pending:
    key: tuple[str, str, str, str]
    latency_us: int | None = None
    failed: bool = False


@dataclass
class Row:
    source: str
    destination: str
    method: str
    path: str
    count: int = 0
    successes: int = 0
    best_us: int | None = None
    worst_us: int | None = None
    last_us: int | None = None

    @property
    def success_rate(self) -> float:
        return self.successes / self.count if self.count else 0.0


def format_latency(micros: int | None) -> str:
    if micros is None:
        return "-"
    if micros < 1000:
        return f"{micros}µs"
    if micros < 1_000_000:
        return f"{micros // 1000}ms"
    return f"{micros / 1_000_000:.1f}s"


def _micros(duration: object) -> int:
    return (
        int(getattr(duration, "seconds", 0)) * 1_000_000
        + int(getattr(duration, "nanos", 0)) // 1000
    )


@dataclass
class TopTable:
    pods: Mapping[str, PodInfo] = field(default_factory=dict)
    rows: dict[tuple[str, str, str, str], Row] = field(default_factory=dict)
    _pending: OrderedDict[tuple[str, int, int, int], _Pending] = field(default_factory=OrderedDict)

    def _name(self, addr: str) -> str:
        ip = addr.rsplit(":", 1)[0].strip("[]")
        info = self.pods.get(ip)
        return info.pod if info is not None else ip

    def add(self, event: TapEvent, proxy: str = "") -> None:
        """Fold in one event from the proxy named ``proxy`` (stream ids are per proxy)."""
        http = event.http
        kind = http.WhichOneof("event")
        if kind == "request_init":
            init = http.request_init
            key = (
                self._name(address(event.source)),
                self._name(address(event.destination)),
                method_text(init.method),
                init.path,
            )
            ident = (proxy, event.proxy_direction, init.id.base, init.id.stream)
            self._pending[ident] = _Pending(key)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        elif kind == "response_init":
            rsp = http.response_init
            found = self._pending.get((proxy, event.proxy_direction, rsp.id.base, rsp.id.stream))
            if found is not None:
                found.latency_us = _micros(rsp.since_request_init)
                found.failed = rsp.http_status >= 500
        elif kind == "response_end":
            end = http.response_end
            ident = (proxy, event.proxy_direction, end.id.base, end.id.stream)
            found = self._pending.pop(ident, None)
            if found is None:
                return
            eos = end.eos.WhichOneof("end") if end.HasField("eos") else None
            if eos == "reset_error_code" or (
                eos == "grpc_status_code" and end.eos.grpc_status_code
            ):
                found.failed = True
            self._count(found)

    def _count(self, done: _Pending) -> None:
        row = self.rows.get(done.key)
        if row is None:
            if len(self.rows) >= MAX_ROWS:
                return
            row = self.rows[done.key] = Row(*done.key)
        row.count += 1
        row.successes += not done.failed
        latency = done.latency_us
        if latency is not None:
            row.last_us = latency
            row.best_us = latency if row.best_us is None else min(row.best_us, latency)
            row.worst_us = latency if row.worst_us is None else max(row.worst_us, latency)

    def render(self) -> str:
        rows = sorted(self.rows.values(), key=lambda r: (-r.count, r.source, r.path))
        cells = [list(HEADER)] + [
            [
                r.source,
                r.destination,
                r.method,
                r.path,
                str(r.count),
                format_latency(r.best_us),
                format_latency(r.worst_us),
                format_latency(r.last_us),
                f"{r.success_rate * 100:.2f}%",
            ]
            for r in rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
        lines = []
        for row in cells:
            left = [row[i].ljust(widths[i]) for i in range(4)]
            right = [row[i].rjust(widths[i]) for i in range(4, len(HEADER))]
            lines.append("  ".join(left + right).rstrip())
        return "\n".join(lines)
