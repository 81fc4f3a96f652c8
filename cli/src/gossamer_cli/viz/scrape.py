"""Prometheus scrape configuration for the viz extension (pure).

The ``linkerd-proxy`` job keeps every pod's ``linkerd-proxy`` container port named
``linkerd-admin`` (4191) whose pod belongs to this control plane, and turns the pod's
Kubernetes metadata into Linkerd's label names: ``namespace``, ``pod``, ``k8s_job``, the
workload labels the injector writes (``linkerd.io/proxy-deployment`` → ``deployment``, and so
on for statefulset, daemonset, replicaset, job, cronjob, replicationcontroller), the other
``linkerd.io/*`` labels without their prefix, and every other pod label as is.

On a cluster the targets come from ``kubernetes_sd_configs`` (role ``pod``). Debian's
Prometheus is built without Kubernetes discovery, so local mode writes the same targets, with
the same ``__meta_kubernetes_*`` labels, to a ``file_sd_configs`` file (:func:`pod_targets`);
the relabelling is shared, so both see identical series.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

PROXY_CONTAINER = "linkerd-proxy"
ADMIN_PORT_NAME = "linkerd-admin"
PROXY_JOB = "linkerd-proxy"
META = "__meta_kubernetes_"
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def proxy_relabel_configs(control_plane_namespace: str) -> list[dict[str, Any]]:
    """The ``linkerd-proxy`` job's relabelling, in Linkerd's order."""
    keep = f"^{PROXY_CONTAINER};{ADMIN_PORT_NAME};{re.escape(control_plane_namespace)}$"
    return [
        {
            "source_labels": [
                f"{META}pod_container_name",
                f"{META}pod_container_port_name",
                f"{META}pod_label_linkerd_io_control_plane_ns",
            ],
            "action": "keep",
            "regex": keep,
        },
        {
            "source_labels": [f"{META}namespace"],
            "action": "replace",
            "target_label": "namespace",
        },
        {"source_labels": [f"{META}pod_name"], "action": "replace", "target_label": "pod"},
        # Kubernetes' "job" must not clash with Prometheus's own "job" label.
        {
            "source_labels": [f"{META}pod_label_linkerd_io_proxy_job"],
            "action": "replace",
            "target_label": "k8s_job",
        },
        {"action": "labeldrop", "regex": f"{META}pod_label_linkerd_io_proxy_job"},
        # linkerd.io/proxy-deployment=web → deployment="web" (and the other workload kinds).
        {"action": "labelmap", "regex": f"{META}pod_label_linkerd_io_proxy_(.+)"},
        {"action": "labeldrop", "regex": f"{META}pod_label_linkerd_io_proxy_(.+)"},
        {"action": "labelmap", "regex": f"{META}pod_label_linkerd_io_(.+)"},
        # Every pod label, with linkerd_io_ prefixes stripped, through temporary labels.
        {
            "action": "labelmap",
            "regex": f"{META}pod_label_(.+)",
            "replacement": "__tmp_pod_label_$1",
        },
        {
            "action": "labelmap",
            "regex": "__tmp_pod_label_linkerd_io_(.+)",
            "replacement": "__tmp_pod_label_$1",
        },
        {"action": "labeldrop", "regex": "__tmp_pod_label_linkerd_io_(.+)"},
        {"action": "labelmap", "regex": "__tmp_pod_label_(.+)"},
    ]


def prometheus_config(
    *,
    control_plane_namespace: str,
    discovery: Mapping[str, Any],
    scrape_interval: str = "10s",
    self_address: str = "localhost:9090",
) -> dict[str, Any]:
    """The whole ``prometheus.yml``; ``discovery`` is the proxy job's ``*_sd_configs`` entry
    (see :func:`kubernetes_discovery` and :func:`file_discovery`)."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]},
            {
                "job_name": PROXY_JOB,
                **discovery,
                "relabel_configs": proxy_relabel_configs(control_plane_namespace),
            },
        ],
    }


def kubernetes_discovery() -> dict[str, Any]:
    return {"kubernetes_sd_configs": [{"role": "pod"}]}


def file_discovery(path: str, refresh: str = "5s") -> dict[str, Any]:
    return {"file_sd_configs": [{"files": [path], "refresh_interval": refresh}]}


def label_name(name: str) -> str:
    """A Kubernetes label or annotation key as Prometheus's discovery spells it."""
    return _NOT_LABEL_CHAR.sub("_", name)


def pod_targets(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``file_sd`` target groups for ``pods``, labelled as Kubernetes pod discovery does:
    one target per container port (init containers included, as native sidecars are), at
    ``<podIP>:<port>``. Pods without an IP yet, or finished, have no targets."""
    groups = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        common = _pod_labels(meta, spec, status)
        containers = [(c, False) for c in spec.get("containers") or []]
        containers += [(c, True) for c in spec.get("initContainers") or []]
        for container, init in containers:
            for port in container.get("ports") or []:
                number = port.get("containerPort")
                if not isinstance(number, int):
                    continue
                labels = {
                    **common,
                    f"{META}pod_container_name": str(container.get("name", "")),
                    f"{META}pod_container_image": str(container.get("image", "")),
                    f"{META}pod_container_init": "true" if init else "false",
                    f"{META}pod_container_port_name": str(port.get("name", "")),
                    f"{META}pod_container_port_number": str(number),
                    f"{META}pod_container_port_protocol": str(port.get("protocol", "TCP")),
                }
                groups.append({"targets": [_address(ip, number)], "labels": labels})
    return groups


def _pod_labels(
    meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, str]:
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    labels = {
        f"{META}namespace": str(meta.get("namespace", "")),
        f"{META}pod_name": str(meta.get("name", "")),
        f"{META}pod_uid": str(meta.get("uid", "")),
        f"{META}pod_ip": str(status.get("podIP", "")),
        f"{META}pod_node_name": str(spec.get("nodeName", "")),
        f"{META}pod_host_ip": str(status.get("hostIP", "")),
        f"{META}pod_phase": str(status.get("phase", "")),
        f"{META}pod_ready": "true" if ready else "false",
    }
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{META}pod_controller_kind"] = str(owner.get("kind", ""))
            labels[f"{META}pod_controller_name"] = str(owner.get("name", ""))
    for key, value in (meta.get("labels") or {}).items():
        labels[f"{META}pod_label_{label_name(key)}"] = str(value)
        labels[f"{META}pod_labelpresent_{label_name(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        labels[f"{META}pod_annotation_{label_name(key)}"] = str(value)
        labels[f"{META}pod_annotationpresent_{label_name(key)}"] = "true"
    return labels


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
