"""Names and addresses of the local node and its pods (pure).

The node namespace holds a bridge with the node's address. Pods take the addresses the runtime
gives them from the node's pod CIDR (see ``addresses``), which sits inside the bridge's
subnet, so every pod reaches every other pod and the node across the bridge and nothing
else. ClusterIPs are never routed anywhere: the pod's default route points at the node, and
iptables in the pod hands every outbound connection to the proxy, which resolves ClusterIPs
itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLUSTER_DOMAIN = "cluster.local"
#: Control-plane components that run meshed, each in a sandbox of its own (see controlplane).
CONTROL_PLANE_SANDBOXES = ("identity", "destination")


@dataclass(frozen=True)
class NodeLayout:
    """Where the local node lives. Every name is prefixed so runs never collide."""

    prefix: str = "gsm"
    node_name: str = "gossamer-node"
    bridge: str = "gsm0"
    bridge_network: str = "10.244.0.0/16"
    node_address: str = "10.244.0.1"
    pod_cidr: str = "10.244.1.0/24"

    @property
    def node_netns(self) -> str:
        return f"{self.prefix}-node"

    @property
    def bridge_prefix_len(self) -> int:
        return ipaddress.ip_network(self.bridge_network).prefixlen

    def pod_netns(self, pod_uid: str) -> str:
        return f"{self.prefix}-pod-{_short(pod_uid)}"

    def pod_veth(self, pod_uid: str) -> str:
        # Linux interface names hold 15 bytes: "gv" + 12 hex digits.
        return f"gv{_short(pod_uid)}"

    def control_plane_address(self, component: str) -> str:
        """The "pod IP" of a meshed control-plane component: the addresses right after the
        node's, on the bridge but outside the pod CIDR, so no pod ever gets one."""
        index = CONTROL_PLANE_SANDBOXES.index(component)
        address = ipaddress.ip_address(self.node_address) + 1 + index
        if address in ipaddress.ip_network(self.pod_cidr):
            raise ValueError(f"control-plane address {address} lies inside the pod CIDR")
        return str(address)

    def owns_netns(self, name: str) -> bool:
        return name == self.node_netns or name.startswith(f"{self.prefix}-pod-")


def _short(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ServiceAddress:
    name: str
    namespace: str
    cluster_ip: str


def render_hosts(
    *,
    pod_name: str,
    pod_ip: str,
    services: Iterable[ServiceAddress],
    fixed: Mapping[str, str],
) -> str:
    """The pod's /etc/hosts: its own name, every Service's ClusterIP, and fixed names.

    Local mode has no cluster DNS; ``ip netns exec`` bind-mounts /etc/netns/<ns>/hosts over
    /etc/hosts for the pod's processes, and glibc reads it on every lookup, so rewriting the
    file in place updates running apps.
    """
    lines = ["127.0.0.1 localhost", "::1 localhost", f"{pod_ip} {pod_name}"]
    for name, address in sorted(fixed.items()):
        lines.append(f"{address} {name}")
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if svc.cluster_ip in ("", "None"):
            continue
        fqdn = f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}"
        lines.append(f"{svc.cluster_ip} {fqdn} {svc.name}.{svc.namespace}.svc")
    return "\n".join(lines) + "\n"


def render_resolv_conf(namespace: str) -> str:
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    # No nameserver answers in local mode; names come from /etc/hosts.
    return f"search {search}\nnameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"
