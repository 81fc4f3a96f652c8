"""From Kubernetes objects to the endpoint set of one service port (pure).

The result is a mapping ``(ip, port) -> Endpoint`` holding everything Linkerd sends for an
address: metric labels, TLS identity of meshed pods, protocol hint, opaque transport port,
authority override and weight (linkerd-wire.md §3.1). :mod:`gossamer_destination.wire`
turns an :class:`Endpoint` into a ``WeightedAddr``; :mod:`gossamer_destination.diff`
compares two sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gossamer_destination.ports import PortSet, container_ports, lenient_port_set
from gossamer_destination.settings import DestinationSettings

KubeObject = dict[str, Any]
Addr = tuple[str, int]

CONTROL_PLANE_NS_LABEL = "linkerd.io/control-plane-ns"
OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports"
SKIP_INBOUND_PORTS_ANNOTATION = "config.linkerd.io/skip-inbound-ports"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REMOTE_SVC_FQ_NAME = "mirror.linkerd.io/remote-svc-fq-name"
REMOTE_GATEWAY_IDENTITY = "mirror.linkerd.io/remote-gateway-identity"
ZONE_LABEL = "topology.kubernetes.io/zone"
PROXY_CONTAINER = "linkerd-proxy"
DEFAULT_WEIGHT = 10000
DEFAULT_INBOUND_PORT = 4143
DEFAULT_ADMIN_PORT = 4191
DEFAULT_CONTROL_PORT = 4190


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of a service port and the metadata the proxy needs to reach it."""

    ip: str
    port: int
    labels: tuple[tuple[str, str], ...] = ()
    identity: str | None = None
    """DNS-like TLS identity; set only for pods meshed by this control plane."""
    hint: str | None = None
    """``"h2"`` or ``"opaque"`` for meshed pods."""
    opaque_transport_port: int | None = None
    """The target proxy's inbound port, when the transport header is used."""
    http2: bool = False
    """Whether to send the meshed HTTP/2 client parameters."""
    authority_override: str | None = None
    weight: int = DEFAULT_WEIGHT
    hostname: str | None = None
    """The endpoint's hostname (StatefulSet pods); used to filter, never sent."""
    node: str | None = None
    """Node the endpoint runs on (for internalTrafficPolicy: Local); never sent."""
    zone: str = ""
    uri_identity: bool = False
    """``identity`` is a SPIFFE URI (an ExternalWorkload), sent as ``uri_like_identity``."""
    server_name: str | None = None
    """The TLS server name when it is not the identity itself (ExternalWorkloads)."""

    @property
    def addr(self) -> Addr:
        return (self.ip, self.port)


@dataclass(frozen=True)
class Lookups:
    """What the translation reads from the informer caches."""

    pod: Callable[[str, str], KubeObject | None]
    """``(namespace, name)`` -> Pod."""
    node_zone: Callable[[str], str]
    """Node name -> its ``topology.kubernetes.io/zone`` label (``""`` if unknown)."""
    server_opaque: Callable[[KubeObject, int], bool]
    """Whether a Server with ``proxyProtocol: opaque`` selects this pod port."""
    external_workload: Callable[[str, str, str, int], Endpoint | None] = (
        lambda namespace, name, ip, port: None
    )
    """``(namespace, name, ip, port)`` -> the endpoint of a ready, valid ExternalWorkload
    (for EndpointSlices that Linkerd's external-workload controller wrote)."""


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return meta(obj).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return meta(obj).get("annotations") or {}


# -- service port resolution -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetPort:
    """How to find a service port's endpoints in EndpointSlices.

    EndpointSlice ports carry the *service* port's name and the resolved target port number,
    so a named Service port is matched by name (this is how named target ports resolve per
    pod); a port not listed in the Service (headless lookups) is matched by number.
    """

    service_port_name: str | None
    number: int | None


def target_port(service: Mapping[str, Any], port: int) -> TargetPort | None:
    """``None`` when the Service defines ports and ``port`` is none of them."""
    ports = (service.get("spec") or {}).get("ports") or []
    for sp in ports:
        if sp.get("port") == port:
            tp = sp.get("targetPort")
            number = tp if isinstance(tp, int) else (port if tp is None else None)
            return TargetPort(str(sp.get("name") or ""), number)
    if not ports or is_headless(service):
        return TargetPort(None, port)
    return None


def is_headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def is_external_name(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("type") == "ExternalName"


# -- endpoint slices ---------------------------------------------------------------------------


def slice_port(endpoint_slice: Mapping[str, Any], target: TargetPort) -> int | None:
    for p in endpoint_slice.get("ports") or ():
        if target.service_port_name is not None:
            if str(p.get("name") or "") == target.service_port_name and p.get("port"):
                return int(p["port"])
        elif p.get("port") == target.number:
            return target.number
    if target.service_port_name is None and not endpoint_slice.get("ports"):
        return target.number
    return None


SliceEntry = tuple[Endpoint, str | None, str]
"""An endpoint, the name of its pod (if any) and its address family."""


class SliceCache:
    """Translated endpoints per EndpointSlice, reused while nothing they depend on changed.

    The stamp is the slice's resourceVersion, the resolved target port and a generation the
    caller bumps whenever pods, Servers or Nodes that feed the translation change; a change
    to one slice of a large service then re-translates only that slice.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[object, list[SliceEntry]]] = {}

    def lookup(self, key: tuple[str, str], stamp: object) -> list[SliceEntry] | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == stamp else None

    def store(self, key: tuple[str, str], stamp: object, entries: list[SliceEntry]) -> None:
        self._entries[key] = (stamp, entries)

    def retain(self, keys: set[tuple[str, str]]) -> None:
        for key in [k for k in self._entries if k not in keys]:
            del self._entries[key]


def service_endpoints(
    service: Mapping[str, Any],
    port: int,
    slices: Iterable[Mapping[str, Any]],
    lookups: Lookups,
    settings: DestinationSettings,
    *,
    cache: SliceCache | None = None,
    generation: object = None,
    foreign_workloads: set[tuple[str, str]] | None = None,
) -> dict[Addr, Endpoint]:
    """The ready endpoints of ``service`` on ``port``, from its EndpointSlices.

    An entry naming an ExternalWorkload that is missing, not Ready or invalid is left out
    (never served as a plain endpoint without its identity). ExternalWorkloads named in
    another namespace than the service's are added to ``foreign_workloads`` (the caller
    watches them; the service namespace's own changes are its generation), and slices
    naming them are not cached.
    """
    target = target_port(service, port)
    if target is None:
        return {}
    namespace = str(meta(service).get("namespace") or "")
    found: dict[Addr, Endpoint] = {}
    families = {"IPv4", "IPv6"} if settings.enable_ipv6 else {"IPv4"}
    by_pod: dict[str, dict[str, Addr]] = {}
    seen: set[tuple[str, str]] = set()
    for es in slices:
        family = str(es.get("addressType", "IPv4"))
        if family not in families:
            continue
        number = slice_port(es, target)
        if number is None:
            continue
        es_meta = meta(es)
        key = (str(es_meta.get("namespace") or ""), str(es_meta.get("name") or ""))
        stamp = (es_meta.get("resourceVersion"), number, generation)
        seen.add(key)
        entries = cache.lookup(key, stamp) if cache is not None and stamp[0] else None
        if entries is None:
            foreign: set[tuple[str, str]] = set()
            entries = _slice_entries(namespace, number, es, family, lookups, settings, foreign)
            if foreign_workloads is not None:
                foreign_workloads |= foreign
            if cache is not None and stamp[0] and not foreign:
                cache.store(key, stamp, entries)
        for endpoint, pod_name, fam in entries:
            found[endpoint.addr] = endpoint
            if pod_name is not None:
                by_pod.setdefault(pod_name, {})[fam] = endpoint.addr
    if cache is not None:
        cache.retain(seen)
    if settings.enable_ipv6:
        # Dual-stack pods appear once per family; keep the IPv6 address.
        for family_addrs in by_pod.values():
            if "IPv4" in family_addrs and "IPv6" in family_addrs:
                found.pop(family_addrs["IPv4"], None)
    return found


def _slice_entries(
    namespace: str,
    number: int,
    es: Mapping[str, Any],
    family: str,
    lookups: Lookups,
    settings: DestinationSettings,
    foreign_workloads: set[tuple[str, str]],
) -> list[SliceEntry]:
    annotations = annotations_of(es)
    out: list[SliceEntry] = []
    for ep in es.get("endpoints") or ():
        conditions = ep.get("conditions") or {}
        if conditions.get("ready") is False:
            continue
        ref = ep.get("targetRef") or {}
        if ref.get("kind") == "ExternalWorkload":
            ref_namespace = str(ref.get("namespace") or namespace)
            if ref_namespace != namespace:
                foreign_workloads.add((ref_namespace, str(ref.get("name"))))
        for ip in (ep.get("addresses") or ())[:1]:
            endpoint = _endpoint(namespace, str(ip), number, ep, annotations, lookups, settings)
            if endpoint is None:
                continue
            pod_name = str(ref.get("name")) if ref.get("kind") == "Pod" else None
            out.append((endpoint, pod_name, family))
    return out


def _endpoint(
    namespace: str,
    ip: str,
    port: int,
    ep: Mapping[str, Any],
    annotations: Mapping[str, str],
    lookups: Lookups,
    settings: DestinationSettings,
) -> Endpoint | None:
    """``None`` for an entry that must not be served (see :func:`service_endpoints`)."""
    hostname = ep.get("hostname")
    node = ep.get("nodeName")
    ref = ep.get("targetRef") or {}
    zone = str(ep.get("zone") or (lookups.node_zone(str(node)) if node else ""))
    if ref.get("kind") == "Pod":
        pod = lookups.pod(str(ref.get("namespace") or namespace), str(ref.get("name")))
        if pod is not None:
            built = pod_endpoint(pod, ip, port, lookups, settings, zone=zone)
            return _with(built, hostname=hostname, node=node)
        return Endpoint(ip, port, (("zone", zone),), hostname=hostname, node=node, zone=zone)
    if ref.get("kind") == "ExternalWorkload":
        workload = lookups.external_workload(
            str(ref.get("namespace") or namespace), str(ref.get("name")), ip, port
        )
        if workload is None:
            return None  # a meshed VM: never an endpoint without its identity
        return _with(workload, hostname=hostname, node=node)
    override = annotations.get(REMOTE_SVC_FQ_NAME)
    gateway_identity = annotations.get(REMOTE_GATEWAY_IDENTITY)
    if override:
        return Endpoint(
            ip,
            port,
            (("zone", zone),),
            identity=gateway_identity or None,
            hint="h2" if gateway_identity else None,
            http2=bool(gateway_identity),
            authority_override=f"{override}:{port}",
            hostname=hostname,
            node=node,
            zone=zone,
        )
    return Endpoint(ip, port, (("zone", zone),), hostname=hostname, node=node, zone=zone)


def _with(e: Endpoint, *, hostname: Any, node: Any) -> Endpoint:
    return Endpoint(
        e.ip,
        e.port,
        e.labels,
        e.identity,
        e.hint,
        e.opaque_transport_port,
        e.http2,
        e.authority_override,
        e.weight,
        str(hostname) if hostname else None,
        str(node) if node else e.node,
        e.zone,
        e.uri_identity,
        e.server_name,
    )


# -- pods --------------------------------------------------------------------------------------


def pod_endpoint(
    pod: Mapping[str, Any],
    ip: str,
    port: int,
    lookups: Lookups,
    settings: DestinationSettings,
    *,
    zone: str | None = None,
) -> Endpoint:
    """The endpoint for one pod address, with Linkerd's labels, identity and hints."""
    m = meta(pod)
    labels = labels_of(pod)
    annotations = annotations_of(pod)
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if zone is None:
        zone = lookups.node_zone(str(node)) if node else ""
    metric_labels = pod_metric_labels(pod, zone)
    ctl_ns = labels.get(CONTROL_PLANE_NS_LABEL)
    skip = lenient_port_set(annotations.get(SKIP_INBOUND_PORTS_ANNOTATION), PortSet())
    named = container_ports(pod)
    if not ctl_ns or skip.contains(port, named):
        return Endpoint(ip, port, metric_labels, node=node, zone=zone)
    opaque = pod_opaque_ports(pod, settings).contains(port, named) or lookups.server_opaque(
        dict(pod), port
    )
    hint = "opaque" if opaque else ("h2" if settings.enable_h2_upgrade else None)
    proxy = proxy_ports(pod)
    transport_port = None
    if (opaque or settings.transport_header) and port not in (proxy.admin, proxy.control):
        transport_port = proxy.inbound
    identity = None
    if ctl_ns == settings.controller_namespace and settings.trust_domain:
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        identity = (
            f"{sa}.{m.get('namespace')}.serviceaccount.identity."
            f"{settings.controller_namespace}.{settings.trust_domain}"
        )
    return Endpoint(
        ip,
        port,
        metric_labels,
        identity=identity,
        hint=hint,
        opaque_transport_port=transport_port,
        http2=True,
        node=node,
        zone=zone,
    )


def pod_opaque_ports(pod: Mapping[str, Any], settings: DestinationSettings) -> PortSet:
    return lenient_port_set(
        annotations_of(pod).get(OPAQUE_PORTS_ANNOTATION), settings.default_opaque_ports
    )


@dataclass(frozen=True, slots=True)
class ProxyPorts:
    inbound: int = DEFAULT_INBOUND_PORT
    admin: int = DEFAULT_ADMIN_PORT
    control: int = DEFAULT_CONTROL_PORT


def proxy_ports(pod: Mapping[str, Any]) -> ProxyPorts:
    """The injected proxy's listen ports, from its container environment."""
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        if container.get("name") != PROXY_CONTAINER:
            continue
        env = {e.get("name"): e.get("value") for e in container.get("env") or ()}
        return ProxyPorts(
            _listen_port(env.get("LINKERD2_PROXY_INBOUND_LISTEN_ADDR"), DEFAULT_INBOUND_PORT),
            _listen_port(env.get("LINKERD2_PROXY_ADMIN_LISTEN_ADDR"), DEFAULT_ADMIN_PORT),
            _listen_port(env.get("LINKERD2_PROXY_CONTROL_LISTEN_ADDR"), DEFAULT_CONTROL_PORT),
        )
    return ProxyPorts()


def _listen_port(value: Any, default: int) -> int:
    if not isinstance(value, str):
        return default
    first = value.split(",")[0].strip()
    _, _, port = first.rpartition(":")
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else default


_OWNER_LABELS = {
    "Deployment": "deployment",
    "ReplicaSet": "replicaset",
    "StatefulSet": "statefulset",
    "DaemonSet": "daemonset",
    "ReplicationController": "replicationcontroller",
    "CronJob": "cronjob",
    "Job": "k8s_job",
}


def owner(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(label, name)`` of the pod's controller, resolving ReplicaSets to Deployments.

    A ReplicaSet created by a Deployment is named ``<deployment>-<pod-template-hash>``; the
    injector's ``linkerd.io/proxy-deployment`` label says the same when present.
    """
    labels = labels_of(pod)
    for ref in meta(pod).get("ownerReferences") or ():
        if not ref.get("controller"):
            continue
        kind, name = str(ref.get("kind")), str(ref.get("name"))
        if kind == "ReplicaSet":
            deployment = labels.get("linkerd.io/proxy-deployment")
            pth = labels.get("pod-template-hash")
            if deployment:
                return ("deployment", deployment)
            if pth and name.endswith("-" + pth):
                return ("deployment", name[: -len(pth) - 1])
        label = _OWNER_LABELS.get(kind, kind.lower())
        return (label, name)
    return None


def pod_metric_labels(pod: Mapping[str, Any], zone: str) -> tuple[tuple[str, str], ...]:
    m = meta(pod)
    labels = labels_of(pod)
    spec = pod.get("spec") or {}
    out: dict[str, str] = {"pod": str(m.get("name") or "")}
    own = owner(pod)
    if own is not None:
        out[own[0]] = own[1]
    out["serviceaccount"] = str(spec.get("serviceAccountName") or "default")
    ctl = labels.get(CONTROL_PLANE_NS_LABEL)
    if ctl:
        out["control_plane_ns"] = ctl
    pth = labels.get("pod-template-hash")
    if pth:
        out["pod_template_hash"] = pth
    out["zone"] = zone
    return tuple(sorted(out.items()))


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or () if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def filter_endpoints(
    endpoints: Mapping[Addr, Endpoint],
    *,
    hostname: str | None = None,
    node: str | None = None,
) -> dict[Addr, Endpoint]:
    """Per-subscriber filters: the ``<hostname>.`` authority prefix and node-local traffic."""
    if hostname is None and node is None:
        return dict(endpoints)
    return {
        a: e
        for a, e in endpoints.items()
        if (hostname is None or e.hostname == hostname) and (node is None or e.node == node)
    }
