"""The tap service's HTTP API (pure): paths, the query body and the event stream's lines.

``POST /apis/tap.linkerd.io/v1alpha1/watch/namespaces/<ns>/tap`` taps a whole namespace and
``.../namespaces/<ns>/<kind>s/<name>/tap`` one resource (the resource paths of Linkerd's
aggregated tap API). The body is a JSON object, every field optional::

    {"maxRps": 100, "seconds": 30, "maxEvents": 10000, "headers": false,
     "match": {"to": "deploy/slow", "toNamespace": "demo", "method": "GET",
               "path": "/api", "authority": "web:8080"}}

The answer is ``application/x-ndjson``, one JSON object a line: ``{"source": "<ns>/<pod>",
"event": <TapEvent as proto JSON>}`` for each event, and last ``{"end": "<why>", "errors":
[["<ns>/<pod>", "<error>"], ...]}``. A stream without that last line was cut short.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from gossamer_api.proxy import tap_pb2

from gossamer_cli.viz.resources import KINDS, Kind, Resource
from gossamer_cli.viz.tap_query import TapFilters
from gossamer_cli.viz.web.guard import BadNameError, namespace_name, resource_name

__all__ = [
    "API_PREFIX",
    "ApiError",
    "TapPath",
    "TapQuery",
    "decode_line",
    "encode_end",
    "encode_event",
    "parse_path",
    "parse_query",
    "tap_path",
]

GROUP: Final = "tap.linkerd.io"
VERSION: Final = "v1alpha1"
API_PREFIX: Final = f"/apis/{GROUP}/{VERSION}/watch/namespaces/"
MAX_BODY: Final = 16 * 1024
#: Bounds of one call; a caller that wants more calls again.
MAX_SECONDS: Final = 600.0
DEFAULT_SECONDS: Final = 30.0
MAX_EVENTS: Final = 100_000
DEFAULT_EVENTS: Final = 10_000
DEFAULT_MAX_RPS: Final = 100.0
MAX_RPS: Final = 10_000.0
#: Resource kinds that can be tapped, by the plural of their path segment.
TAPPABLE: Final = {
    f"{k.name}s": k
    for k in KINDS
    if k.name in ("deployment", "pod", "statefulset", "daemonset", "service")
}
_KIND = {k.name: k for k in KINDS}


class ApiError(Exception):
    """A request the API refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TapPath:
    namespace: str
    #: ``namespaces``, ``deployments``, ``pods``, ``services``, ... (the SAR's resource).
    plural: str
    name: str

    @property
    def resource(self) -> Resource:
        if self.plural == "namespaces":
            return Resource(_KIND["namespace"], self.namespace)
        return Resource(TAPPABLE[self.plural], self.name)


def tap_path(namespace: str, kind: Kind, name: str) -> str:
    """The API path for tapping ``kind/name`` in ``namespace`` (a namespace: its own name)."""
    if kind.name == "namespace":
        return f"{API_PREFIX}{namespace_name(name or namespace)}/tap"
    plural = f"{kind.name}s"
    if plural not in TAPPABLE:
        raise ValueError(f"cannot tap a {kind.name}")
    if not name:
        raise ValueError(f"tap a {kind.name} by name (or the whole namespace: ns/{namespace})")
    return f"{API_PREFIX}{namespace_name(namespace)}/{plural}/{resource_name(name)}/tap"


def parse_path(path: str) -> TapPath:
    if not path.startswith(API_PREFIX):
        raise ApiError(404, "not found")
    parts = path.removeprefix(API_PREFIX).split("/")
    try:
        if len(parts) == 2 and parts[1] == "tap":
            return TapPath(namespace_name(parts[0]), "namespaces", parts[0])
        if len(parts) == 4 and parts[3] == "tap":
            if parts[1] not in TAPPABLE:
                raise ApiError(404, f"cannot tap {parts[1]!r} (one of: {', '.join(TAPPABLE)})")
            return TapPath(namespace_name(parts[0]), parts[1], resource_name(parts[2]))
    except BadNameError as exc:
        raise ApiError(400, str(exc)) from exc
    raise ApiError(404, "not found")


@dataclass(frozen=True)
class TapQuery:
    filters: TapFilters = field(default_factory=TapFilters)
    max_rps: float = DEFAULT_MAX_RPS
    seconds: float = DEFAULT_SECONDS
    max_events: int = DEFAULT_EVENTS
    headers: bool = False

    def body(self) -> bytes:
        """The JSON body that asks for this query (what :func:`parse_query` reads)."""
        match: dict[str, str] = {}
        f = self.filters
        if f.to is not None:
            match["to"] = f"{f.to.kind.name}/{f.to.name}" if f.to.name else f.to.kind.name
            match["toNamespace"] = f.to_namespace
        for key, value in (("method", f.method), ("path", f.path), ("authority", f.authority)):
            if value is not None:
                match[key] = value
        doc = {
            "maxRps": self.max_rps,
            "seconds": self.seconds,
            "maxEvents": self.max_events,
            "headers": self.headers,
            "match": match,
        }
        return json.dumps(doc).encode()


def _number(doc: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{key} must be a number")
    if not low <= value <= high:
        raise ApiError(400, f"{key} must be between {low:g} and {high:g}")
    return float(value)


def _text(doc: Mapping[str, Any], key: str, limit: int = 1024) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ApiError(400, f"match.{key} must be a non-empty string of at most {limit} chars")
    return value


def parse_query(body: bytes, *, namespace: str) -> TapQuery:
    """The query of a request body (empty: the defaults); anything malformed is a 400."""
    if len(body) > MAX_BODY:
        raise ApiError(413, f"the query is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the query is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ApiError(400, "the query must be a JSON object")
    unknown = set(doc) - {"maxRps", "seconds", "maxEvents", "headers", "match"}
    if unknown:
        raise ApiError(400, f"unknown query fields: {', '.join(sorted(unknown))}")
    headers = doc.get("headers", False)
    if not isinstance(headers, bool):
        raise ApiError(400, "headers must be true or false")
    match = doc.get("match") or {}
    if not isinstance(match, dict):
        raise ApiError(400, "match must be a JSON object")
    unknown = set(match) - {"to", "toNamespace", "method", "path", "authority"}
    if unknown:
        raise ApiError(400, f"unknown match fields: {', '.join(sorted(unknown))}")
    to = None
    if (to_text := _text(match, "to")) is not None:
        kind_text, _, to_name = to_text.partition("/")
        kind = _KIND.get(kind_text)
        if kind is None:
            raise ApiError(400, f"match.to: unknown resource type {kind_text!r}")
        if to_name:
            try:
                resource_name(to_name)
            except BadNameError as exc:
                raise ApiError(400, f"match.to: {exc}") from exc
        to = Resource(kind, to_name)
    to_namespace = _text(match, "toNamespace") or namespace
    try:
        namespace_name(to_namespace)
    except BadNameError as exc:
        raise ApiError(400, f"match.toNamespace: {exc}") from exc
    path = _text(match, "path")
    if path is not None and not path.startswith("/"):
        raise ApiError(400, "match.path must start with /")
    filters = TapFilters(
        to=to,
        to_namespace=to_namespace,
        method=_text(match, "method", 64),
        path=path,
        authority=_text(match, "authority", 255),
    )
    return TapQuery(
        filters=filters,
        max_rps=_number(doc, "maxRps", DEFAULT_MAX_RPS, 0, MAX_RPS),
        seconds=_number(doc, "seconds", DEFAULT_SECONDS, 0.1, MAX_SECONDS),
        max_events=int(_number(doc, "maxEvents", DEFAULT_EVENTS, 1, MAX_EVENTS)),
        headers=headers,
    )


def encode_event(source: str, event: tap_pb2.TapEvent) -> bytes:
    doc = {"source": source, "event": MessageToDict(event)}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def encode_end(reason: str, errors: list[tuple[str, str]]) -> bytes:
    doc = {"end": reason, "errors": [list(e) for e in errors]}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class StreamEnd:
    reason: str
    errors: list[tuple[str, str]]


def decode_line(line: bytes) -> tuple[str, tap_pb2.TapEvent] | StreamEnd:
    """One line of the stream: ``(source, event)``, or the end; ValueError when malformed."""
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ValueError("a stream line is not a JSON object")
    if "end" in doc:
        errors = doc.get("errors") or []
        if not isinstance(errors, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(p, str) for p in e)
            for e in errors
        ):
            raise ValueError("malformed errors in the stream's end")
        return StreamEnd(str(doc["end"]), [(e[0], e[1]) for e in errors])
    source, body = doc.get("source"), doc.get("event")
    if not isinstance(source, str) or not isinstance(body, dict):
        raise ValueError("a stream line has no source and event")
    try:
        event = ParseDict(body, tap_pb2.TapEvent(), ignore_unknown_fields=True)
    except ParseError as exc:
        raise ValueError(f"malformed event: {exc}") from exc
    return source, event
