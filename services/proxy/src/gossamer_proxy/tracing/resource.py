"""The resource every span is reported under: which proxy, in which pod.

As linkerd2-proxy does, ``service.name`` comes from ``LINKERD2_PROXY_TRACE_SERVICE_NAME``
(default ``gossamer-proxy``, where Linkerd's is ``linkerd-proxy``), then the pod's labels
from the downward-API file ``LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH`` (``key="value"`` lines),
then ``LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES`` (the same line format) and the standard
``OTEL_RESOURCE_ATTRIBUTES`` (comma-separated ``key=value``); later sources win. The proxy
adds ``process.pid``, ``process.start_timestamp`` and ``host.name``.

The labels file is read once at start-up and bounded: at most :data:`MAX_FILE_BYTES` bytes
and :data:`MAX_ATTRIBUTES` attributes are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "MAX_ATTRIBUTES",
    "MAX_FILE_BYTES",
    "parse_attribute_lines",
    "parse_otel_resource_attributes",
    "resource_attributes",
]

DEFAULT_SERVICE_NAME = "gossamer-proxy"
MAX_FILE_BYTES = 64 * 1024
MAX_ATTRIBUTES = 128


def parse_attribute_lines(text: str) -> dict[str, str]:
    """``key=value`` per line (the downward API quotes values); lines without ``=`` skipped."""
    attributes: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        key = key.strip()
        if eq and key:
            attributes[key] = value.strip().strip('"')
    return attributes


def parse_otel_resource_attributes(text: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES``: comma-separated ``key=value`` with %-escapes."""
    from urllib.parse import unquote

    attributes: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if eq and key:
            attributes[unquote(key)] = unquote(value.strip())
    return attributes


def _read_labels(path: str) -> dict[str, str]:
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_FILE_BYTES)
    except OSError:
        return {}  # the pod may have no labels volume; spans still go out
    return parse_attribute_lines(raw.decode("utf-8", errors="replace"))


def resource_attributes(
    *,
    service_name: str | None,
    labels_path: str | None,
    extra: str | None,
    environ: Mapping[str, str],
    pid: int,
    start_timestamp: int,
    hostname: str,
) -> list[tuple[str, str | int]]:
    """The resource's attributes in a stable order (``service.name`` first)."""
    merged: dict[str, str] = {"service.name": service_name or DEFAULT_SERVICE_NAME}
    if labels_path:
        merged.update(_read_labels(labels_path))
    if extra:
        merged.update(parse_attribute_lines(extra))
    otel = environ.get("OTEL_RESOURCE_ATTRIBUTES")
    if otel:
        merged.update(parse_otel_resource_attributes(otel))
    out: list[tuple[str, str | int]] = [
        ("process.pid", pid),
        ("process.start_timestamp", start_timestamp),
        ("host.name", _utf8(hostname)),
    ]
    fixed = {k for k, _ in out}
    items = [(_utf8(k), _utf8(v)) for k, v in merged.items() if k not in fixed]
    return [*items[:MAX_ATTRIBUTES], *out]


def _utf8(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (an environment's undecodable bytes) replaced:
    protobuf would refuse the whole export otherwise."""
    return text.encode("utf-8", "replace").decode("utf-8")
