"""Whether a pod gets a proxy, and which annotations it inherits from its namespace.

Implements linkerd-wire.md §4.2. The answer is a :class:`Decision` carrying a reason, so the
webhook can put the reason into the AdmissionReview warnings and the CLI can print it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossamer_inject import annotations as a
from gossamer_inject import podspec


class Origin(enum.Enum):
    """Who asks: the webhook honours the namespace, ``gossamer inject`` does not."""

    WEBHOOK = "webhook"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool
    #: Why not (empty when injecting).
    reason: str = ""
    ingress: bool = False
    #: True when the user asked for injection, so a refusal deserves a warning.
    requested: bool = False


def inherit_namespace_annotations(
    pod_annotations: Mapping[str, str], namespace_annotations: Mapping[str, str]
) -> dict[str, str]:
    """Namespace config annotations (and ``linkerd.io/inject``) the pod lacks; pod value wins."""
    inherited: dict[str, str] = {}
    for key, value in namespace_annotations.items():
        if key in pod_annotations:
            continue
        if key == a.INJECT or key.startswith(a.INHERITABLE_PREFIXES):
            inherited[key] = value
    return inherited


def decide(
    pod: Mapping[str, Any],
    *,
    origin: Origin,
    namespace_annotations: Mapping[str, str] | None = None,
    ingress: bool = False,
) -> Decision:
    """Decide for one pod (or pod template) that passed :func:`podspec.check_pod`."""
    annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
    ns_annotations = namespace_annotations or {}
    pod_value = annotations.get(a.INJECT)
    ns_value = ns_annotations.get(a.INJECT)

    if origin is Origin.CLI:
        if pod_value == a.INJECT_DISABLED:
            return Decision(False, f"{a.INJECT} is {a.INJECT_DISABLED}")
        mode_ingress = ingress or pod_value == a.INJECT_INGRESS
        return _safety(pod, Decision(True, ingress=mode_ingress, requested=True))

    for where, value in (("pod", pod_value), ("namespace", ns_value)):
        if value is not None and value not in a.INJECT_VALUES:
            return Decision(
                False,
                f"{where} has {a.INJECT}={value!r}; expected enabled, disabled or ingress",
                requested=True,
            )
    if ns_value in (a.INJECT_ENABLED, a.INJECT_INGRESS):
        if pod_value == a.INJECT_DISABLED:
            return Decision(False, f"pod has {a.INJECT}={a.INJECT_DISABLED}")
        mode = pod_value or ns_value
    elif pod_value in (a.INJECT_ENABLED, a.INJECT_INGRESS):
        mode = pod_value
    else:
        return Decision(False, f"neither the pod nor its namespace has {a.INJECT}=enabled")
    return _safety(pod, Decision(True, ingress=mode == a.INJECT_INGRESS, requested=True))


def already_injected(spec: Mapping[str, Any]) -> bool:
    names = podspec.container_names(spec)
    if names & (a.FOREIGN_SIDECAR_CONTAINERS | a.FOREIGN_INIT_CONTAINERS):
        return True
    return any(_is_mesh_image(image) for image in podspec.container_images(spec))


def _is_mesh_image(image: str) -> bool:
    repo = image.rsplit("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return repo.endswith(
        (
            "gossamer/proxy",
            "gossamer/proxy-init",
            "linkerd/proxy",
            "linkerd/proxy-init",
            "istio/proxyv2",
        )
    )


def _safety(pod: Mapping[str, Any], decision: Decision) -> Decision:
    spec = pod["spec"]
    if already_injected(spec):
        # Idempotence: injecting twice must be a no-op, not a warning.
        return Decision(False, "pod already has a mesh proxy")
    if spec.get("hostNetwork") is True:
        return Decision(False, "pods with hostNetwork: true are never injected", requested=True)
    return decision


def port_clash(spec: Mapping[str, Any], proxy_ports: frozenset[int]) -> str | None:
    """A reason to refuse when an app container already declares one of the proxy's ports.

    Two listeners on one port in a shared network namespace means one of them fails to
    start, so such a pod is declined rather than broken.
    """
    clashes = sorted(
        f"{name}:{port}"
        for name, port, protocol in podspec.all_container_ports(spec)
        if port in proxy_ports and protocol == "TCP"
    )
    if clashes:
        return "container ports collide with the proxy's own ports: " + ", ".join(clashes)
    return None
