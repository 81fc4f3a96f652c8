"""Inbound policy for one pod port: the ``inbound.Server`` the proxy enforces (pure).

Resolution follows Linkerd's policy controller (linkerd-wire.md §3.4, §7): the oldest
``Server`` that selects the pod and port wins; otherwise the default policy from the pod
annotation, the namespace annotation or the cluster flag applies. An ExternalWorkload's proxy
(``PortSpec.workload`` ``{"ns":…,"external_workload":…}``) is resolved the same way, with
the Servers whose ``externalWorkloadSelector`` selects it (a Server selects pods or
ExternalWorkloads, never both), its own annotations, and its ``spec.ports`` for named ports;
it has no probes. ``AuthorizationPolicy``
objects targeting the Server, its namespace or one of its HTTPRoutes become ``Authz``
entries once all their authentication refs resolve; so do the legacy ``ServerAuthorization``
objects (``policy.linkerd.io/v1beta1``) that select the Server by name or label selector.
The oldest ``HTTPLocalRateLimitPolicy`` targeting the Server becomes the ``HttpLocalRateLimit``
of its HTTP protocol (detect, HTTP/1, HTTP/2). Invalid objects are skipped and reported.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gossamer_api.proxy import http_route_pb2, inbound_pb2, meta_pb2, net_pb2
from gossamer_kube.external_workload import ExternalWorkload

from gossamer_destination import httproutes
from gossamer_destination.endpoints import (
    OPAQUE_PORTS_ANNOTATION,
    annotations_of,
    labels_of,
    meta,
    pod_opaque_ports,
)
from gossamer_destination.ports import PortSet, container_ports, lenient_port_set
from gossamer_destination.profiles import Issues, http_method
from gossamer_destination.selectors import InvalidSelectorError, selector_matches
from gossamer_destination.settings import DEFAULT_POLICIES, DestinationSettings, Network
from gossamer_destination.wire import ip_address

KubeObject = dict[str, Any]
DEFAULT_POLICY_ANNOTATION = "config.linkerd.io/default-inbound-policy"
REQUIRE_IDENTITY_ANNOTATION = "config.linkerd.io/proxy-require-identity-inbound-ports"
DETECT_TIMEOUT_SECONDS = 10
ALL_NETWORKS: tuple[Network, ...] = (
    ipaddress.ip_network("0.0.0.0/0"),
    ipaddress.ip_network("::/0"),
)
_AUTHENTICATED = {
    "all-unauthenticated": "all-authenticated",
    "cluster-unauthenticated": "cluster-authenticated",
}


@dataclass(frozen=True)
class PolicyLookups:
    """What inbound/outbound policy reads from the informer caches."""

    namespace: Callable[[str], KubeObject | None]
    servers: Callable[[str], list[KubeObject]]
    authorization_policies: Callable[[str], list[KubeObject]]
    meshtls_authentication: Callable[[str, str], KubeObject | None]
    network_authentication: Callable[[str, str], KubeObject | None]
    http_routes: Callable[[str], list[KubeObject]]
    server_authorizations: Callable[[str], list[KubeObject]]
    rate_limit_policies: Callable[[str], list[KubeObject]]
    #: Gateway API GRPCRoutes of a namespace (``http_routes`` holds both HTTPRoute groups).
    grpc_routes: Callable[[str], list[KubeObject]] = lambda _ns: []
    #: Gateway API TCPRoutes of a namespace (served for EgressNetwork parents).
    tcp_routes: Callable[[str], list[KubeObject]] = lambda _ns: []
    #: Gateway API TLSRoutes of a namespace (Service and EgressNetwork parents).
    tls_routes: Callable[[str], list[KubeObject]] = lambda _ns: []


POD_SELECTOR = "podSelector"
EXTERNAL_WORKLOAD_SELECTOR = "externalWorkloadSelector"


@dataclass(frozen=True)
class InboundWorkload:
    """What inbound policy reads of the workload a proxy fronts: a pod or an ExternalWorkload."""

    kind: str
    """``pod`` or ``external workload`` (for messages)."""
    obj: Mapping[str, Any]
    """The Kubernetes object: its labels and annotations."""
    selector_field: str
    """The Server field that selects this kind of workload."""
    named_ports: Mapping[str, int]
    opaque_ports: PortSet
    probe_paths: Callable[[int], list[str]]


def pod_workload(pod: Mapping[str, Any], settings: DestinationSettings) -> InboundWorkload:
    return InboundWorkload(
        kind="pod",
        obj=pod,
        selector_field=POD_SELECTOR,
        named_ports=container_ports(pod),
        opaque_ports=pod_opaque_ports(pod, settings),
        probe_paths=lambda port: probe_paths(pod, port),
    )


def external_workload(
    obj: Mapping[str, Any], workload: ExternalWorkload, settings: DestinationSettings
) -> InboundWorkload:
    """An ExternalWorkload (``workload`` is ``obj`` validated): named ports are its
    ``spec.ports``, opaque ports its annotation or the cluster default; no probes."""
    return InboundWorkload(
        kind="external workload",
        obj=obj,
        selector_field=EXTERNAL_WORKLOAD_SELECTOR,
        named_ports={name: number for name, number in workload.ports if name},
        opaque_ports=lenient_port_set(
            annotations_of(obj).get(OPAQUE_PORTS_ANNOTATION), settings.default_opaque_ports
        ),
        probe_paths=lambda _port: [],
    )


# -- networks and authentications -----------------------------------------------------------


def ip_network(net: Network) -> net_pb2.IPNetwork:
    return net_pb2.IPNetwork(ip=ip_address(str(net.network_address)), prefix_len=net.prefixlen)


def networks_proto(nets: Iterable[Network]) -> list[inbound_pb2.Network]:
    return [inbound_pb2.Network(net=ip_network(n)) for n in nets]


def unauthenticated() -> inbound_pb2.Authn:
    return inbound_pb2.Authn(unauthenticated=inbound_pb2.Authn.PermitUnauthenticated())


def mesh_tls(identities: Iterable[str], suffixes: Iterable[list[str]]) -> inbound_pb2.Authn:
    authn = inbound_pb2.Authn()
    clients = authn.meshTLS.identities
    clients.identities.extend(inbound_pb2.Identity(name=i) for i in identities)
    clients.suffixes.extend(inbound_pb2.IdentitySuffix(parts=s) for s in suffixes)
    return authn


def _authz(
    networks: list[inbound_pb2.Network],
    authn: inbound_pb2.Authn,
    *,
    group: str,
    kind: str,
    name: str,
    namespace: str = "",
) -> inbound_pb2.Authz:
    out = inbound_pb2.Authz(networks=networks, authentication=authn)
    out.labels.update({"group": group, "kind": kind, "name": name})
    if kind == "default":
        out.metadata.default = name
    else:
        out.metadata.resource.CopyFrom(
            meta_pb2.Resource(group=group, kind=kind, name=name, namespace=namespace)
        )
    return out


def default_authzs(policy: str, settings: DestinationSettings) -> list[inbound_pb2.Authz]:
    """The authorizations a default policy grants (``deny`` grants none)."""
    if policy in ("all-unauthenticated", "audit"):
        nets, authn = ALL_NETWORKS, unauthenticated()
    elif policy == "all-authenticated":
        nets, authn = ALL_NETWORKS, mesh_tls([], [[]])
    elif policy == "cluster-unauthenticated":
        nets, authn = settings.cluster_networks, unauthenticated()
    elif policy == "cluster-authenticated":
        nets, authn = settings.cluster_networks, mesh_tls([], [[]])
    else:
        return []
    return [_authz(networks_proto(nets), authn, group="", kind="default", name=policy)]


# -- default policy ----------------------------------------------------------------------------


def default_policy(
    pod: Mapping[str, Any],
    port: int,
    namespace: Mapping[str, Any] | None,
    settings: DestinationSettings,
    issues: Issues,
    *,
    named_ports: Mapping[str, int] | None = None,
    kind: str = "pod",
) -> str:
    """The default policy of a workload port: the workload's annotation, else its
    namespace's, else the cluster's; ``*-unauthenticated`` becomes ``*-authenticated`` on a
    port the workload lists as requiring identity. ``named_ports`` resolves named ports in
    those lists (a pod's container ports unless given)."""
    policy = settings.default_inbound_policy
    sources = [("namespace", namespace or {}), (kind, pod)]
    for where, obj in sources:
        value = annotations_of(obj).get(DEFAULT_POLICY_ANNOTATION)
        if value is None:
            continue
        if value in DEFAULT_POLICIES:
            policy = value
        else:
            issues.add(
                f"{where} {meta(obj).get('name')}: invalid {DEFAULT_POLICY_ANNOTATION}={value!r}"
            )
    required: PortSet = lenient_port_set(
        annotations_of(pod).get(REQUIRE_IDENTITY_ANNOTATION), PortSet()
    )
    if required.contains(port, container_ports(pod) if named_ports is None else named_ports):
        policy = _AUTHENTICATED.get(policy, policy)
    return policy


def probe_paths(pod: Mapping[str, Any], port: int) -> list[str]:
    """HTTP liveness/readiness/startup probe paths of the pod that target ``port``."""
    named = container_ports(pod)
    paths: list[str] = []
    for container in (pod.get("spec") or {}).get("containers") or ():
        for key in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = (container.get(key) or {}).get("httpGet")
            if not get:
                continue
            probe_port = get.get("port")
            number = named.get(probe_port) if isinstance(probe_port, str) else probe_port
            if number == port:
                path = str(get.get("path") or "/")
                if path not in paths:
                    paths.append(path)
    return sorted(paths)


def _default_route(authzs: list[inbound_pb2.Authz]) -> inbound_pb2.HttpRoute:
    route = inbound_pb2.HttpRoute(authorizations=authzs)
    route.metadata.default = "default"
    route.rules.append(
        inbound_pb2.HttpRoute.Rule(
            matches=[http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/"))]
        )
    )
    return route


def _probe_route(paths: list[str], settings: DestinationSettings) -> inbound_pb2.HttpRoute:
    route = inbound_pb2.HttpRoute()
    route.metadata.default = "probe"
    route.authorizations.append(
        _authz(
            networks_proto(settings.probe_networks),
            unauthenticated(),
            group="",
            kind="default",
            name="probe",
        )
    )
    route.rules.append(
        inbound_pb2.HttpRoute.Rule(
            matches=[
                http_route_pb2.HttpRouteMatch(
                    path=http_route_pb2.PathMatch(exact=p), method=http_method("GET")
                )
                for p in paths
            ]
        )
    )
    return route


def _default_routes(
    workload: InboundWorkload,
    port: int,
    authzs: list[inbound_pb2.Authz],
    settings: DestinationSettings,
) -> list[inbound_pb2.HttpRoute]:
    routes = [_default_route(authzs)]
    paths = workload.probe_paths(port)
    if paths and settings.probe_networks:
        routes.append(_probe_route(paths, settings))
    return routes


def _detect(routes: list[inbound_pb2.HttpRoute]) -> inbound_pb2.ProxyProtocol:
    proto = inbound_pb2.ProxyProtocol()
    proto.detect.timeout.seconds = DETECT_TIMEOUT_SECONDS
    proto.detect.http_routes.extend(routes)
    return proto


# -- servers -----------------------------------------------------------------------------------


def server_port_matches(
    server: Mapping[str, Any], named_ports: Mapping[str, int], port: int
) -> bool:
    """Whether the Server's ``port`` (a number, or a name looked up in ``named_ports``) is
    ``port``."""
    wanted = (server.get("spec") or {}).get("port")
    if isinstance(wanted, int):
        return wanted == port
    if isinstance(wanted, str):
        if wanted.isdigit():
            return int(wanted) == port
        return named_ports.get(wanted) == port
    return False


def selecting_server(
    pod: Mapping[str, Any], port: int, servers: Iterable[Mapping[str, Any]], issues: Issues
) -> Mapping[str, Any] | None:
    """The oldest Server (then by name) selecting the pod port, as Linkerd resolves conflicts."""
    return workload_server(
        labels_of(pod), POD_SELECTOR, container_ports(pod), port, servers, issues
    )


def workload_server(
    labels: Mapping[str, str],
    selector_field: str,
    named_ports: Mapping[str, int],
    port: int,
    servers: Iterable[Mapping[str, Any]],
    issues: Issues,
) -> Mapping[str, Any] | None:
    """The oldest Server (then by name) whose ``selector_field`` (``podSelector`` or
    ``externalWorkloadSelector``) selects a workload with ``labels`` on ``port``. A Server
    that sets both selectors, or neither, is invalid (the CRD admits exactly one): reported
    and skipped."""
    found: list[Mapping[str, Any]] = []
    for server in servers:
        spec = server.get("spec") or {}
        where = f"Server {meta(server).get('namespace')}/{meta(server).get('name')}"
        present = [f for f in (POD_SELECTOR, EXTERNAL_WORKLOAD_SELECTOR) if f in spec]
        if len(present) != 1:
            issues.add(
                f"{where}: needs exactly one of {POD_SELECTOR} and "
                f"{EXTERNAL_WORKLOAD_SELECTOR}; ignored"
            )
            continue
        if present[0] != selector_field:
            continue
        try:
            if not selector_matches(spec.get(selector_field), labels):
                continue
        except InvalidSelectorError as exc:
            issues.add(f"{where}: {exc}")
            continue
        if server_port_matches(server, named_ports, port):
            found.append(server)
    if not found:
        return None
    found.sort(key=httproutes.route_sort_key)
    return found[0]


def server_opaque(server: Mapping[str, Any] | None) -> bool:
    return bool(server) and (server.get("spec") or {}).get("proxyProtocol") == "opaque"  # type: ignore[union-attr]


def _policy_applies(policy: Mapping[str, Any], kind: str, name: str, namespace: str) -> bool:
    ref = (policy.get("spec") or {}).get("targetRef") or {}
    ref_kind = str(ref.get("kind") or "")
    if ref_kind.lower() == "namespace":
        return kind == "server" and ref.get("name") == namespace
    return ref_kind.lower() == kind and ref.get("name") == name


def policy_authz(
    policy: Mapping[str, Any],
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> inbound_pb2.Authz | None:
    """One AuthorizationPolicy as an Authz; ``None`` when a ref is missing or invalid."""
    pm = meta(policy)
    ns, name = str(pm.get("namespace")), str(pm.get("name"))
    where = f"AuthorizationPolicy {ns}/{name}"
    refs = (policy.get("spec") or {}).get("requiredAuthenticationRefs") or []
    networks: list[inbound_pb2.Network] | None = None
    identities: list[str] = []
    suffixes: list[list[str]] = []
    mesh = False
    for ref in refs:
        kind = str(ref.get("kind") or "")
        ref_ns = str(ref.get("namespace") or ns)
        ref_name = str(ref.get("name") or "")
        if kind == "NetworkAuthentication":
            obj = lookups.network_authentication(ref_ns, ref_name)
            if obj is None:
                return None
            if networks is not None:
                issues.add(f"{where}: more than one NetworkAuthentication; skipped")
                return None
            try:
                networks = network_authentication(obj)
            except ValueError as exc:
                issues.add(f"NetworkAuthentication {ref_ns}/{ref_name}: {exc}")
                return None
        elif kind == "MeshTLSAuthentication":
            obj = lookups.meshtls_authentication(ref_ns, ref_name)
            if obj is None:
                return None
            mesh = True
            try:
                ids, sufs = meshtls_authentication(obj, settings)
            except ValueError as exc:
                issues.add(f"MeshTLSAuthentication {ref_ns}/{ref_name}: {exc}")
                return None
            identities += ids
            suffixes += sufs
        elif kind == "ServiceAccount":
            mesh = True
            identities.append(sa_identity(ref_name, ref_ns, settings))
        else:
            issues.add(f"{where}: unknown authentication kind {kind!r}; skipped")
            return None
    if networks is None:
        networks = networks_proto(settings.cluster_networks)
    authn = mesh_tls(identities, suffixes) if mesh else unauthenticated()
    return _authz(
        networks,
        authn,
        group=httproutes.POLICY_GROUP,
        kind="authorizationpolicy",
        name=name,
        namespace=ns,
    )


def network_authentication(obj: Mapping[str, Any]) -> list[inbound_pb2.Network]:
    out: list[inbound_pb2.Network] = []
    for entry in (obj.get("spec") or {}).get("networks") or ():
        net = ipaddress.ip_network(str(entry.get("cidr")), strict=False)
        out.append(_network_with_except(net, entry.get("except") or ()))
    if not out:
        raise ValueError("no networks")
    return out


def _network_with_except(net: Network, excepts: Iterable[Any]) -> inbound_pb2.Network:
    out = inbound_pb2.Network(net=ip_network(net))
    getattr(out, "except").extend(
        ip_network(ipaddress.ip_network(str(e), strict=False)) for e in excepts
    )
    return out


def sa_identity(name: str, namespace: str, settings: DestinationSettings) -> str:
    return (
        f"{name}.{namespace}.serviceaccount.identity."
        f"{settings.controller_namespace}.{settings.trust_domain}"
    )


def meshtls_authentication(
    obj: Mapping[str, Any], settings: DestinationSettings
) -> tuple[list[str], list[list[str]]]:
    spec = obj.get("spec") or {}
    own_ns = str(meta(obj).get("namespace"))
    identities: list[str] = []
    suffixes: list[list[str]] = []
    for ident in spec.get("identities") or ():
        text = str(ident)
        if text == "*":
            suffixes.append([])
        elif text.startswith("*."):
            suffixes.append(text[2:].split("."))
        else:
            identities.append(text)
    for ref in spec.get("identityRefs") or ():
        kind = ref.get("kind")
        if kind == "ServiceAccount":
            identities.append(
                sa_identity(str(ref.get("name")), str(ref.get("namespace") or own_ns), settings)
            )
        elif kind == "Namespace":
            if ref.get("name") == "*":
                suffixes.append([])
            else:
                suffixes.append(
                    [
                        str(ref.get("name")),
                        "serviceaccount",
                        "identity",
                        settings.controller_namespace,
                        *settings.trust_domain.split("."),
                    ]
                )
        else:
            raise ValueError(f"unknown identityRef kind {kind!r}")
    if not identities and not suffixes:
        raise ValueError("no identities")
    return identities, suffixes


def _authzs_for(
    kind: str,
    name: str,
    namespace: str,
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> list[inbound_pb2.Authz]:
    out: list[inbound_pb2.Authz] = []
    policies = sorted(lookups.authorization_policies(namespace), key=httproutes.route_sort_key)
    for policy in policies:
        ref = (policy.get("spec") or {}).get("targetRef") or {}
        if str(ref.get("kind") or "").lower() not in (
            "server",
            "httproute",
            "grpcroute",
            "namespace",
        ):
            issues.add(
                f"AuthorizationPolicy {namespace}/{meta(policy).get('name')}: "
                f"unknown targetRef kind {ref.get('kind')!r}; skipped"
            )
            continue
        if _policy_applies(policy, kind, name, namespace):
            authz = policy_authz(policy, lookups, settings, issues)
            if authz is not None:
                out.append(authz)
    return out


# -- ServerAuthorization (legacy) ----------------------------------------------------------------


def server_authorization_selects(saz: Mapping[str, Any], server: Mapping[str, Any]) -> bool:
    """Whether ``saz`` (same namespace) applies to ``server``: by name or label selector.

    Raises :class:`InvalidSelectorError` for a malformed selector or a ``server`` that
    names neither.
    """
    target = (saz.get("spec") or {}).get("server") or {}
    if target.get("name"):
        return bool(target.get("name") == meta(server).get("name"))
    if "selector" in target:
        return selector_matches(target.get("selector"), labels_of(server))
    raise InvalidSelectorError("spec.server has neither name nor selector")


def _identity_match(text: str) -> tuple[str | None, list[str] | None]:
    """``"*"`` → any identity, ``"*.a.b"`` → suffix ``[a, b]``, else one exact identity."""
    if text == "*":
        return None, []
    if text.startswith("*."):
        return None, text[2:].split(".")
    return text, None


def server_authorization_authz(
    saz: Mapping[str, Any], settings: DestinationSettings
) -> inbound_pb2.Authz:
    """One ServerAuthorization as an Authz; raises ValueError for an invalid ``client``."""
    sm = meta(saz)
    ns, name = str(sm.get("namespace")), str(sm.get("name"))
    client = (saz.get("spec") or {}).get("client") or {}
    if client.get("networks"):
        networks = [
            _network_with_except(
                ipaddress.ip_network(str(entry.get("cidr")), strict=False),
                entry.get("except") or (),
            )
            for entry in client["networks"]
        ]
    else:
        networks = networks_proto(settings.cluster_networks)
    mtls = client.get("meshTLS")
    if client.get("unauthenticated") is True:
        authn = unauthenticated()
    elif isinstance(mtls, Mapping):
        if mtls.get("unauthenticatedTLS") is True:
            if mtls.get("identities") or mtls.get("serviceAccounts"):
                raise ValueError("meshTLS.unauthenticatedTLS excludes identities/serviceAccounts")
            authn = inbound_pb2.Authn()
            authn.meshTLS.unauthenticated.SetInParent()
        else:
            identities: list[str] = []
            suffixes: list[list[str]] = []
            for text in mtls.get("identities") or ():
                exact, suffix = _identity_match(str(text))
                if exact is not None:
                    identities.append(exact)
                if suffix is not None:
                    suffixes.append(suffix)
            for sa in mtls.get("serviceAccounts") or ():
                if not sa.get("name"):
                    raise ValueError("a meshTLS.serviceAccounts entry has no name")
                sa_ns = str(sa.get("namespace") or ns)
                identities.append(sa_identity(str(sa["name"]), sa_ns, settings))
            if not identities and not suffixes:
                raise ValueError("meshTLS authorizes no identity or service account")
            authn = mesh_tls(identities, suffixes)
    else:
        raise ValueError("client must set unauthenticated: true or meshTLS")
    return _authz(
        networks,
        authn,
        group=httproutes.POLICY_GROUP,
        kind="serverauthorization",
        name=name,
        namespace=ns,
    )


def server_authorization_authzs(
    server: Mapping[str, Any],
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> list[inbound_pb2.Authz]:
    """The Authz of every valid ServerAuthorization that applies to ``server``."""
    ns = str(meta(server).get("namespace"))
    out: list[inbound_pb2.Authz] = []
    for saz in sorted(lookups.server_authorizations(ns), key=httproutes.route_sort_key):
        where = f"ServerAuthorization {ns}/{meta(saz).get('name')}"
        try:
            if not server_authorization_selects(saz, server):
                continue
            out.append(server_authorization_authz(saz, settings))
        except (InvalidSelectorError, ValueError, TypeError, AttributeError) as exc:
            issues.add(f"{where}: {exc}; skipped")
    return out


# -- HTTPLocalRateLimitPolicy -------------------------------------------------------------------


def _rps(limit: Any, where: str) -> int:
    value = limit.get("requestsPerSecond") if isinstance(limit, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        raise ValueError(f"{where}.requestsPerSecond must be a positive integer, got {value!r}")
    return value


def rate_limit_proto(
    policy: Mapping[str, Any], settings: DestinationSettings
) -> inbound_pb2.HttpLocalRateLimit:
    """One HTTPLocalRateLimitPolicy as ``HttpLocalRateLimit``; raises ValueError if invalid."""
    pm = meta(policy)
    ns, name = str(pm.get("namespace")), str(pm.get("name"))
    spec = policy.get("spec") or {}
    out = inbound_pb2.HttpLocalRateLimit()
    out.metadata.resource.CopyFrom(
        meta_pb2.Resource(
            group=httproutes.POLICY_GROUP, kind="HTTPLocalRateLimitPolicy", name=name, namespace=ns
        )
    )
    total = _rps(spec["total"], "total") if spec.get("total") is not None else None
    if total is not None:
        out.total.requestsPerSecond = total
    if spec.get("identity") is not None:
        identity = _rps(spec["identity"], "identity")
        if total is not None and identity > total:
            raise ValueError("identity.requestsPerSecond exceeds total.requestsPerSecond")
        out.identity.requestsPerSecond = identity
    for index, entry in enumerate(spec.get("overrides") or ()):
        where = f"overrides[{index}]"
        rps = _rps(entry, where)
        if total is not None and rps > total:
            raise ValueError(f"{where}.requestsPerSecond exceeds total.requestsPerSecond")
        override = out.overrides.add()
        override.limit.requestsPerSecond = rps
        refs = entry.get("clientRefs") or ()
        if not refs:
            raise ValueError(f"{where} has no clientRefs")
        for ref in refs:
            if ref.get("kind") != "ServiceAccount" or not ref.get("name"):
                raise ValueError(f"{where}: only named ServiceAccount clientRefs are supported")
            sa_ns = str(ref.get("namespace") or ns)
            identity_name = sa_identity(str(ref["name"]), sa_ns, settings)
            override.clients.identities.append(inbound_pb2.Identity(name=identity_name))
    return out


def server_rate_limit(
    server: Mapping[str, Any],
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> inbound_pb2.HttpLocalRateLimit | None:
    """The rate limit of the oldest valid HTTPLocalRateLimitPolicy targeting ``server``.

    A Server takes one rate-limit policy (as in Linkerd); later ones are reported.
    """
    sm = meta(server)
    ns, name = str(sm.get("namespace")), str(sm.get("name"))
    chosen: inbound_pb2.HttpLocalRateLimit | None = None
    chosen_name = ""
    for policy in sorted(lookups.rate_limit_policies(ns), key=httproutes.route_sort_key):
        ref = (policy.get("spec") or {}).get("targetRef") or {}
        group = ref.get("group") or httproutes.POLICY_GROUP
        if ref.get("kind") != "Server" or group != httproutes.POLICY_GROUP:
            continue
        if ref.get("name") != name:
            continue
        where = f"HTTPLocalRateLimitPolicy {ns}/{meta(policy).get('name')}"
        if chosen is not None:
            issues.add(f"{where}: Server {name} is already limited by {chosen_name}; ignored")
            continue
        try:
            chosen = rate_limit_proto(policy, settings)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            issues.add(f"{where}: {exc}; skipped")
            continue
        chosen_name = str(meta(policy).get("name"))
    return chosen


def _inbound_metadata(route: Mapping[str, Any]) -> meta_pb2.Metadata:
    rm = meta(route)
    return meta_pb2.Metadata(
        resource=meta_pb2.Resource(
            group=httproutes.route_group(route),
            kind=httproutes.route_kind(route),
            name=str(rm.get("name")),
            namespace=str(rm.get("namespace")),
        )
    )


def _inbound_filter(f: Mapping[str, Any], route_type: Any) -> Any:
    kind = f.get("type")
    if kind == "RequestHeaderModifier":
        return route_type.Filter(
            request_header_modifier=httproutes.header_modifier(f.get("requestHeaderModifier") or {})
        )
    if kind == "RequestRedirect" and route_type is inbound_pb2.HttpRoute:
        return route_type.Filter(redirect=httproutes.redirect(f.get("requestRedirect") or {}))
    raise httproutes.InvalidRouteError(f"unsupported inbound filter {kind!r}")


def inbound_route(
    route: Mapping[str, Any], authzs: list[inbound_pb2.Authz]
) -> inbound_pb2.HttpRoute:
    """An HTTPRoute, or a GRPCRoute in its HTTP form (``POST /svc/method``), for a Server
    that speaks HTTP (detect, HTTP/1, HTTP/2)."""
    out = inbound_pb2.HttpRoute(authorizations=authzs, metadata=_inbound_metadata(route))
    spec = route.get("spec") or {}
    grpc = httproutes.route_kind(route) == "GRPCRoute"
    out.hosts.extend(httproutes.host_match(str(h)) for h in spec.get("hostnames") or ())
    for rule in spec.get("rules") or [{}]:
        if grpc:
            matches = [httproutes.grpc_as_http_match(m) for m in httproutes.grpc_rule_matches(rule)]
        else:
            matches = httproutes.rule_matches(rule)
        r = inbound_pb2.HttpRoute.Rule(matches=matches)
        r.filters.extend(
            _inbound_filter(f, inbound_pb2.HttpRoute) for f in rule.get("filters") or ()
        )
        out.rules.append(r)
    return out


def inbound_grpc_route(
    route: Mapping[str, Any], authzs: list[inbound_pb2.Authz]
) -> inbound_pb2.GrpcRoute:
    """A GRPCRoute for a Server whose ``proxyProtocol`` is gRPC."""
    out = inbound_pb2.GrpcRoute(authorizations=authzs, metadata=_inbound_metadata(route))
    spec = route.get("spec") or {}
    out.hosts.extend(httproutes.host_match(str(h)) for h in spec.get("hostnames") or ())
    for rule in spec.get("rules") or [{}]:
        r = inbound_pb2.GrpcRoute.Rule(matches=httproutes.grpc_rule_matches(rule))
        r.filters.extend(
            _inbound_filter(f, inbound_pb2.GrpcRoute) for f in rule.get("filters") or ()
        )
        out.rules.append(r)
    return out


def server_routes(server: Mapping[str, Any], lookups: PolicyLookups) -> list[Mapping[str, Any]]:
    """Every HTTPRoute (both groups) and GRPCRoute whose parentRefs name the Server, oldest
    first."""
    sm = meta(server)
    ns, name = str(sm.get("namespace")), str(sm.get("name"))
    candidates = [*lookups.http_routes(ns), *lookups.grpc_routes(ns)]
    return sorted(
        (r for r in candidates if httproutes.attaches_to_server(r, ns, name)),
        key=httproutes.route_sort_key,
    )


def _route_authzs(
    route: Mapping[str, Any],
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> list[inbound_pb2.Authz]:
    ns, name = str(meta(route).get("namespace")), str(meta(route).get("name"))
    return _authzs_for(httproutes.route_kind(route).lower(), name, ns, lookups, settings, issues)


def _server_routes(
    server: Mapping[str, Any],
    workload: InboundWorkload,
    port: int,
    server_authzs: list[inbound_pb2.Authz],
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> list[inbound_pb2.HttpRoute]:
    routes: list[inbound_pb2.HttpRoute] = []
    for route in server_routes(server, lookups):
        authzs = _route_authzs(route, lookups, settings, issues)
        try:
            routes.append(inbound_route(route, authzs))
        except (httproutes.InvalidRouteError, ValueError, TypeError) as exc:
            issues.add(f"{_describe(route)} skipped: {exc}")
    if not routes:
        routes = _default_routes(workload, port, server_authzs, settings)
    return routes


def _server_grpc_routes(
    server: Mapping[str, Any],
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> list[inbound_pb2.GrpcRoute]:
    """GRPCRoutes of a gRPC Server; HTTPRoutes do not apply to one (reported)."""
    routes: list[inbound_pb2.GrpcRoute] = []
    for route in server_routes(server, lookups):
        if httproutes.route_kind(route) != "GRPCRoute":
            issues.add(f"{_describe(route)}: a gRPC Server takes GRPCRoutes only; ignored")
            continue
        authzs = _route_authzs(route, lookups, settings, issues)
        try:
            routes.append(inbound_grpc_route(route, authzs))
        except (httproutes.InvalidRouteError, ValueError, TypeError) as exc:
            issues.add(f"{_describe(route)} skipped: {exc}")
    return routes


def _describe(route: Mapping[str, Any]) -> str:
    m = meta(route)
    return f"{httproutes.route_kind(route)} {m.get('namespace')}/{m.get('name')}"


_PROTOCOLS = {
    "HTTP/1": "http1",
    "HTTP/2": "http2",
    "gRPC": "grpc",
    "opaque": "opaque",
    "TLS": "tls",
}


def inbound_server(
    pod: Mapping[str, Any],
    port: int,
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> inbound_pb2.Server:
    """The policy the pod's proxy enforces on ``port``."""
    return workload_inbound_server(pod_workload(pod, settings), port, lookups, settings, issues)


def workload_inbound_server(
    workload: InboundWorkload,
    port: int,
    lookups: PolicyLookups,
    settings: DestinationSettings,
    issues: Issues,
) -> inbound_pb2.Server:
    """The policy the proxy of ``workload`` (a pod or an ExternalWorkload) enforces on
    ``port``."""
    obj = workload.obj
    ns = str(meta(obj).get("namespace"))
    server = workload_server(
        labels_of(obj),
        workload.selector_field,
        workload.named_ports,
        port,
        lookups.servers(ns),
        issues,
    )
    if server is None:
        policy = default_policy(
            obj,
            port,
            lookups.namespace(ns),
            settings,
            issues,
            named_ports=workload.named_ports,
            kind=workload.kind,
        )
        authzs = default_authzs(policy, settings)
        out = inbound_pb2.Server(authorizations=authzs)
        out.labels.update({"group": "", "kind": "default", "name": policy})
        if workload.opaque_ports.contains(port, workload.named_ports):
            out.protocol.opaque.SetInParent()
        else:
            out.protocol.CopyFrom(_detect(_default_routes(workload, port, authzs, settings)))
        return out
    sm = meta(server)
    name = str(sm.get("name"))
    authzs = server_authorization_authzs(server, lookups, settings, issues)
    authzs += _authzs_for("server", name, ns, lookups, settings, issues)
    access = (server.get("spec") or {}).get("accessPolicy")
    if access and access != "deny":
        if access in DEFAULT_POLICIES:
            authzs = authzs + default_authzs(access, settings)
        else:
            issues.add(f"Server {ns}/{name}: unknown accessPolicy {access!r}")
    out = inbound_pb2.Server(authorizations=authzs)
    out.labels.update({"group": httproutes.POLICY_GROUP, "kind": "server", "name": name})
    proto = (server.get("spec") or {}).get("proxyProtocol") or "unknown"
    kind = _PROTOCOLS.get(proto)
    if kind in ("opaque", "tls"):
        getattr(out.protocol, kind).SetInParent()
        return out
    limit = server_rate_limit(server, lookups, settings, issues)
    if kind == "grpc":
        if limit is not None:
            issues.add(
                f"Server {ns}/{name}: HTTPLocalRateLimitPolicy is not enforced for gRPC "
                "Servers (the inbound policy API has no rate limit for them)"
            )
        out.protocol.grpc.SetInParent()
        out.protocol.grpc.routes.extend(_server_grpc_routes(server, lookups, settings, issues))
        return out
    routes = _server_routes(server, workload, port, authzs, lookups, settings, issues)
    if kind in ("http1", "http2"):
        http = getattr(out.protocol, kind)
        http.routes.extend(routes)
        if limit is not None:
            http.local_rate_limit.CopyFrom(limit)
    else:
        if proto != "unknown":
            issues.add(f"Server {ns}/{name}: unknown proxyProtocol {proto!r}; detecting")
        out.protocol.CopyFrom(_detect(routes))
        if limit is not None:
            out.protocol.detect.http_local_rate_limit.CopyFrom(limit)
    return out
