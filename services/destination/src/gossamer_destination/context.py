"""The caller context proxies send: ``GetDestination.context_token`` and policy workloads."""

from __future__ import annotations

import json
from dataclasses import dataclass


class InvalidWorkloadError(ValueError):
    """A ``PortSpec.workload`` / ``TrafficSpec.source_workload`` that does not parse."""


@dataclass(frozen=True, slots=True)
class CallerContext:
    namespace: str | None = None
    node: str | None = None
    pod: str | None = None


def parse_context_token(token: str) -> CallerContext:
    """JSON ``{"ns":..., "nodeName":..., "pod":...}`` or legacy ``ns:<ns>``; junk is ignored,
    as in Linkerd, because the token only refines answers."""
    text = token.strip()
    if not text:
        return CallerContext()
    if text.startswith("ns:"):
        return CallerContext(namespace=text[3:] or None)
    try:
        doc = json.loads(text)
    except ValueError:
        return CallerContext()
    if not isinstance(doc, dict):
        return CallerContext()

    def field(name: str) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) and value else None

    return CallerContext(field("ns"), field("nodeName"), field("pod"))


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    pod: str | None = None
    external_workload: str | None = None


def parse_workload(text: str) -> Workload:
    """``{"ns": ..., "pod": ...}`` (or ``external_workload``), or the legacy ``ns:pod``."""
    value = text.strip()
    if value.startswith("{"):
        try:
            doc = json.loads(value)
        except ValueError as exc:
            raise InvalidWorkloadError(f"workload is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("ns"), str) or not doc["ns"]:
            raise InvalidWorkloadError('workload JSON needs a non-empty "ns"')
        pod, ext = doc.get("pod"), doc.get("external_workload")
        if isinstance(pod, str) and pod:
            return Workload(doc["ns"], pod=pod)
        if isinstance(ext, str) and ext:
            return Workload(doc["ns"], external_workload=ext)
        raise InvalidWorkloadError('workload JSON needs "pod" or "external_workload"')
    ns, sep, pod = value.partition(":")
    if not sep or not ns or not pod:
        raise InvalidWorkloadError(f"invalid workload {text!r}")
    return Workload(ns, pod=pod)
