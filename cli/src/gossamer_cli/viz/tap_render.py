"""``gossamer viz tap`` output (pure): Linkerd's ``req``/``rsp``/``end`` lines, or JSON.

Each event is one line (``FLOW`` is ``proxy=in  src=10.0.0.5:41000 dst=10.0.0.9:8080
tls=true``)::

    req id=3:1 FLOW :method=GET :authority=web:8080 :path=/
    rsp id=3:1 FLOW :status=200 latency=1234µs
    end id=3:1 FLOW duration=56µs response-length=5B

``end`` carries ``grpc-status=<Code>`` or ``reset-error=<code>`` when the stream ended that
way. ``-o wide`` adds the source and destination resources (``src_res=deploy/vote``
``src_ns=demo`` ``dst_res=...`` ``dst_ns=...``) where the pod behind an address is known;
``-o json`` prints one JSON object per event with the proto's field names.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from gossamer_api.addresses import AddressError, tcp_address_from_proto
from gossamer_api.proxy import http_types_pb2, net_pb2, tap_pb2

__all__ = [
    "GRPC_CODES",
    "PodInfo",
    "address",
    "pods_by_address",
    "render_json",
    "render_line",
    "resource_of",
]

TapEvent = tap_pb2.TapEvent

GRPC_CODES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip
_METHODS = {value: name for name, value in http_types_pb2.HttpMethod.Registered.items()}


@dataclass(frozen=True)
class PodInfo:
    """Who is behind an address: its namespace, pod and owning resource (``deploy/web``)."""

    namespace: str
    pod: str
    resource: str


def resource_of(pod: Mapping[str, Any]) -> str:
    """The resource a pod belongs to, as ``-o wide`` names it (``deploy/web``, else ``pod/x``)."""
    from gossamer_cli.viz.meshed import owner

    for kind, short in (("deployment", "deploy"), ("statefulset", "sts"), ("daemonset", "ds")):
        found = owner(pod, kind)
        if found:
            return f"{short}/{found}"
    return f"pod/{pod['metadata']['name']}"


def pods_by_address(pods: Iterable[Mapping[str, Any]]) -> dict[str, PodInfo]:
    """Who is behind each pod IP, from a pod list (pods without an IP or a name are left out)."""
    names: dict[str, PodInfo] = {}
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        meta = pod.get("metadata") or {}
        if ip and meta.get("name"):
            names[ip] = PodInfo(meta.get("namespace", ""), meta["name"], resource_of(pod))
    return names


def address(addr: net_pb2.TcpAddress) -> str:
    """``ip:port`` (``[v6]:port``); ``-`` when the event has no address."""
    if not addr.HasField("ip"):
        return "-"
    try:
        ip, port = tcp_address_from_proto(addr)
    except AddressError:
        return "-"
    return f"[{ip}]:{port}" if isinstance(ip, ipaddress.IPv6Address) else f"{ip}:{port}"


def _ip(addr: net_pb2.TcpAddress) -> str:
    text = address(addr)
    return text.rsplit(":", 1)[0].strip("[]")


def method_text(method: http_types_pb2.HttpMethod) -> str:
    if method.WhichOneof("type") == "unregistered":
        return method.unregistered
    return _METHODS.get(method.registered, "")


def _micros(duration: object) -> int:
    seconds = getattr(duration, "seconds", 0)
    nanos = getattr(duration, "nanos", 0)
    return int(seconds) * 1_000_000 + int(nanos) // 1000


def grpc_code_name(code: int) -> str:
    return GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else f"Code({code})"


def _flow(event: TapEvent) -> str:
    if event.proxy_direction == TapEvent.INBOUND:
        proxy, tls = "in ", event.source_meta.labels.get("tls", "")
    elif event.proxy_direction == TapEvent.OUTBOUND:
        proxy, tls = "out", event.destination_meta.labels.get("tls", "")
    else:
        proxy, tls = "???", ""
    return f"proxy={proxy} src={address(event.source)} dst={address(event.destination)} tls={tls}"


def _wide(event: TapEvent, pods: Mapping[str, PodInfo]) -> str:
    parts = []
    for side, addr in (("src", event.source), ("dst", event.destination)):
        info = pods.get(_ip(addr))
        if info is not None:
            parts += [f"{side}_res={info.resource}", f"{side}_ns={info.namespace}"]
    return (" " + " ".join(parts)) if parts else ""


def render_line(
    event: TapEvent, *, wide: bool = False, pods: Mapping[str, PodInfo] | None = None
) -> str | None:
    """The event's line (``None`` for an event that is not HTTP)."""
    http = event.http
    kind = http.WhichOneof("event")
    flow = _flow(event)
    extra = _wide(event, pods or {}) if wide else ""
    if kind == "request_init":
        init = http.request_init
        return (
            f"req id={init.id.base}:{init.id.stream} {flow} :method={method_text(init.method)} "
            f":authority={init.authority} :path={init.path}{extra}"
        )
    if kind == "response_init":
        rsp = http.response_init
        return (
            f"rsp id={rsp.id.base}:{rsp.id.stream} {flow} :status={rsp.http_status} "
            f"latency={_micros(rsp.since_request_init)}µs{extra}"
        )
    if kind == "response_end":
        end = http.response_end
        eos = ""
        which = end.eos.WhichOneof("end") if end.HasField("eos") else None
        if which == "grpc_status_code":
            eos = f" grpc-status={grpc_code_name(end.eos.grpc_status_code)}"
        elif which == "reset_error_code":
            eos = f" reset-error={end.eos.reset_error_code}"
        return (
            f"end id={end.id.base}:{end.id.stream} {flow}{eos} "
            f"duration={_micros(end.since_response_init)}µs "
            f"response-length={end.response_bytes}B{extra}"
        )
    return None


def render_json(event: TapEvent, *, pods: Mapping[str, PodInfo] | None = None) -> str:
    """One event as a JSON object (proto field names; addresses as text; resources if known)."""
    body = MessageToDict(event, preserving_proto_field_name=True)
    body["source"] = address(event.source)
    body["destination"] = address(event.destination)
    for side, addr in (("source", event.source), ("destination", event.destination)):
        info = (pods or {}).get(_ip(addr))
        if info is not None:
            body[f"{side}_resource"] = {
                "namespace": info.namespace,
                "pod": info.pod,
                "resource": info.resource,
            }
    return json.dumps(body, sort_keys=True, ensure_ascii=False)
