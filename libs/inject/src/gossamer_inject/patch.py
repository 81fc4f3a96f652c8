"""Pod (or pod template) → the JSON-Patch that injects the proxy. Pure.

One function, :func:`build_pod_patch`, is shared by the admission webhook (patch goes back to
the apiserver) and ``gossamer inject --manual`` (patch is applied locally). Paths are relative
to the pod object, so a caller patching a template inside a Deployment applies them to the
template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer_inject import annotations as a
from gossamer_inject import containers, jsonpatch, podspec
from gossamer_inject.config import MeshValues, ProxyConfig, resolve
from gossamer_inject.decision import Decision, Origin, decide, inherit_namespace_annotations
from gossamer_inject.decision import port_clash as _port_clash
from gossamer_inject.opaque import filter_exposed
from gossamer_inject.values import parse_port_ranges


@dataclass(frozen=True, slots=True)
class Owner:
    """The workload that owns the pod, for the ``linkerd.io/proxy-<kind>`` label."""

    kind: str
    name: str

    @property
    def label(self) -> str | None:
        kind = self.kind.lower()
        if kind not in a.OWNER_LABEL_KINDS or not self.name:
            return None
        return a.PROXY_OWNER_LABEL_PREFIX + kind


@dataclass(frozen=True, slots=True)
class PodPatch:
    decision: Decision
    ops: list[jsonpatch.Op] = field(default_factory=list)


def build_pod_patch(
    pod: Mapping[str, Any],
    *,
    mesh: MeshValues,
    origin: Origin,
    created_by: str,
    namespace: str | None = None,
    namespace_annotations: Mapping[str, str] | None = None,
    owner: Owner | None = None,
    ingress: bool = False,
    annotate_opaque_ports: bool = True,
) -> PodPatch:
    """Decide and, if injecting, build the ops.

    Raises :class:`~gossamer_inject.errors.ManifestError` for a malformed pod and
    :class:`~gossamer_inject.errors.ConfigError` for a bad override annotation.
    """
    podspec.check_pod(pod)
    ns_annotations = namespace_annotations or {}
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    pod_annotations: Mapping[str, str] = metadata.get("annotations") or {}
    inherited = (
        inherit_namespace_annotations(pod_annotations, ns_annotations)
        if origin is Origin.WEBHOOK
        else {}
    )
    decision = decide(pod, origin=origin, namespace_annotations=ns_annotations, ingress=ingress)
    if not decision.inject:
        return PodPatch(decision)
    effective = {**pod_annotations, **inherited}
    cfg = resolve(mesh, effective, ingress=decision.ingress)
    spec: Mapping[str, Any] = pod["spec"]
    proxy_ports = frozenset({cfg.inbound_port, cfg.outbound_port, cfg.admin_port, cfg.control_port})
    if (clash := _port_clash(spec, proxy_ports)) is not None:
        return PodPatch(Decision(False, clash, requested=True))

    new_annotations = dict(inherited)
    if annotate_opaque_ports and a.OPAQUE_PORTS not in effective:
        default = parse_port_ranges(a.OPAQUE_PORTS, cfg.opaque_ports)
        exposed = filter_exposed(default, podspec.tcp_container_ports(spec))
        if exposed:
            new_annotations[a.OPAQUE_PORTS] = exposed
    new_annotations[a.CREATED_BY] = created_by
    new_annotations[a.PROXY_VERSION] = cfg.proxy_version
    new_annotations[a.TRUST_ROOT_SHA256] = mesh.trust_root_sha256
    if cfg.trace_collector is not None:
        new_annotations[a.TRACING_ENABLED] = "true"

    labels = {a.CONTROL_PLANE_NS_LABEL: mesh.control_plane_namespace}
    if namespace:
        labels[a.WORKLOAD_NS_LABEL] = namespace
    if owner is not None and (owner_label := owner.label) is not None:
        labels[owner_label] = owner.name

    ops = _metadata_ops(pod, {"annotations": new_annotations, "labels": labels})
    facts = _facts(spec, cfg, effective, owner.name if owner is not None else None)
    ops += _container_ops(spec, cfg, facts)
    ops += _volume_ops(spec, cfg)
    return PodPatch(decision, ops)


def _facts(
    spec: Mapping[str, Any],
    cfg: ProxyConfig,
    annotations: Mapping[str, str],
    workload: str | None,
) -> Any:
    names = podspec.port_names(spec)
    opaque_text = annotations.get(a.OPAQUE_PORTS, cfg.opaque_ports)
    opaque = parse_port_ranges(a.OPAQUE_PORTS, opaque_text, names=names)
    proxy_ports = {cfg.inbound_port, cfg.admin_port, cfg.control_port, cfg.outbound_port}
    inbound = sorted(
        {*podspec.tcp_container_ports(spec), *podspec.http_probe_ports(spec)} - proxy_ports
    )
    return containers.PodFacts(
        inbound_ports=tuple(inbound), opaque_ports=opaque, workload=workload or None
    )


def _metadata_ops(
    pod: Mapping[str, Any], additions: Mapping[str, Mapping[str, str]]
) -> list[jsonpatch.Op]:
    ops: list[jsonpatch.Op] = []
    metadata = pod.get("metadata")
    if metadata is None:
        ops.append(jsonpatch.add("/metadata", {}))
        metadata = {}
    for key, values in additions.items():
        existing = metadata.get(key)
        if existing is None:
            # One op for the whole map keeps the patch short and its order deterministic.
            ops.append(jsonpatch.add(f"/metadata/{key}", dict(values)))
            continue
        for name, value in values.items():
            if existing.get(name) != value:
                ops.append(jsonpatch.add(jsonpatch.pointer("metadata", key, name), value))
    return ops


def _container_ops(
    spec: Mapping[str, Any], cfg: ProxyConfig, facts: containers.PodFacts
) -> list[jsonpatch.Op]:
    init = containers.init_container(cfg)
    proxy = containers.proxy_container(cfg, facts)
    front = [init, proxy] if cfg.native_sidecar else [init]
    ops: list[jsonpatch.Op] = []
    if spec.get("initContainers") is None:
        ops.append(jsonpatch.add("/spec/initContainers", front))
    else:
        # proxy-init runs first; the native proxy right after it, before the app's own
        # init containers, so those already have a working mesh.
        ops += [jsonpatch.add(f"/spec/initContainers/{i}", c) for i, c in enumerate(front)]
    if not cfg.native_sidecar:
        # With await the proxy goes first: the kubelet starts containers in order and the
        # postStart hook holds the app until the proxy is ready.
        where = "0" if cfg.proxy_await else "-"
        ops.append(jsonpatch.add(f"/spec/containers/{where}", proxy))
    return ops


def _volume_ops(spec: Mapping[str, Any], cfg: ProxyConfig) -> list[jsonpatch.Op]:
    vols = containers.volumes(cfg)
    if spec.get("volumes") is None:
        return [jsonpatch.add("/spec/volumes", vols)]
    return [jsonpatch.add("/spec/volumes/-", v) for v in vols]
