"""Settings of the destination service: environment variables, overridable by flags.

Every field mirrors a flag of Linkerd's destination/policy controllers (linkerd-wire.md §3);
the environment variable is ``GOSSAMER_DESTINATION_<FIELD>``. Loaded once in ``__main__``
through :mod:`gossamer_common.settings`, so a bad value names itself in the first log line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from gossamer_common.settings import (
    SettingsError,
    list_of,
    load,
    optional,
    parse_bool,
    parse_cidr,
    parse_duration,
    parse_str,
    setting,
    settings_class,
)

from gossamer_destination.ports import DEFAULT_OPAQUE_PORTS, PortSet, parse_port_set

__all__ = ["DEFAULT_POLICIES", "DestinationSettings", "Network", "SettingsError", "parse_networks"]

DEFAULT_CLUSTER_NETWORKS = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
DEFAULT_POLICIES = frozenset(
    {
        "all-unauthenticated",
        "all-authenticated",
        "cluster-unauthenticated",
        "cluster-authenticated",
        "deny",
        "audit",
    }
)
_PREFIX = "GOSSAMER_DESTINATION_"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _port_set(text: str) -> PortSet:
    return parse_port_set(text)


_port_set.expected = "a comma-separated list of ports, ranges (a-b) or port names"  # type: ignore[attr-defined]


def _policy(text: str) -> str:
    if text not in DEFAULT_POLICIES:
        raise ValueError(text)
    return text


_policy.expected = "one of " + ", ".join(sorted(DEFAULT_POLICIES))  # type: ignore[attr-defined]


def _capacity(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(text)
    return int(text)


_capacity.expected = "a whole number >= 1"  # type: ignore[attr-defined]
parse_networks = list_of(parse_cidr)


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(text)
    return seconds


_positive_duration.expected = "a positive duration such as 500ms, 10s or 1m"  # type: ignore[attr-defined]


def _env(name: str) -> str:
    return _PREFIX + name


@settings_class
class DestinationSettings:
    cluster_domain: str = setting(
        env=_env("CLUSTER_DOMAIN"),
        flag="--cluster-domain",
        default="cluster.local",
        parse=parse_str,
        help="Kubernetes cluster DNS domain.",
    )
    controller_namespace: str = setting(
        env=_env("CONTROLLER_NAMESPACE"),
        flag="--controller-namespace",
        default="gossamer",
        parse=parse_str,
        help="Control-plane namespace; pods labelled linkerd.io/control-plane-ns with this "
        "value get TLS identities.",
    )
    egress_network_namespace: str = setting(
        env=_env("EGRESS_NETWORK_NAMESPACE"),
        flag="--egress-network-namespace",
        default="",
        parse=parse_str,
        help="Namespace whose EgressNetworks apply to every client namespace (empty: the "
        "control-plane namespace).",
    )
    trust_domain: str = setting(
        env=_env("TRUST_DOMAIN"),
        flag="--identity-trust-domain",
        default="cluster.local",
        parse=parse_str,
        help="Identity trust domain; empty disables identities in discovery answers.",
    )
    default_opaque_ports: PortSet = setting(
        env=_env("DEFAULT_OPAQUE_PORTS"),
        flag="--default-opaque-ports",
        default=DEFAULT_OPAQUE_PORTS,
        parse=_port_set,
        help="Ports treated as opaque when neither pod nor service says otherwise.",
    )
    enable_h2_upgrade: bool = setting(
        env=_env("ENABLE_H2_UPGRADE"),
        flag="--enable-h2-upgrade",
        default="true",
        parse=parse_bool,
        help="Send the h2 protocol hint for meshed pods.",
    )
    transport_header: bool = setting(
        env=_env("TRANSPORT_HEADER"),
        flag="--transport-header",
        default="true",
        parse=parse_bool,
        help="outbound-transport-mode=transport-header: opaque transport on every meshed "
        "endpoint, not only on opaque ports.",
    )
    allow_l5d_request_headers: bool = setting(
        env=_env("ALLOW_L5D_REQUEST_HEADERS"),
        flag="--allow-l5d-request-headers",
        default="false",
        parse=parse_bool,
        help="Let clients override route retries and timeouts with l5d-retry-*/l5d-*-timeout "
        "request headers (Linkerd's per-request policy; unsafe for untrusted clients).",
    )
    enable_ipv6: bool = setting(
        env=_env("ENABLE_IPV6"),
        flag="--enable-ipv6",
        default="false",
        parse=parse_bool,
        help="Prefer IPv6 endpoints for dual-stack pods.",
    )
    cluster_networks: tuple[Network, ...] = setting(
        env=_env("CLUSTER_NETWORKS"),
        flag="--cluster-networks",
        default=DEFAULT_CLUSTER_NETWORKS,
        parse=parse_networks,
        help="Networks of the cluster (cluster-* policies, egress detection).",
    )
    probe_networks: tuple[Network, ...] = setting(
        env=_env("PROBE_NETWORKS"),
        flag="--probe-networks",
        default="0.0.0.0/0,::/0",
        parse=parse_networks,
        help="Where kubelet probes come from; probe routes are authorized from these.",
    )
    default_inbound_policy: str = setting(
        env=_env("DEFAULT_INBOUND_POLICY"),
        flag="--default-policy",
        default="all-unauthenticated",
        parse=_policy,
        help="Cluster-wide default inbound policy.",
    )
    grpc_addr: str = setting(
        env=_env("GRPC_ADDR"),
        flag="--addr",
        default="0.0.0.0:8086",
        parse=parse_str,
        help="Where the Destination and policy gRPC APIs listen.",
    )
    policy_addr: str = setting(
        env=_env("POLICY_ADDR"),
        flag="--policy-addr",
        default="0.0.0.0:8090",
        parse=parse_str,
        help="A second listener for the same APIs, where proxies expect the policy controller "
        "(LINKERD2_PROXY_POLICY_SVC_ADDR); empty to serve only --addr.",
    )
    admin_addr: str = setting(
        env=_env("ADMIN_ADDR"),
        flag="--admin-addr",
        default="0.0.0.0:9996",
        parse=parse_str,
        help="Where /metrics, /live and /ready listen.",
    )
    stream_queue_capacity: int = setting(
        env=_env("STREAM_QUEUE_CAPACITY"),
        flag="--stream-queue-capacity",
        default="100",
        parse=_capacity,
        help="Accepted for Linkerd's flag; streams no longer queue updates: one that falls "
        "behind catches up with a single diff once its client reads again.",
    )
    crd_recheck: float = setting(
        env=_env("CRD_RECHECK"),
        flag="--crd-recheck",
        default="30s",
        parse=_positive_duration,
        help="How often to look again for optional CRDs that are not installed (Gateway API "
        "HTTPRoute/GRPCRoute); their routes apply once they are.",
    )
    kubeconfig: str | None = setting(
        env=_env("KUBECONFIG"),
        flag="--kubeconfig",
        default=None,
        parse=optional(parse_str),
        help="Path to a kubeconfig; unset means $KUBECONFIG, then in-cluster configuration.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], argv: Sequence[str] = ()) -> DestinationSettings:
        """Build from an environment (and flags); raises :class:`SettingsError`."""
        return load(cls, argv, environ)
