"""Gateway API TLSRoute and TCPRoute as outbound ``TlsRoute``/``OpaqueRoute`` messages (pure).

Both kinds carry connections the proxy does not parse as HTTP (linkerd-wire.md §1.8):

* a TLSRoute's ``hostnames`` become ``snis``: ``api.example.com`` an ``exact`` match,
  ``*.example.com`` a ``suffix`` match (reverse labels ``["com", "example"]``), matched by
  the proxy against the ClientHello's SNI (the TLS itself is passed through untouched);
* neither kind has matches, so every rule's ``backendRefs`` go into one weighted
  ``random_available`` distribution, as Linkerd's controller flattens them;
* a backendRef is resolved by the caller (``resolve``): a Service of the cluster (a balancer
  at the ref's ``port``) or, for an EgressNetwork parent, the EgressNetwork itself (the
  original destination). A Service that does not exist stays in the split as a backend
  with an ``Invalid`` filter, so its share of connections is refused and the weights keep
  their meaning (Linkerd's form). A ref the mesh cannot use at all (another kind, no port, a
  bad weight or hostname) makes the whole route invalid (:class:`InvalidRouteError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gossamer_api.proxy import meta_pb2, opaque_route_pb2, outbound_pb2, tls_route_pb2

from gossamer_destination.endpoints import meta
from gossamer_destination.httproutes import GATEWAY_GROUP, InvalidRouteError

__all__ = [
    "ResolvedRef",
    "opaque_route",
    "sni_match",
    "tls_route",
]

#: What ``resolve`` answers for one backendRef: the backend, or (metadata, message) for a
#: ref that names a Service that does not exist (refused with an ``Invalid`` filter).
ResolvedRef = outbound_pb2.Backend | tuple[meta_pb2.Metadata, str]
Resolve = Callable[[Mapping[str, Any], str], ResolvedRef]

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAX_WEIGHT = 1_000_000


def sni_match(hostname: str) -> tls_route_pb2.SniMatch:
    """A Gateway API hostname as an SNI match; only a leading ``*.`` label is a wildcard."""
    name = hostname.strip().lower().rstrip(".")
    wildcard = name.startswith("*.")
    labels = (name[2:] if wildcard else name).split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidRouteError(f"hostname {hostname[:80]!r} is not a DNS name or *.wildcard")
    if wildcard:
        return tls_route_pb2.SniMatch(
            suffix=tls_route_pb2.SniMatch.Suffix(reverse_labels=list(reversed(labels)))
        )
    return tls_route_pb2.SniMatch(exact=".".join(labels))


def _metadata(route: Mapping[str, Any], kind: str) -> meta_pb2.Metadata:
    m = meta(route)
    return meta_pb2.Metadata(
        resource=meta_pb2.Resource(
            group=GATEWAY_GROUP,
            kind=kind,
            name=str(m.get("name") or ""),
            namespace=str(m.get("namespace") or ""),
        )
    )


def _fill_rule(rule: Any, route: Mapping[str, Any], resolve: Resolve) -> None:
    """Every rule's backendRefs into ``rule``'s one weighted distribution."""
    route_ns = str(meta(route).get("namespace") or "")
    rules = (route.get("spec") or {}).get("rules") or ()
    if not isinstance(rules, list) or not rules:
        raise InvalidRouteError("the route has no rules")
    distribution = rule.backends.random_available
    for spec_rule in rules:
        refs = spec_rule.get("backendRefs") if isinstance(spec_rule, Mapping) else None
        if not refs or not isinstance(refs, list):
            raise InvalidRouteError("a rule has no backendRefs")
        for ref in refs:
            if not isinstance(ref, Mapping):
                raise InvalidRouteError("a backendRef must be an object")
            weight = ref.get("weight", 1)
            if not isinstance(weight, int) or not 0 <= weight <= _MAX_WEIGHT:
                raise InvalidRouteError(f"backendRef weight {weight!r} is not in [0, 1000000]")
            weighted = distribution.backends.add(weight=weight)
            resolved = resolve(ref, route_ns)
            if isinstance(resolved, outbound_pb2.Backend):
                weighted.backend.backend.CopyFrom(resolved)
            else:
                metadata, message = resolved
                weighted.backend.backend.metadata.CopyFrom(metadata)
                weighted.backend.filters.add().invalid.CopyFrom(
                    opaque_route_pb2.Invalid(message=message)
                )


def opaque_route(route: Mapping[str, Any], resolve: Resolve) -> outbound_pb2.OpaqueRoute:
    """A TCPRoute as an opaque route: one rule with all its backends."""
    out = outbound_pb2.OpaqueRoute(metadata=_metadata(route, "TCPRoute"))
    _fill_rule(out.rules.add(), route, resolve)
    return out


def tls_route(route: Mapping[str, Any], resolve: Resolve) -> outbound_pb2.TlsRoute:
    """A TLSRoute: its hostnames as SNI matches (none: every name), all its backends."""
    out = outbound_pb2.TlsRoute(metadata=_metadata(route, "TLSRoute"))
    hostnames = (route.get("spec") or {}).get("hostnames") or []
    if not isinstance(hostnames, list):
        raise InvalidRouteError("hostnames must be a list")
    out.snis.extend(sni_match(str(h)) for h in hostnames)
    _fill_rule(out.rules.add(), route, resolve)
    return out


def service_ref(
    ref: Mapping[str, Any],
    route_ns: str,
    service_exists: Callable[[str, str], bool],
    balancer: Callable[[str, str, int], outbound_pb2.Backend],
    resource: Callable[[str, str, int], meta_pb2.Metadata],
) -> ResolvedRef:
    """A backendRef that must be a Service with a port."""
    kind = ref.get("kind") or "Service"
    if kind != "Service" or (ref.get("group") or "") not in ("", "core"):
        raise InvalidRouteError(f"backendRef kind {kind!r} is not a Service")
    name, ns, port = (
        str(ref.get("name") or ""),
        str(ref.get("namespace") or route_ns),
        ref.get("port"),
    )
    if not name or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidRouteError(f"backendRef Service {name!r} needs a name and a port")
    if not service_exists(ns, name):
        return resource(name, ns, port), f"Service not found {ns}/{name}"
    return balancer(name, ns, port)
