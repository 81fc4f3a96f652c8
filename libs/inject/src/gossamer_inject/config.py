"""Mesh-wide defaults plus a pod's ``config.linkerd.io/*`` overrides → one typed ProxyConfig.

:class:`MeshValues` is what an installation chose (control-plane namespace, trust anchors,
images, defaults); :func:`resolve` layers a pod's annotations on top and validates every
value, raising :class:`~gossamer_inject.errors.ConfigError` for the first bad one. Nothing
here touches the pod spec: that is :mod:`gossamer_inject.patch`'s job.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gossamer_inject import annotations as a
from gossamer_inject.errors import ConfigError
from gossamer_inject.values import (
    PortRange,
    format_duration,
    parse_bool,
    parse_cidrs,
    parse_duration,
    parse_int,
    parse_port,
    parse_port_ranges,
    parse_quantity,
)

__version__ = "0.1.0"

DEFAULT_OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211"
DEFAULT_CLUSTER_NETWORKS = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
DEFAULT_LOG_LEVEL = "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off"
INBOUND_POLICIES = frozenset(
    {
        "all-unauthenticated",
        "all-authenticated",
        "cluster-unauthenticated",
        "cluster-authenticated",
        "deny",
        "audit",
    }
)
PULL_POLICIES = frozenset({"Always", "IfNotPresent", "Never"})
IPTABLES_MODES = frozenset({"legacy", "nft", "plain"})


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshValues:
    """What an installation decided; the injector's starting point for every pod.

    The defaults are Linkerd 2.20's (linkerd-wire.md §4.3) with Gossamer's product names.
    """

    control_plane_namespace: str = "gossamer"
    trust_domain: str = "cluster.local"
    cluster_domain: str = "cluster.local"
    #: PEM text of the trust anchors, put verbatim into LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS.
    trust_anchors_pem: str = ""
    version: str = __version__
    proxy_image: str = "gossamer/proxy"
    init_image: str = "gossamer/proxy-init"
    #: Tag of the proxy-init image. None means ``version``: the two images are released
    #: together, but a registry may carry a proxy-init build of its own (a hotfix, a mirror).
    init_version: str | None = None
    init_command: tuple[str, ...] = ("python", "-m", "gossamer_proxy_init")
    #: postStart hook that holds the app containers until the proxy is ready (non-native mode).
    await_command: tuple[str, ...] = ("gossamer-await", "--timeout=2m", "--port=4191")
    image_pull_policy: str = "IfNotPresent"
    iptables_mode: str = "nft"
    disable_ipv6: bool = True
    native_sidecar: bool = True
    #: Name the control plane's identities so proxies reach it over TLS. Without it (an
    #: unmeshed control plane, tests only) the *_SVC_NAME variables are left out: plaintext.
    control_plane_tls: bool = True
    proxy_await: bool = True
    inbound_port: int = 4143
    outbound_port: int = 4140
    admin_port: int = 4191
    control_port: int = 4190
    #: The viz tap service's identity: proxies let it (and only it) tap them on the control
    #: port, as Linkerd's viz tap-injector arranges. Empty: tap stays off.
    tap_svc_name: str = ""
    proxy_uid: int = 2102
    proxy_gid: int | None = None
    skip_inbound_ports: str = "4567,4568"
    skip_outbound_ports: str = "4567,4568"
    skip_subnets: str = ""
    opaque_ports: str = DEFAULT_OPAQUE_PORTS
    cluster_networks: str = DEFAULT_CLUSTER_NETWORKS
    default_inbound_policy: str = "all-unauthenticated"
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = "plain"
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    identity_port: int = 8080
    destination_port: int = 8086
    policy_port: int = 8090
    #: Mesh-wide trace collector ``host:port`` (None: proxies trace only where the
    #: ``config.linkerd.io/trace-collector`` annotation names one).
    trace_collector: str | None = None
    #: The collector's service account, for its identity (linkerd-jaeger's default).
    trace_collector_service_account: str = "collector"

    @property
    def init_tag(self) -> str:
        """The proxy-init image tag this installation uses (``version`` unless set apart)."""
        return self.version if self.init_version is None else self.init_version

    @property
    def identity_svc_addr(self) -> str:
        return f"gossamer-identity.{self._svc_suffix}:{self.identity_port}"

    @property
    def destination_svc_addr(self) -> str:
        return f"gossamer-dst.{self._svc_suffix}:{self.destination_port}"

    @property
    def policy_svc_addr(self) -> str:
        # The destination service also serves the policy APIs (design.md §1).
        return f"gossamer-dst.{self._svc_suffix}:{self.policy_port}"

    @property
    def identity_svc_name(self) -> str:
        return self.control_plane_identity("gossamer-identity")

    @property
    def destination_svc_name(self) -> str:
        return self.control_plane_identity("gossamer-destination")

    def control_plane_identity(self, service_account: str) -> str:
        ns = self.control_plane_namespace
        return f"{service_account}.{ns}.serviceaccount.identity.{ns}.{self.trust_domain}"

    @property
    def _svc_suffix(self) -> str:
        return f"{self.control_plane_namespace}.svc.{self.cluster_domain}"

    @property
    def trust_root_sha256(self) -> str:
        return hashlib.sha256(self.trust_anchors_pem.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests and limits for the proxy container, already validated."""

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    #: LINKERD2_PROXY_CORES derived from the CPU limit (rounded up), if any.
    cores: int | None = None
    cores_max_ratio: str | None = None

    def as_dict(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.limits:
            out["limits"] = dict(self.limits)
        if self.requests:
            out["requests"] = dict(self.requests)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """Everything needed to render one pod's proxy and proxy-init containers."""

    mesh: MeshValues
    ingress: bool
    proxy_image: str
    proxy_version: str
    init_image: str
    init_version: str
    image_pull_policy: str
    inbound_port: int
    outbound_port: int
    admin_port: int
    control_port: int
    proxy_uid: int
    proxy_gid: int | None
    pod_inbound_ports: str | None
    skip_inbound_ports: tuple[PortRange, ...]
    skip_outbound_ports: tuple[PortRange, ...]
    skip_subnets: tuple[str, ...]
    #: The opaque-ports text (named ports allowed), resolved against a pod later.
    opaque_ports: str
    resources: Resources
    log_level: str
    log_format: str
    log_http_headers: str | None
    access_log: str | None
    enable_external_profiles: bool
    default_inbound_policy: str
    require_identity_inbound_ports: str | None
    metrics_hostname_labels: bool
    outbound_connect_timeout: str
    inbound_connect_timeout: str
    outbound_discovery_idle_timeout: str
    inbound_discovery_idle_timeout: str
    disable_outbound_detect_timeout: bool
    disable_inbound_detect_timeout: bool
    proxy_await: bool
    close_wait_timeout_secs: int | None
    shutdown_grace_period: str | None
    native_sidecar: bool
    additional_env: tuple[Mapping[str, Any], ...]
    enable_gateway: bool
    admin_shutdown: bool
    wait_before_exit_seconds: int | None
    iptables_mode: str
    disable_ipv6: bool
    #: OTLP collector ``host:port`` (None: tracing off) and its mesh identity.
    trace_collector: str | None = None
    trace_collector_identity: str | None = None


def resolve(mesh: MeshValues, annotations: Mapping[str, str], *, ingress: bool) -> ProxyConfig:
    """Apply override annotations to the mesh defaults, validating each value."""
    get = annotations.get

    def port(key: str, default: int) -> int:
        value = get(key)
        return default if value is None else parse_port(key, value)

    def flag(key: str, default: bool) -> bool:
        value = get(key)
        return default if value is None else parse_bool(key, value)

    def duration(key: str, default: str) -> str:
        value = get(key)
        if value is None:
            return default
        return format_duration(parse_duration(key, value))

    version = get(a.PROXY_VERSION_OVERRIDE, mesh.version)
    pull_policy = get(a.IMAGE_PULL_POLICY, mesh.image_pull_policy)
    if pull_policy not in PULL_POLICIES:
        raise ConfigError(
            a.IMAGE_PULL_POLICY, pull_policy, "expected Always, IfNotPresent or Never"
        )
    policy = get(a.DEFAULT_INBOUND_POLICY, mesh.default_inbound_policy)
    if policy not in INBOUND_POLICIES:
        raise ConfigError(
            a.DEFAULT_INBOUND_POLICY,
            policy,
            f"expected one of {', '.join(sorted(INBOUND_POLICIES))}",
        )
    log_format = get(a.PROXY_LOG_FORMAT, mesh.log_format)
    if log_format not in ("plain", "json"):
        raise ConfigError(a.PROXY_LOG_FORMAT, log_format, "expected plain or json")
    log_level = get(a.PROXY_LOG_LEVEL, mesh.log_level)
    if not log_level.strip():
        raise ConfigError(a.PROXY_LOG_LEVEL, log_level, "must not be empty")
    headers = get(a.PROXY_LOG_HTTP_HEADERS)
    if headers is not None and headers not in ("off", "insecure"):
        raise ConfigError(a.PROXY_LOG_HTTP_HEADERS, headers, "expected off or insecure")
    access_log = get(a.ACCESS_LOG)
    if access_log is not None and access_log not in ("apache", "json"):
        raise ConfigError(a.ACCESS_LOG, access_log, "expected apache or json")
    await_value = get(a.PROXY_AWAIT)
    proxy_await = (
        mesh.proxy_await if await_value is None else parse_bool(a.PROXY_AWAIT, await_value)
    )

    uid_text = get(a.PROXY_UID)
    proxy_uid = mesh.proxy_uid if uid_text is None else parse_int(a.PROXY_UID, uid_text, minimum=1)
    gid_text = get(a.PROXY_GID)
    proxy_gid = mesh.proxy_gid if gid_text is None else parse_int(a.PROXY_GID, gid_text, minimum=1)

    pod_inbound = get(a.POD_INBOUND_PORTS)
    if pod_inbound is not None:
        parse_port_ranges(a.POD_INBOUND_PORTS, pod_inbound)
    require_identity = get(a.REQUIRE_IDENTITY_INBOUND_PORTS)
    if require_identity is not None:
        parse_port_ranges(a.REQUIRE_IDENTITY_INBOUND_PORTS, require_identity)
    opaque = get(a.OPAQUE_PORTS, mesh.opaque_ports)
    parse_port_ranges(a.OPAQUE_PORTS, opaque, names={})

    close_wait = get(a.CLOSE_WAIT_TIMEOUT)
    close_wait_secs = None
    if close_wait is not None:
        close_wait_secs = int(parse_duration(a.CLOSE_WAIT_TIMEOUT, close_wait))
    shutdown_grace = get(a.SHUTDOWN_GRACE_PERIOD)
    if shutdown_grace is not None:
        shutdown_grace = format_duration(parse_duration(a.SHUTDOWN_GRACE_PERIOD, shutdown_grace))
    wait_exit = get(a.WAIT_BEFORE_EXIT_SECONDS)
    wait_before_exit = (
        None
        if wait_exit is None
        else parse_int(a.WAIT_BEFORE_EXIT_SECONDS, wait_exit, minimum=0, maximum=3600)
    )

    return ProxyConfig(
        mesh=mesh,
        ingress=ingress,
        proxy_image=_image(a.PROXY_IMAGE, get(a.PROXY_IMAGE, mesh.proxy_image)),
        proxy_version=_tag(a.PROXY_VERSION_OVERRIDE, version),
        init_image=_image(a.INIT_IMAGE, get(a.INIT_IMAGE, mesh.init_image)),
        init_version=_tag(a.INIT_IMAGE_VERSION, get(a.INIT_IMAGE_VERSION, mesh.init_tag)),
        image_pull_policy=pull_policy,
        inbound_port=port(a.INBOUND_PORT, mesh.inbound_port),
        outbound_port=port(a.OUTBOUND_PORT, mesh.outbound_port),
        admin_port=port(a.ADMIN_PORT, mesh.admin_port),
        control_port=port(a.CONTROL_PORT, mesh.control_port),
        proxy_uid=proxy_uid,
        proxy_gid=proxy_gid,
        pod_inbound_ports=pod_inbound,
        skip_inbound_ports=parse_port_ranges(
            a.SKIP_INBOUND_PORTS, get(a.SKIP_INBOUND_PORTS, mesh.skip_inbound_ports)
        ),
        skip_outbound_ports=parse_port_ranges(
            a.SKIP_OUTBOUND_PORTS, get(a.SKIP_OUTBOUND_PORTS, mesh.skip_outbound_ports)
        ),
        skip_subnets=parse_cidrs(a.SKIP_SUBNETS, get(a.SKIP_SUBNETS, mesh.skip_subnets)),
        opaque_ports=opaque,
        resources=_resources(mesh, annotations),
        log_level=log_level,
        log_format=log_format,
        log_http_headers=headers,
        access_log=access_log,
        enable_external_profiles=flag(a.ENABLE_EXTERNAL_PROFILES, False),
        default_inbound_policy=policy,
        require_identity_inbound_ports=require_identity,
        metrics_hostname_labels=flag(a.METRICS_HOSTNAME_LABELS, False),
        outbound_connect_timeout=duration(a.OUTBOUND_CONNECT_TIMEOUT, "1000ms"),
        inbound_connect_timeout=duration(a.INBOUND_CONNECT_TIMEOUT, "100ms"),
        outbound_discovery_idle_timeout=duration(a.OUTBOUND_DISCOVERY_CACHE_UNUSED_TIMEOUT, "5s"),
        inbound_discovery_idle_timeout=duration(a.INBOUND_DISCOVERY_CACHE_UNUSED_TIMEOUT, "90s"),
        disable_outbound_detect_timeout=flag(a.DISABLE_OUTBOUND_DETECT_TIMEOUT, False),
        disable_inbound_detect_timeout=flag(a.DISABLE_INBOUND_DETECT_TIMEOUT, False),
        proxy_await=proxy_await,
        close_wait_timeout_secs=close_wait_secs,
        shutdown_grace_period=shutdown_grace,
        native_sidecar=_native_sidecar(mesh, annotations),
        additional_env=_additional_env(get(a.ADDITIONAL_ENV)),
        enable_gateway=flag(a.ENABLE_GATEWAY, False),
        admin_shutdown=flag(a.ADMIN_SHUTDOWN, False),
        wait_before_exit_seconds=wait_before_exit,
        iptables_mode=mesh.iptables_mode,
        disable_ipv6=mesh.disable_ipv6,
        **_trace_collector(mesh, annotations),
    )


def _trace_collector(mesh: MeshValues, annotations: Mapping[str, str]) -> dict[str, str | None]:
    """The collector address and identity, as the linkerd-jaeger injector derives them.

    The identity's namespace is the collector host's second label
    (``collector.linkerd-jaeger:55678`` → ``linkerd-jaeger``), its service account the
    ``config.alpha.linkerd.io/trace-collector-service-account`` annotation or the mesh
    default (``collector``).
    """
    addr = annotations.get(a.TRACE_COLLECTOR, mesh.trace_collector)
    if addr is None:
        return {"trace_collector": None, "trace_collector_identity": None}
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(a.TRACE_COLLECTOR, addr, "expected host:port")
    if any(c.isspace() for c in host):
        raise ConfigError(a.TRACE_COLLECTOR, addr, "expected host:port")
    account = annotations.get(
        a.TRACE_COLLECTOR_SERVICE_ACCOUNT, mesh.trace_collector_service_account
    )
    if not account or not all(c.isalnum() or c in "-." for c in account):
        raise ConfigError(a.TRACE_COLLECTOR_SERVICE_ACCOUNT, account, "not a service account name")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        labels = host.split(".")
        # A bare service name is in the pod's own namespace, expanded by the kubelet.
        namespace = labels[1] if len(labels) > 1 else "$(_pod_ns)"
        identity: str | None = (
            f"{account}.{namespace}.serviceaccount.identity."
            f"{mesh.control_plane_namespace}.{mesh.trust_domain}"
        )
    else:
        identity = None  # an IP names no service, so no identity to expect: plaintext
    return {"trace_collector": addr.strip(), "trace_collector_identity": identity}


def _native_sidecar(mesh: MeshValues, annotations: Mapping[str, str]) -> bool:
    # The GA annotation wins over the deprecated alpha/beta spellings.
    for key in (a.NATIVE_SIDECAR, a.NATIVE_SIDECAR_BETA, a.NATIVE_SIDECAR_ALPHA):
        value = annotations.get(key)
        if value is not None:
            return parse_bool(key, value)
    return mesh.native_sidecar


def _image(key: str, image: str) -> str:
    if not image or any(c.isspace() for c in image) or "@" in image:
        raise ConfigError(key, image, "not an image name (give the repository, without a tag)")
    return image


def _tag(key: str, tag: str) -> str:
    if not tag or len(tag) > 128 or not all(c.isalnum() or c in "._-" for c in tag):
        raise ConfigError(key, tag, "not a valid image tag")
    return tag


def _resources(mesh: MeshValues, annotations: Mapping[str, str]) -> Resources:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    specs = (
        (a.PROXY_CPU_REQUEST, mesh.cpu_request, requests, "cpu"),
        (a.PROXY_MEMORY_REQUEST, mesh.memory_request, requests, "memory"),
        (a.PROXY_EPHEMERAL_STORAGE_REQUEST, None, requests, "ephemeral-storage"),
        (a.PROXY_CPU_LIMIT, mesh.cpu_limit, limits, "cpu"),
        (a.PROXY_MEMORY_LIMIT, mesh.memory_limit, limits, "memory"),
        (a.PROXY_EPHEMERAL_STORAGE_LIMIT, None, limits, "ephemeral-storage"),
    )
    parsed: dict[tuple[str, str], Decimal] = {}
    for key, default, target, resource in specs:
        value = annotations.get(key, default)
        if value is None:
            continue
        parsed[(resource, "limit" if target is limits else "request")] = parse_quantity(key, value)
        target[resource] = value
    for resource in ("cpu", "memory", "ephemeral-storage"):
        request, limit = parsed.get((resource, "request")), parsed.get((resource, "limit"))
        if request is not None and limit is not None and request > limit:
            raise ConfigError(
                f"proxy-{resource}-request",
                requests[resource],
                f"request exceeds the limit {limits[resource]}",
            )
    cores = None
    if (cpu_limit := parsed.get(("cpu", "limit"))) is not None:
        whole = int(cpu_limit.to_integral_value(rounding="ROUND_CEILING"))
        cores = max(1, whole)
    ratio = annotations.get(a.PROXY_CPU_RATIO_LIMIT)
    if ratio is not None:
        try:
            ratio_value = Decimal(ratio)
        except ArithmeticError as exc:
            raise ConfigError(a.PROXY_CPU_RATIO_LIMIT, ratio, "not a number") from exc
        if not (0 < ratio_value <= 1):
            raise ConfigError(a.PROXY_CPU_RATIO_LIMIT, ratio, "must be in (0, 1]")
    return Resources(requests=requests, limits=limits, cores=cores, cores_max_ratio=ratio)


def _additional_env(text: str | None) -> tuple[Mapping[str, Any], ...]:
    if text is None:
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(a.ADDITIONAL_ENV, text, f"not JSON: {exc.msg}") from exc
    if not isinstance(value, list):
        raise ConfigError(a.ADDITIONAL_ENV, text, "expected a JSON list of EnvVar objects")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(a.ADDITIONAL_ENV, text, "every entry needs a string 'name'")
        if "value" in item and not isinstance(item["value"], str):
            raise ConfigError(a.ADDITIONAL_ENV, text, f"value of {item['name']} must be a string")
    return tuple(value)
