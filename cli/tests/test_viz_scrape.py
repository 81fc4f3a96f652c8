"""The viz scrape configuration: valid for promtool, and targets labelled as Kubernetes SD."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml
from gossamer_cli.dev.prometheus import local_config
from gossamer_cli.viz import scrape

META = "__meta_kubernetes_"


def meshed_pod(**status: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "web-5d8f-abcde",
            "namespace": "demo",
            "uid": "u-1",
            "labels": {
                "app": "web",
                "linkerd.io/control-plane-ns": "gossamer",
                "linkerd.io/proxy-deployment": "web",
                "pod-template-hash": "5d8f",
            },
            "annotations": {"linkerd.io/proxy-version": "0.1.0"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f", "controller": True}],
        },
        "spec": {
            "nodeName": "gossamer-node",
            "initContainers": [
                {"name": "linkerd-init", "image": "gossamer/proxy-init"},
                {
                    "name": "linkerd-proxy",
                    "image": "gossamer/proxy",
                    "ports": [
                        {"name": "linkerd-proxy", "containerPort": 4143},
                        {"name": "linkerd-admin", "containerPort": 4191},
                    ],
                },
            ],
            "containers": [
                {"name": "app", "image": "demo", "ports": [{"name": "http", "containerPort": 8080}]}
            ],
        },
        "status": {"podIP": "10.244.1.7", "phase": "Running", **status},
    }


def test_pod_targets_carry_kubernetes_pod_discovery_labels() -> None:
    groups = scrape.pod_targets([meshed_pod()])
    by_target = {g["targets"][0]: g["labels"] for g in groups}
    assert set(by_target) == {"10.244.1.7:8080", "10.244.1.7:4143", "10.244.1.7:4191"}
    admin = by_target["10.244.1.7:4191"]
    assert admin[f"{META}pod_container_name"] == "linkerd-proxy"
    assert admin[f"{META}pod_container_port_name"] == "linkerd-admin"
    assert admin[f"{META}pod_container_init"] == "true"
    assert admin[f"{META}pod_label_linkerd_io_control_plane_ns"] == "gossamer"
    assert admin[f"{META}pod_label_linkerd_io_proxy_deployment"] == "web"
    assert admin[f"{META}pod_annotation_linkerd_io_proxy_version"] == "0.1.0"
    assert admin[f"{META}pod_controller_kind"] == "ReplicaSet"
    assert admin[f"{META}namespace"] == "demo"
    assert admin[f"{META}pod_name"] == "web-5d8f-abcde"


def test_pods_without_an_address_or_finished_have_no_targets() -> None:
    pending = meshed_pod()
    pending["status"] = {"phase": "Pending"}
    assert scrape.pod_targets([pending, meshed_pod(phase="Succeeded")]) == []


def test_relabelling_keeps_only_this_control_planes_admin_ports() -> None:
    keep = scrape.proxy_relabel_configs("gossamer")[0]
    assert keep["action"] == "keep"
    assert keep["regex"] == "^linkerd-proxy;linkerd-admin;gossamer$"


def test_local_config_passes_promtool(
    tmp_path: Path, require_program: Callable[[str], str]
) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(scrape.pod_targets([meshed_pod()])))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(local_config(targets, "gossamer")))
    out = subprocess.run(
        [require_program("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_cluster_config_relabelling_passes_promtool(
    tmp_path: Path, require_program: Callable[[str], str]
) -> None:
    """Debian's promtool has no Kubernetes discovery: check the cluster's config with the
    discovery swapped for a file, which leaves every relabelling rule to be checked."""
    config = scrape.prometheus_config(
        control_plane_namespace="gossamer", discovery=scrape.kubernetes_discovery()
    )
    job = config["scrape_configs"][1]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job.update(scrape.file_discovery(str(tmp_path / "none.json")))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [require_program("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
