"""``gossamer authz``: the authorizations that apply to a workload's pods (pure).

As ``linkerd authz``, one row per (route, Server, authorization):

- a Server applies when its ``podSelector`` selects one of the pods and its port is one the
  pods can serve (a number always; a name only when a container declares it);
- an AuthorizationPolicy applies to the Servers it targets: a Server by name, every Server of
  its namespace (``kind: Namespace``), or an HTTPRoute (either API group) whose parent is one
  of those Servers, which names the row's route; policies targeting a Server cover every
  route (``*``);
- a ServerAuthorization (the legacy API) applies to the Server it names, or to every Server
  its ``server.selector`` selects by label;
- pod ports no Server covers fall back to the default inbound policy (the pod's
  ``config.linkerd.io/default-inbound-policy`` annotation, else the proxy's
  ``LINKERD2_PROXY_INBOUND_DEFAULT_POLICY``, else the namespace's annotation, else
  ``all-unauthenticated``), shown as the route ``default`` of the server
  ``default:<policy>``.

Each row also says which authentications the authorization requires (MeshTLS and Network
authentications, service accounts, identities, networks), marking references to objects
that do not exist: a policy that requires a missing authentication authorizes nobody.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Obj = Mapping[str, Any]

POLICY_GROUP = "policy.linkerd.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_POLICY_ANNOTATION = "config.linkerd.io/default-inbound-policy"
DEFAULT_POLICY_ENV = "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY"
CLUSTER_DEFAULT_POLICY = "all-unauthenticated"
PROXY_CONTAINER = "linkerd-proxy"
HEADERS = ("ROUTE", "SERVER", "AUTHORIZATION_POLICY", "SERVER_AUTHORIZATION")


class SelectorError(ValueError):
    """A label selector that cannot be evaluated."""


@dataclass(frozen=True, order=True)
class AuthzRow:
    route: str
    server: str
    authorization_policy: str
    server_authorization: str
    authentications: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyObjects:
    """Everything in the namespace that decides who may talk to the pods."""

    servers: Sequence[Obj] = ()
    authorization_policies: Sequence[Obj] = ()
    server_authorizations: Sequence[Obj] = ()
    http_routes: Sequence[Obj] = ()
    meshtls_authentications: Sequence[Obj] = ()
    network_authentications: Sequence[Obj] = ()
    namespace: Obj | None = None


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name") or "")


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (``matchLabels`` and ``matchExpressions``) against labels.

    An empty selector selects everything, as for a Server's ``podSelector``."""
    if selector is None:
        return False
    if not isinstance(selector, Mapping):
        raise SelectorError(f"a label selector is a mapping, not {type(selector).__name__}")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise SelectorError(f"unknown label selector operator {operator!r}")
        if not ok:
            return False
    return True


def _labels(obj: Obj) -> dict[str, str]:
    labels = _meta(obj).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def _app_ports(pod: Obj) -> tuple[set[int], set[str]]:
    """The numbers and names of the ports the pod's containers (not the proxy) declare."""
    numbers: set[int] = set()
    names: set[str] = set()
    spec = _spec(pod)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if container.get("name") == PROXY_CONTAINER:
            continue
        for port in container.get("ports") or []:
            if isinstance(port.get("containerPort"), int):
                numbers.add(port["containerPort"])
            if port.get("name"):
                names.add(str(port["name"]))
    return numbers, names


def server_selects(server: Obj, pod: Obj) -> bool:
    spec = _spec(server)
    if not selector_matches(spec.get("podSelector"), _labels(pod)):
        return False
    port = spec.get("port")
    if isinstance(port, int):
        return True
    _, names = _app_ports(pod)
    return str(port) in names


def _falls_to_default(servers: Iterable[Obj], pod: Obj) -> bool:
    """Whether some traffic to the pod meets no Server: a declared port none covers, or no
    declared port at all (any port may be served)."""
    numbers, _ = _app_ports(pod)
    named: dict[int, str] = {}
    for container in _spec(pod).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") and isinstance(port.get("containerPort"), int):
                named[port["containerPort"]] = str(port["name"])
    covered = {
        number
        for server in servers
        for number in numbers
        if _spec(server).get("port") in (number, named.get(number))
    }
    return not numbers or bool(numbers - covered)


def default_policy(pod: Obj, namespace: Obj | None) -> str:
    annotations = _meta(pod).get("annotations") or {}
    if annotations.get(DEFAULT_POLICY_ANNOTATION):
        return str(annotations[DEFAULT_POLICY_ANNOTATION])
    spec = _spec(pod)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if container.get("name") != PROXY_CONTAINER:
            continue
        for env in container.get("env") or []:
            if env.get("name") == DEFAULT_POLICY_ENV and env.get("value"):
                return str(env["value"])
    ns_annotations = _meta(namespace or {}).get("annotations") or {}
    return str(ns_annotations.get(DEFAULT_POLICY_ANNOTATION) or CLUSTER_DEFAULT_POLICY)


def _ref_group(ref: Obj, default: str = POLICY_GROUP) -> str:
    group = ref.get("group")
    return default if group is None else str(group)


def _policy_authentications(policy: Obj, objects: PolicyObjects) -> tuple[str, ...]:
    existing = {
        "MeshTLSAuthentication": {_name(o) for o in objects.meshtls_authentications},
        "NetworkAuthentication": {_name(o) for o in objects.network_authentications},
    }
    out = []
    for ref in _spec(policy).get("requiredAuthenticationRefs") or []:
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        text = f"{kind}/{name}"
        if ref.get("namespace"):
            text = f"{kind}/{ref['namespace']}/{name}"
        elif kind in existing and name not in existing[kind]:
            text += " (missing)"
        out.append(text)
    return tuple(out)


def _saz_authentications(saz: Obj) -> tuple[str, ...]:
    client = _spec(saz).get("client") or {}
    out = []
    if client.get("unauthenticated"):
        out.append("unauthenticated")
    mesh = client.get("meshTLS") or {}
    if mesh.get("unauthenticatedTLS"):
        out.append("unauthenticatedTLS")
    for identity in mesh.get("identities") or []:
        out.append(f"identity:{identity}")
    for account in mesh.get("serviceAccounts") or []:
        ns = account.get("namespace")
        out.append(f"ServiceAccount/{ns + '/' if ns else ''}{account.get('name')}")
    for network in client.get("networks") or []:
        out.append(f"network:{network.get('cidr')}")
    return tuple(out)


def _routes_to(server: str, routes: Iterable[Obj]) -> list[tuple[str, str]]:
    """``(route group, route name)`` of the HTTPRoutes whose parent is the Server."""
    found = []
    for route in routes:
        group = str(route.get("apiVersion", "")).split("/")[0]
        for parent in _spec(route).get("parentRefs") or []:
            kind = parent.get("kind")
            if (
                kind == "Server"
                and _ref_group(parent) == POLICY_GROUP
                and parent.get("name") == server
            ):
                found.append((group, _name(route)))
                break
    return found


def authorizations(pods: Sequence[Obj], objects: PolicyObjects, namespace: str) -> list[AuthzRow]:
    """The rows ``gossamer authz`` prints for ``pods`` (all in ``namespace``)."""
    servers = [s for s in objects.servers if any(server_selects(s, p) for p in pods)]
    rows: set[AuthzRow] = set()
    for server in servers:
        name = _name(server)
        for policy in objects.authorization_policies:
            target = _spec(policy).get("targetRef") or {}
            kind, target_name = target.get("kind"), target.get("name")
            auth = _policy_authentications(policy, objects)
            this_server = kind == "Server" and _ref_group(target) == POLICY_GROUP
            if (this_server and target_name == name) or (
                kind == "Namespace" and target_name == namespace
            ):
                rows.add(AuthzRow("*", name, _name(policy), "", auth))
            elif kind in ("HTTPRoute", "GRPCRoute"):
                group = _ref_group(target)
                for route_group, route in _routes_to(name, objects.http_routes):
                    if route == target_name and route_group == group:
                        rows.add(AuthzRow(route, name, _name(policy), "", auth))
        for saz in objects.server_authorizations:
            ref = _spec(saz).get("server") or {}
            if ref.get("name") == name or (
                ref.get("selector") is not None
                and selector_matches(ref.get("selector"), _labels(server))
            ):
                rows.add(AuthzRow("*", name, "", _name(saz), _saz_authentications(saz)))
    for pod in pods:
        if _falls_to_default([s for s in servers if server_selects(s, pod)], pod):
            fallback = f"default:{default_policy(pod, objects.namespace)}"
            rows.add(AuthzRow("default", fallback, fallback, ""))
    return sorted(rows, key=lambda r: (r.route == "default", r.server, r.route, r))


def render_table(rows: Sequence[AuthzRow], wide: bool = False) -> str:
    headers = [*HEADERS, "AUTHENTICATIONS"] if wide else list(HEADERS)
    table = [headers]
    for r in rows:
        cells = [r.route, r.server, r.authorization_policy, r.server_authorization]
        if wide:
            cells.append(", ".join(r.authentications))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def render_json(rows: Sequence[AuthzRow]) -> str:
    return json.dumps(
        [{**asdict(r), "authentications": list(r.authentications)} for r in rows], indent=2
    )
