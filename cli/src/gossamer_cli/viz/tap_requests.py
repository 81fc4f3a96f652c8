"""Tap events folded into one row per request (pure): the dashboard's live tap table.

A request's ``request_init`` opens its row (method, authority, path), ``response_init`` adds
the status and latency (request to response head), ``response_end`` the duration, the
gRPC status or reset, and the response size. Stream ids are per proxy and direction, so a
row is keyed by (proxy, direction, id). At most :data:`MAX_ROWS` rows are kept, the oldest
dropped first, so a long tap cannot grow the page.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gossamer_api.proxy import tap_pb2

from gossamer_cli.viz.tap_render import PodInfo, address, grpc_code_name, method_text
from gossamer_cli.viz.top import format_latency

__all__ = ["MAX_ROWS", "TapRequest", "TapRequests"]

TapEvent = tap_pb2.TapEvent
MAX_ROWS: Final = 500


def _micros(duration: object) -> int:
    return (
        int(getattr(duration, "seconds", 0)) * 1_000_000
        + int(getattr(duration, "nanos", 0)) // 1000
    )


@dataclass
class TapRequest:
    proxy: str
    direction: str  # "in" or "out"
    source: str
    destination: str
    method: str
    authority: str
    path: str
    tls: str
    status: int | None = None
    latency_us: int | None = None
    duration_us: int | None = None
    end: str = ""
    done: bool = False

    @property
    def latency(self) -> str:
        return format_latency(self.latency_us)

    @property
    def status_text(self) -> str:
        return "-" if self.status is None else str(self.status)

    @property
    def failed(self) -> bool:
        return (self.status is not None and self.status >= 500) or bool(
            self.end and self.end != "grpc-status=OK"
        )


@dataclass
class TapRequests:
    pods: Mapping[str, PodInfo] = field(default_factory=dict)
    rows: OrderedDict[tuple[str, int, int, int], TapRequest] = field(default_factory=OrderedDict)

    def _name(self, addr: str) -> str:
        ip = addr.rsplit(":", 1)[0].strip("[]")
        info = self.pods.get(ip)
        return info.pod if info is not None else addr

    def add(self, proxy: str, event: TapEvent) -> None:
        http = event.http
        kind = http.WhichOneof("event")
        inbound = event.proxy_direction == TapEvent.INBOUND
        if kind == "request_init":
            init = http.request_init
            key = (proxy, event.proxy_direction, init.id.base, init.id.stream)
            meta = event.source_meta if inbound else event.destination_meta
            self.rows[key] = TapRequest(
                proxy=proxy,
                direction="in" if inbound else "out",
                source=self._name(address(event.source)),
                destination=self._name(address(event.destination)),
                method=method_text(init.method),
                authority=init.authority,
                path=init.path,
                tls=meta.labels.get("tls", ""),
            )
            while len(self.rows) > MAX_ROWS:
                self.rows.popitem(last=False)
        elif kind == "response_init":
            rsp = http.response_init
            row = self.rows.get((proxy, event.proxy_direction, rsp.id.base, rsp.id.stream))
            if row is not None:
                row.status = rsp.http_status
                row.latency_us = _micros(rsp.since_request_init)
        elif kind == "response_end":
            end = http.response_end
            row = self.rows.get((proxy, event.proxy_direction, end.id.base, end.id.stream))
            if row is not None:
                row.done = True
                row.duration_us = _micros(end.since_response_init)
                which = end.eos.WhichOneof("end") if end.HasField("eos") else None
                if which == "grpc_status_code":
                    row.end = f"grpc-status={grpc_code_name(end.eos.grpc_status_code)}"
                elif which == "reset_error_code":
                    row.end = f"reset={end.eos.reset_error_code}"

    def latest(self) -> list[TapRequest]:
        """Newest first."""
        return list(reversed(self.rows.values()))
