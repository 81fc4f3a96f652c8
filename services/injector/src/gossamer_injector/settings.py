"""The injector's settings: flags override ``GOSSAMER_INJECTOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from gossamer_common.settings import (
    REQUIRED,
    SocketAddr,
    optional,
    parse_bool,
    parse_duration,
    parse_existing_file,
    parse_log_level,
    parse_path,
    parse_port,
    parse_socket_addr,
    parse_str,
    setting,
    settings_class,
)
from gossamer_inject import MeshValues
from gossamer_inject.config import DEFAULT_CLUSTER_NETWORKS, DEFAULT_OPAQUE_PORTS, __version__

_P = "GOSSAMER_INJECTOR_"


def _iptables_mode(text: str) -> str:
    if text not in ("nft", "legacy", "plain"):
        raise ValueError
    return text


def _image_tag(text: str) -> str:
    """Refuse at start-up a tag that every injected pod would then fail to pull."""
    if len(text) > 128 or not all(c.isalnum() or c in "._-" for c in text):
        raise ValueError
    return text


# Read by the settings loader for error messages and --help.
_image_tag.expected = "an image tag (letters, digits, '.', '_', '-'; at most 128)"  # type: ignore[attr-defined]


@settings_class
class InjectorSettings:
    listen: SocketAddr = setting(
        env=_P + "LISTEN",
        flag="--listen",
        default="0.0.0.0:8443",
        parse=parse_socket_addr,
        help="HTTPS address the apiserver sends AdmissionReviews to.",
    )
    admin_listen: SocketAddr = setting(
        env=_P + "ADMIN_LISTEN",
        flag="--admin-listen",
        default="0.0.0.0:9995",
        parse=parse_socket_addr,
        help="Plain-HTTP admin address (/metrics, /live, /ready).",
    )
    tls_cert_file: Path = setting(
        env=_P + "TLS_CERT_FILE",
        flag="--tls-cert-file",
        default=REQUIRED,
        parse=parse_path,
        help="PEM serving certificate (chain); reloaded when it changes.",
    )
    tls_key_file: Path = setting(
        env=_P + "TLS_KEY_FILE",
        flag="--tls-key-file",
        default=REQUIRED,
        parse=parse_path,
        help="PEM private key of the serving certificate.",
    )
    tls_reload_interval: float = setting(
        env=_P + "TLS_RELOAD_INTERVAL",
        flag="--tls-reload-interval",
        default="10s",
        parse=parse_duration,
        help="How often to look for a rotated certificate.",
    )
    trust_anchors_file: Path = setting(
        env=_P + "TRUST_ANCHORS_FILE",
        flag="--trust-anchors-file",
        default=REQUIRED,
        parse=parse_existing_file,
        help="PEM trust anchors handed to every proxy.",
    )
    kubeconfig: Path | None = setting(
        env="KUBECONFIG",
        flag="--kubeconfig",
        default=None,
        parse=optional(parse_path),
        help="kubeconfig for reading namespaces and owners (default: in-cluster).",
    )
    control_plane_namespace: str = setting(
        env=_P + "CONTROL_PLANE_NAMESPACE",
        flag="--control-plane-namespace",
        default="gossamer",
        parse=parse_str,
        help="Namespace of the Gossamer control plane.",
    )
    trust_domain: str = setting(
        env=_P + "TRUST_DOMAIN",
        flag="--trust-domain",
        default="cluster.local",
        parse=parse_str,
        help="Identity trust domain.",
    )
    cluster_domain: str = setting(
        env=_P + "CLUSTER_DOMAIN",
        flag="--cluster-domain",
        default="cluster.local",
        parse=parse_str,
        help="Kubernetes cluster DNS domain.",
    )
    proxy_image: str = setting(
        env=_P + "PROXY_IMAGE",
        flag="--proxy-image",
        default="gossamer/proxy",
        parse=parse_str,
        help="Proxy image repository (tag is the proxy version).",
    )
    init_image: str = setting(
        env=_P + "INIT_IMAGE",
        flag="--init-image",
        default="gossamer/proxy-init",
        parse=parse_str,
        help="proxy-init image repository.",
    )
    proxy_version: str = setting(
        env=_P + "PROXY_VERSION",
        flag="--proxy-version",
        default=__version__,
        parse=parse_str,
        help="Image tag of the proxy (and of proxy-init unless --init-version is given).",
    )
    init_version: str | None = setting(
        env=_P + "INIT_VERSION",
        flag="--init-version",
        default=None,
        parse=optional(_image_tag),
        help="Image tag of proxy-init; empty means the proxy version.",
    )
    native_sidecar: bool = setting(
        env=_P + "NATIVE_SIDECAR",
        flag="--native-sidecar",
        default="true",
        parse=parse_bool,
        help="Run proxies as native sidecars (init containers with restartPolicy Always).",
    )
    tap_svc_name: str = setting(
        env=_P + "TAP_SVC_NAME",
        flag="--tap-svc-name",
        default="",
        parse=str,
        help="The viz tap service's identity, allowed to tap injected proxies (empty: off).",
    )
    trace_collector: str = setting(
        env=_P + "TRACE_COLLECTOR",
        flag="--trace-collector",
        default="",
        parse=str,
        help="A mesh-wide OTLP trace collector host:port for every injected proxy (empty: "
        "only where config.linkerd.io/trace-collector is set on the namespace or pod).",
    )
    trace_collector_service_account: str = setting(
        env=_P + "TRACE_COLLECTOR_SERVICE_ACCOUNT",
        flag="--trace-collector-service-account",
        default="collector",
        parse=str,
        help="The collector's service account, for the identity proxies expect of it.",
    )
    control_plane_tls: bool = setting(
        env=_P + "CONTROL_PLANE_TLS",
        flag="--control-plane-tls",
        default="true",
        parse=parse_bool,
        help="Proxies reach the control plane over TLS, naming its identities "
        "(LINKERD2_PROXY_*_SVC_NAME). Off only for an unmeshed control plane on loopback "
        "(tests): linkerd2-proxy refuses a non-loopback *_SVC_ADDR without its *_SVC_NAME.",
    )
    proxy_await: bool = setting(
        env=_P + "PROXY_AWAIT",
        flag="--proxy-await",
        default="true",
        parse=parse_bool,
        help="Without native sidecars: hold app containers until the proxy is ready.",
    )
    iptables_mode: str = setting(
        env=_P + "IPTABLES_MODE",
        flag="--iptables-mode",
        default="nft",
        parse=_iptables_mode,
        help="proxy-init's iptables flavour: nft, legacy or plain.",
    )
    disable_ipv6: bool = setting(
        env=_P + "DISABLE_IPV6",
        flag="--disable-ipv6",
        default="true",
        parse=parse_bool,
        help="Leave ip6tables alone and listen on IPv4 only.",
    )
    opaque_ports: str = setting(
        env=_P + "OPAQUE_PORTS",
        flag="--opaque-ports",
        default=DEFAULT_OPAQUE_PORTS,
        parse=parse_str,
        help="Default opaque ports (protocol detection skipped).",
    )
    cluster_networks: str = setting(
        env=_P + "CLUSTER_NETWORKS",
        flag="--cluster-networks",
        default=DEFAULT_CLUSTER_NETWORKS,
        parse=parse_str,
        help="The cluster's pod networks.",
    )
    default_inbound_policy: str = setting(
        env=_P + "DEFAULT_INBOUND_POLICY",
        flag="--default-inbound-policy",
        default="all-unauthenticated",
        parse=parse_str,
        help="Proxies' default inbound policy.",
    )
    identity_port: int = setting(
        env=_P + "IDENTITY_PORT",
        flag="--identity-port",
        default="8080",
        parse=parse_port,
        help="Port of the identity service.",
    )
    destination_port: int = setting(
        env=_P + "DESTINATION_PORT",
        flag="--destination-port",
        default="8086",
        parse=parse_port,
        help="Port of the destination service.",
    )
    policy_port: int = setting(
        env=_P + "POLICY_PORT",
        flag="--policy-port",
        default="8090",
        parse=parse_port,
        help="Port of the policy service.",
    )
    namespace_cache_ttl: float = setting(
        env=_P + "NAMESPACE_CACHE_TTL",
        flag="--namespace-cache-ttl",
        default="5s",
        parse=parse_duration,
        help="How long a namespace's annotations are cached.",
    )
    namespace_cache_stale: float = setting(
        env=_P + "NAMESPACE_CACHE_STALE",
        flag="--namespace-cache-stale",
        default="30s",
        parse=parse_duration,
        help="How long past its TTL a namespace entry may answer while it is refreshed.",
    )
    log_level: str = setting(
        env=_P + "LOG_LEVEL",
        flag="--log-level",
        default="info",
        parse=parse_log_level,
        help="Log level.",
    )
    shutdown_grace: float = setting(
        env=_P + "SHUTDOWN_GRACE",
        flag="--shutdown-grace",
        default="10s",
        parse=parse_duration,
        help="How long to let in-flight reviews finish on SIGTERM.",
    )

    def mesh_values(self, trust_anchors_pem: str) -> MeshValues:
        return MeshValues(
            control_plane_namespace=self.control_plane_namespace,
            trust_domain=self.trust_domain,
            cluster_domain=self.cluster_domain,
            trust_anchors_pem=trust_anchors_pem,
            version=self.proxy_version,
            proxy_image=self.proxy_image,
            init_image=self.init_image,
            init_version=self.init_version,
            native_sidecar=self.native_sidecar,
            control_plane_tls=self.control_plane_tls,
            tap_svc_name=self.tap_svc_name,
            trace_collector=self.trace_collector.strip() or None,
            trace_collector_service_account=self.trace_collector_service_account,
            proxy_await=self.proxy_await,
            iptables_mode=self.iptables_mode,
            disable_ipv6=self.disable_ipv6,
            opaque_ports=self.opaque_ports,
            cluster_networks=self.cluster_networks,
            default_inbound_policy=self.default_inbound_policy,
            identity_port=self.identity_port,
            destination_port=self.destination_port,
            policy_port=self.policy_port,
        )
