"""The control plane's own proxies, rendered at install time as Linkerd does.

The injector's webhook skips control-plane pods (they carry ``linkerd.io/control-plane-component``),
so the identity, destination and injector pods get their proxy and proxy-init containers here,
from :mod:`gossamer_inject`'s container builders, with three control-plane differences:

* the identity pod's proxy certifies against ``localhost.:8080`` (its own identity process),
  and the destination pod's proxy discovers through ``localhost.:8086``: each would otherwise
  depend on itself through the mesh before it has a certificate;
* outbound 443 and 6443 bypass the proxy so the controllers reach the kube-apiserver directly;
* extra inbound ports can bypass the proxy (the injector's webhook port is called by the
  apiserver, which is not meshed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gossamer_inject import MeshValues, containers, resolve
from gossamer_inject import annotations as a
from gossamer_inject.values import parse_port_ranges

from gossamer_cli.manifests_values import ChartValues

#: Outbound ports every control-plane pod sends straight to the kube-apiserver.
APISERVER_PORTS = "443,6443"
CREATED_BY = "gossamer/install"


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """What differs between the three control-plane proxies."""

    #: Ports the pod's own containers listen on (LINKERD2_PROXY_INBOUND_PORTS).
    inbound_ports: tuple[int, ...]
    #: Environment entries replaced in place (addresses of the pod's own services).
    env_overrides: Mapping[str, str]
    #: Inbound ports that bypass the proxy, beyond the admin/control ports and the values'.
    skip_inbound_ports: str = ""
    #: The native sidecar's startup probe. The identity pod's proxy gets its certificate from
    #: the container next to it, which kubelet starts only after that probe passes: /live.
    startup_path: str = "/ready"


def mesh_values(values: ChartValues) -> MeshValues:
    res = values.proxy_resources
    return MeshValues(
        control_plane_namespace=values.namespace,
        trust_domain=values.trust_domain,
        cluster_domain=values.cluster_domain,
        trust_anchors_pem=values.trust_anchors_pem,
        version=values.images["proxy"].tag,
        proxy_image=values.images["proxy"].repository,
        init_image=values.images["proxyInit"].repository,
        init_version=values.images["proxyInit"].tag,
        image_pull_policy=values.pull_policy,
        iptables_mode=values.iptables_mode,
        disable_ipv6=values.disable_ipv6,
        native_sidecar=values.proxy_native_sidecar,
        proxy_uid=values.proxy_uid,
        skip_inbound_ports=values.ignore_inbound_ports,
        skip_outbound_ports=values.ignore_outbound_ports,
        cluster_networks=values.cluster_networks,
        default_inbound_policy=values.proxy_default_inbound_policy,
        log_level=values.proxy_log_level,
        log_format=values.proxy_log_format,
        cpu_request=res.cpu_request or None,
        cpu_limit=res.cpu_limit or None,
        memory_request=res.memory_request or None,
        memory_limit=res.memory_limit or None,
    )


def _join_ports(*texts: str) -> str:
    return ",".join(t for t in texts if t)


def pod_annotations(values: ChartValues) -> dict[str, str]:
    mesh = mesh_values(values)
    return {
        a.CREATED_BY: f"{CREATED_BY} {values.tag}",
        a.PROXY_VERSION: values.images["proxy"].tag,
        a.TRUST_ROOT_SHA256: mesh.trust_root_sha256,
        a.DEFAULT_INBOUND_POLICY: values.proxy_default_inbound_policy,
    }


def mesh_pod(values: ChartValues, spec: ProxySpec) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(init containers, proxy container) for one control-plane pod.

    With native sidecars the proxy is the second init container; otherwise the caller puts it
    first among the containers (so its postStart hook holds the controller until it is ready).
    """
    mesh = mesh_values(values)
    overrides = {a.SKIP_OUTBOUND_PORTS: _join_ports(APISERVER_PORTS, values.ignore_outbound_ports)}
    if spec.skip_inbound_ports:
        overrides[a.SKIP_INBOUND_PORTS] = _join_ports(
            values.ignore_inbound_ports, spec.skip_inbound_ports
        )
    cfg = resolve(mesh, overrides, ingress=False)
    cfg = dataclasses.replace(
        cfg,
        additional_env=tuple({"name": k, "value": v} for k, v in spec.env_overrides.items()),
    )
    facts = containers.PodFacts(
        inbound_ports=tuple(sorted(spec.inbound_ports)),
        opaque_ports=_exposed_opaque(mesh.opaque_ports, spec.inbound_ports),
    )
    proxy = containers.proxy_container(cfg, facts)
    if "startupProbe" in proxy:
        proxy["startupProbe"]["httpGet"]["path"] = spec.startup_path
    init = [containers.init_container(cfg)]
    if cfg.native_sidecar:
        init.append(proxy)
    return init, proxy


def _exposed_opaque(opaque: str, ports: Sequence[int]) -> tuple[Any, ...]:
    return tuple(r for r in parse_port_ranges("opaque-ports", opaque) if any(p in r for p in ports))


def mesh_volumes() -> list[dict[str, Any]]:
    return containers.volumes()
