"""Resource kinds ``gossamer viz`` understands, and how each maps to Prometheus labels (pure).

Workload kinds are labels the viz scrape job puts on every proxy series (``deployment``,
``pod``, ``namespace``, ...); outbound series name the destination with the same labels
prefixed ``dst_``. A Service and an authority exist only on the client side of a request, so
they are always read from outbound series.
"""

from __future__ import annotations

from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Kind:
    name: str  # as the API and Linkerd's output spell it
    label: str  # the Prometheus label
    aliases: tuple[str, ...]
    #: Known only from the client side (outbound ``dst_*``/``authority`` labels).
    outbound_only: bool = False


KINDS = (
    Kind("namespace", "namespace", ("ns", "namespace", "namespaces")),
    Kind("deployment", "deployment", ("deploy", "deployment", "deployments")),
    Kind("pod", "pod", ("po", "pod", "pods")),
    Kind("statefulset", "statefulset", ("sts", "statefulset", "statefulsets")),
    Kind("daemonset", "daemonset", ("ds", "daemonset", "daemonsets")),
    Kind("service", "service", ("svc", "service", "services"), outbound_only=True),
    Kind("authority", "authority", ("au", "authority", "authorities"), outbound_only=True),
)
_BY_ALIAS = {alias: kind for kind in KINDS for alias in kind.aliases}


@dataclass(frozen=True)
class Resource:
    kind: Kind
    name: str  # "" for every resource of the kind


def parse_resource(text: str) -> Resource:
    """``deploy``, ``deploy/web`` or ``deploy web``-style first half; unknown kinds refused."""
    kind_text, _, name = text.partition("/")
    kind = _BY_ALIAS.get(kind_text.lower())
    if kind is None:
        known = ", ".join(k.aliases[0] for k in KINDS)
        raise click.BadParameter(f"unknown resource type {kind_text!r} (one of: {known})")
    return Resource(kind, name)


def resource_argument(args: tuple[str, ...]) -> Resource:
    """``RESOURCE`` as ``kind``, ``kind/name`` or ``kind name`` (as kubectl and Linkerd)."""
    if len(args) == 1:
        return parse_resource(args[0])
    if len(args) == 2 and "/" not in args[0]:
        resource = parse_resource(args[0])
        return Resource(resource.kind, args[1])
    raise click.BadParameter("give one resource: TYPE, TYPE/NAME or TYPE NAME")
