"""Route ``status.parents``: what the policy controller made of each parentRef (pure).

For every parentRef that names a Service, a Server (HTTPRoute, GRPCRoute) or an
EgressNetwork, the route gets one entry with Linkerd's controller name, the parentRef echoed,
and two conditions (``observedGeneration`` set). TLSRoutes and TCPRoutes attach to Services
and EgressNetworks only (outbound), as in Linkerd.

* ``Accepted``: True (``Accepted``) when the parent exists and the route compiles;
  False with ``NoMatchingParent`` for a parent that does not exist, or ``UnsupportedValue``
  for a route the proxies could not apply (the message says why).
* ``ResolvedRefs``: True (``ResolvedRefs``) when every backendRef is an existing Service (or
  an existing EgressNetwork: traffic to the original destination); False with
  ``BackendNotFound`` or ``InvalidKind`` otherwise.

Entries of other controllers are kept as they are. :func:`status_update` returns the new
``status.parents`` only when it differs from what the route has, keeping each condition's
``lastTransitionTime`` while its status is unchanged, so writing it is never a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gossamer_api.proxy import outbound_pb2

from gossamer_destination import httproutes, tcp_routes
from gossamer_destination.endpoints import meta
from gossamer_destination.policy_inbound import inbound_grpc_route, inbound_route
from gossamer_destination.policy_outbound import outbound_grpc_route, outbound_route
from gossamer_destination.settings import DestinationSettings

CONTROLLER_NAME = "linkerd.io/policy-controller"
_PARENT_REF_FIELDS = ("group", "kind", "namespace", "name", "sectionName", "port")
_COMPILE_ERRORS = (httproutes.InvalidRouteError, ValueError, TypeError, AttributeError, KeyError)

Condition = dict[str, Any]


@dataclass(frozen=True)
class StatusLookups:
    """What status computation reads from the caches."""

    service: Callable[[str, str], Mapping[str, Any] | None]
    server: Callable[[str, str], Mapping[str, Any] | None]
    egress_network: Callable[[str, str], Mapping[str, Any] | None] = lambda _ns, _name: None


_EGRESS_KIND = "EgressNetwork"
_OPAQUE_KINDS = ("TCPRoute", "TLSRoute")


def _is_egress_ref(ref: Mapping[str, Any]) -> bool:
    group = ref.get("group") or httproutes.POLICY_GROUP
    return ref.get("kind") == _EGRESS_KIND and group == httproutes.POLICY_GROUP


def _any_ref(ref: Mapping[str, Any], route_ns: str) -> tcp_routes.ResolvedRef:
    """Compiling for status: an EgressNetwork or a Service with a port is a backend."""
    if _is_egress_ref(ref):
        return outbound_pb2.Backend()
    return tcp_routes.service_ref(
        ref,
        route_ns,
        lambda ns, name: True,
        lambda name, ns, port: outbound_pb2.Backend(),
        lambda name, ns, port: outbound_pb2.Backend().metadata,
    )


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> Condition:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _echo(ref: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ref[k] for k in _PARENT_REF_FIELDS if ref.get(k) is not None}


def _without_egress_refs(route: Mapping[str, Any]) -> dict[str, Any]:
    """``route`` with backendRefs to EgressNetworks dropped (the original destination, which
    the egress policy puts in their place)."""
    spec = dict(route.get("spec") or {})
    spec["rules"] = [
        {
            **rule,
            "backendRefs": [r for r in rule.get("backendRefs") or () if not _is_egress_ref(r)],
        }
        for rule in spec.get("rules") or ()
    ]
    return {**route, "spec": spec}


def _compile_error(
    route: Mapping[str, Any], server_parent: bool, settings: DestinationSettings
) -> str | None:
    """Why the proxies could not apply the route, or ``None`` if it compiles."""
    kind = httproutes.route_kind(route)
    grpc = kind == "GRPCRoute"
    try:
        if kind not in _OPAQUE_KINDS:
            route = _without_egress_refs(route)
        if kind == "TLSRoute":
            tcp_routes.tls_route(route, _any_ref)
        elif kind == "TCPRoute":
            tcp_routes.opaque_route(route, _any_ref)
        elif server_parent:
            (inbound_grpc_route if grpc else inbound_route)(route, [])
        else:
            compile_outbound = outbound_grpc_route if grpc else outbound_route
            compile_outbound(route, outbound_pb2.Backend(), lambda ns, name: True, settings)
    except _COMPILE_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


def resolved_refs(route: Mapping[str, Any], lookups: StatusLookups, generation: int) -> Condition:
    ns = str(meta(route).get("namespace"))
    missing: list[str] = []
    for rule in (route.get("spec") or {}).get("rules") or ():
        for ref in rule.get("backendRefs") or ():
            kind = ref.get("kind") or "Service"
            ref_ns = str(ref.get("namespace") or ns)
            name = str(ref.get("name") or "")
            if _is_egress_ref(ref):
                if lookups.egress_network(ref_ns, name) is None:
                    missing.append(f"{ref_ns}/{name}")
                continue
            if kind != "Service" or (ref.get("group") or "core") not in ("core", ""):
                return _condition(
                    "ResolvedRefs",
                    False,
                    "InvalidKind",
                    f"backendRef {ref.get('name')!r} has unsupported kind {kind!r}",
                    generation,
                )
            if lookups.service(ref_ns, name) is None:
                missing.append(f"{ref_ns}/{name}")
    if missing:
        return _condition(
            "ResolvedRefs",
            False,
            "BackendNotFound",
            f"backend not found: {', '.join(sorted(set(missing)))}",
            generation,
        )
    return _condition("ResolvedRefs", True, "ResolvedRefs", "", generation)


def desired_parents(
    route: Mapping[str, Any], lookups: StatusLookups, settings: DestinationSettings
) -> list[dict[str, Any]]:
    """Our ``status.parents`` entries for the route's Service, Server and EgressNetwork
    parentRefs."""
    generation = int(meta(route).get("generation") or 0)
    resolved = resolved_refs(route, lookups, generation)
    opaque_kind = httproutes.route_kind(route) in _OPAQUE_KINDS
    out: list[dict[str, Any]] = []
    for ref in httproutes.parent_refs(route):
        server_parent = httproutes.is_server_parent(ref) and not opaque_kind
        if server_parent:
            kind, find = "Server", lookups.server
        elif httproutes.is_service_parent(ref):
            kind, find = "Service", lookups.service
        elif _is_egress_ref(ref):
            kind, find = _EGRESS_KIND, lookups.egress_network
        else:
            continue
        ns = httproutes.parent_namespace(ref, route)
        name = str(ref.get("name") or "")
        found = find(ns, name)
        if found is None:
            accepted = _condition(
                "Accepted",
                False,
                "NoMatchingParent",
                f"{kind} {ns}/{name} not found",
                generation,
            )
        elif kind == "Service" and not _service_has_port(found, ref.get("port")):
            accepted = _condition(
                "Accepted",
                False,
                "NoMatchingParent",
                f"Service {ns}/{name} has no port {ref.get('port')}",
                generation,
            )
        else:
            error = _compile_error(route, server_parent, settings)
            if error is None:
                accepted = _condition("Accepted", True, "Accepted", "", generation)
            else:
                accepted = _condition("Accepted", False, "UnsupportedValue", error, generation)
        out.append(
            {
                "parentRef": _echo(ref),
                "controllerName": CONTROLLER_NAME,
                "conditions": [accepted, dict(resolved)],
            }
        )
    return out


def _service_has_port(service: Mapping[str, Any], port: Any) -> bool:
    if port is None:
        return True
    ports = (service.get("spec") or {}).get("ports") or ()
    return any(p.get("port") == port for p in ports)


def status_update(
    route: Mapping[str, Any], desired: list[dict[str, Any]], now: str
) -> list[dict[str, Any]] | None:
    """The route's new ``status.parents``, or ``None`` when nothing would change.

    ``now`` (RFC 3339) stamps conditions whose status changed; unchanged ones keep their time.
    """
    current = list(((route.get("status") or {}).get("parents")) or ())
    others = [p for p in current if p.get("controllerName") != CONTROLLER_NAME]
    previous = {
        _ref_key(p.get("parentRef") or {}): p
        for p in current
        if p.get("controllerName") == CONTROLLER_NAME
    }
    ours: list[dict[str, Any]] = []
    for entry in desired:
        old = previous.get(_ref_key(entry["parentRef"])) or {}
        old_conditions = {c.get("type"): c for c in old.get("conditions") or ()}
        conditions = []
        for cond in entry["conditions"]:
            before = old_conditions.get(cond["type"])
            stamp = now
            if before is not None and before.get("status") == cond["status"]:
                stamp = str(before.get("lastTransitionTime") or now)
            conditions.append({**cond, "lastTransitionTime": stamp})
        ours.append({**entry, "conditions": conditions})
    updated = others + ours
    if _comparable(updated) == _comparable(current):
        return None
    return updated


def _ref_key(ref: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(ref.get(k) for k in _PARENT_REF_FIELDS)


def _comparable(parents: list[dict[str, Any]]) -> list[Any]:
    """Parents without timestamps, for deciding whether anything changed."""
    out = []
    for p in parents:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in p.get("conditions") or ()
        ]
        out.append((p.get("controllerName"), p.get("parentRef"), conditions))
    return out
