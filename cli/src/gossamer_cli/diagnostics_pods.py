"""The pods behind a ``TYPE/NAME`` resource, and their proxies' admin addresses.

``linkerd diagnostics proxy-metrics`` accepts a pod or a workload (``deploy/web``,
``sts/db``, ``ds/agent``, ``rs/…``, ``job/…``, ``cronjob/…``, ``rc/…``); the pods are those
matching the workload's ``selector.matchLabels`` that the workload owns (a Deployment through
its ReplicaSets, a CronJob through its Jobs). The pure parts (parsing, ownership, choosing
the admin port, obfuscation) are separate from the one coroutine that lists objects.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gossamer_kube.resources import (
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    JOBS,
    PODS,
    REPLICASETS,
    STATEFULSETS,
    ResourceRef,
)

__all__ = [
    "ADMIN_PORT_NAME",
    "OBFUSCATED_LABELS",
    "AdminTarget",
    "ResourceError",
    "admin_target",
    "obfuscate_metrics",
    "parse_resource",
    "pods_for",
]

Obj = Mapping[str, Any]

#: The proxy container's admin port name (the injector's, as Linkerd's ``linkerd-admin``).
ADMIN_PORT_NAME: Final = "linkerd-admin"
REPLICATIONCONTROLLERS: Final = ResourceRef(
    "", "v1", "replicationcontrollers", True, "ReplicationController"
)

_KINDS: Final[dict[str, ResourceRef]] = {}
for _ref, _aliases in (
    (PODS, ("po", "pod", "pods")),
    (DEPLOYMENTS, ("deploy", "deployment", "deployments")),
    (DAEMONSETS, ("ds", "daemonset", "daemonsets")),
    (STATEFULSETS, ("sts", "statefulset", "statefulsets")),
    (REPLICASETS, ("rs", "replicaset", "replicasets")),
    (JOBS, ("job", "jobs")),
    (CRONJOBS, ("cj", "cronjob", "cronjobs")),
    (REPLICATIONCONTROLLERS, ("rc", "replicationcontroller", "replicationcontrollers")),
):
    for _alias in _aliases:
        _KINDS[_alias] = _ref

#: Label values ``--obfuscate`` replaces with a short hash, as Linkerd does.
OBFUSCATED_LABELS: Final = frozenset(
    {"authority", "client_id", "server_id", "target_addr", "dst_service", "dst_namespace"}
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class ResourceError(ValueError):
    """The resource argument cannot be used; the message says why."""


def parse_resource(text: str) -> tuple[ResourceRef, str]:
    """``deploy/web`` → (the Deployment kind, ``web``)."""
    kind, sep, name = text.partition("/")
    if not sep or not name or "/" in name:
        raise ResourceError(f"{text!r} is not TYPE/NAME (for example deploy/web or po/web-0)")
    ref = _KINDS.get(kind.lower())
    if ref is None:
        known = "pods, deployments, daemonsets, statefulsets, replicasets, jobs, cronjobs, "
        raise ResourceError(
            f"unsupported resource type {kind!r}; one of {known}replicationcontrollers"
        )
    return ref, name


def _owned_by(uid: str, obj: Obj) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def _selector(obj: Obj) -> str:
    spec = obj.get("spec") or {}
    selector = spec.get("selector") or {}
    # ReplicationControllers have a plain map; the others a LabelSelector.
    labels = selector.get("matchLabels", selector) if isinstance(selector, Mapping) else {}
    if not isinstance(labels, Mapping):
        labels = {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if isinstance(v, str))


async def pods_for(client: Any, namespace: str, resource: str) -> list[dict[str, Any]]:
    """The pods of ``resource`` in ``namespace`` (``client``: a gossamer_kube KubeClient)."""
    ref, name = parse_resource(resource)
    if ref is PODS:
        return [await client.get(PODS, name, namespace)]
    if ref is CRONJOBS:
        cronjob = await client.get(CRONJOBS, name, namespace)
        uid = str((cronjob.get("metadata") or {}).get("uid") or "")
        jobs, _ = await client.list(JOBS, namespace)
        pods: list[dict[str, Any]] = []
        for job in jobs:
            if _owned_by(uid, job):
                pods += await pods_for(client, namespace, f"job/{job['metadata']['name']}")
        return pods
    owner = await client.get(ref, name, namespace)
    uid = str((owner.get("metadata") or {}).get("uid") or "")
    selector = _selector(owner)
    if ref is DEPLOYMENTS:
        replica_sets, _ = await client.list(REPLICASETS, namespace, label_selector=selector)
        pods = []
        for rs in replica_sets:
            if _owned_by(uid, rs):
                pods += await pods_for(client, namespace, f"rs/{rs['metadata']['name']}")
        return pods
    candidates, _ = await client.list(PODS, namespace, label_selector=selector)
    return [p for p in candidates if not uid or _owned_by(uid, p)]


@dataclass(frozen=True, slots=True)
class AdminTarget:
    pod: str
    host: str | None
    port: int | None
    error: str | None = None


def admin_target(pod: Obj, port_name: str = ADMIN_PORT_NAME) -> AdminTarget:
    """Where ``pod``'s proxy serves its admin port, or why it cannot be asked."""
    meta = pod.get("metadata") or {}
    name = str(meta.get("name") or "")
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return AdminTarget(name, None, None, f"pod not running: {name}")
    spec = pod.get("spec") or {}
    containers: Iterable[Obj] = [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
    ]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == port_name and isinstance(port.get("containerPort"), int):
                ip = status.get("podIP")
                if not ip:
                    return AdminTarget(name, None, None, f"pod has no IP: {name}")
                return AdminTarget(name, str(ip), int(port["containerPort"]))
    return AdminTarget(name, None, None, f"no {port_name} port in pod {name}: is it meshed?")


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def obfuscate_metrics(text: str, labels: Sequence[str] | frozenset[str] = OBFUSCATED_LABELS) -> str:
    """Replace the values of identifying labels with a short SHA-256 prefix."""

    def replace(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        return f'{name}="{_hash(value)}"' if name in labels else match.group(0)

    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#") or "{" not in line:
            out.append(line)
            continue
        head, brace, rest = line.partition("{")
        body, close, tail = rest.rpartition("}")
        out.append(head + brace + _LABEL.sub(replace, body) + close + tail)
    return "".join(out)
