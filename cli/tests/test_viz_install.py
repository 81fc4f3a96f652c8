"""`gossamer viz install` renders valid manifests; `gossamer viz check` judges Prometheus."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli.main import cli
from gossamer_cli.viz import health, scrape
from gossamer_cli.viz.promapi import Sample

KUBE_VERSION = "1.30"


def render(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["viz", "install", *args])
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.output) if d]


def test_every_manifest_validates_against_kubernetes_schemas() -> None:
    objects = render()
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "gossamer-viz"),
        ("ServiceAccount", "prometheus"),
        ("ClusterRole", "gossamer-gossamer-viz-prometheus"),
        ("ClusterRoleBinding", "gossamer-gossamer-viz-prometheus"),
        ("ConfigMap", "prometheus-config"),
        ("Service", "prometheus"),
        ("Deployment", "prometheus"),
        ("ConfigMap", "grafana-dashboard-authority"),
        ("ConfigMap", "grafana-dashboard-deployment"),
        ("ConfigMap", "grafana-dashboard-pod"),
        ("ConfigMap", "grafana-dashboard-route"),
        ("ConfigMap", "grafana-dashboard-top-line"),
        ("ServiceAccount", "web"),
        ("ClusterRole", "gossamer-gossamer-viz-web"),
        ("ClusterRoleBinding", "gossamer-gossamer-viz-web"),
        ("Service", "web"),
        ("Deployment", "web"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_prometheus_config_uses_pod_discovery_and_linkerds_relabelling() -> None:
    rendered = render("-L", "mesh-system", "--scrape-interval", "5s")
    objects = {
        o["kind"]: o
        for o in rendered
        if o["kind"] != "ConfigMap"
        and o["metadata"]["name"] not in ("web", "mesh-system-gossamer-viz-web")
    }
    (config_map,) = [o for o in rendered if o["metadata"]["name"] == "prometheus-config"]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    job = config["scrape_configs"][1]
    assert job["job_name"] == "linkerd-proxy"
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert job["relabel_configs"] == scrape.proxy_relabel_configs("mesh-system")
    assert config["global"]["scrape_interval"] == "5s"
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in container["args"]
    assert objects["ClusterRoleBinding"]["subjects"][0]["namespace"] == "gossamer-viz"


def test_json_output_and_bad_interval() -> None:
    result = CliRunner().invoke(cli, ["viz", "install", "-o", "json"])
    assert json.loads(result.output)["kind"] == "List"
    bad = CliRunner().invoke(cli, ["viz", "install", "--scrape-interval", "soon"])
    assert bad.exit_code != 0
    assert "bad time window" in bad.output


@pytest.mark.parametrize(
    ("ready", "targets", "failed", "marks"),
    [
        (False, None, True, ["\u00d7"]),
        (True, [], False, ["\u221a", "\u203c"]),
        (True, [Sample({"namespace": "demo", "pod": "web-1"}, 1.0)], False, ["\u221a"] * 3),
        (
            True,
            [Sample({"namespace": "demo", "pod": "web-1"}, 0.0)],
            True,
            ["\u221a", "\u221a", "\u00d7"],
        ),
    ],
)
def test_viz_check_judges_prometheus(
    ready: bool, targets: list[Sample] | None, failed: bool, marks: list[str]
) -> None:
    results = health.judge("http://p:9090", ready, targets)
    assert health.failed(results) is failed
    text = health.render(results)
    lines = text.splitlines()[2:]
    assert [line[0] for line in lines if line and line[0] in "\u221a\u203c\u00d7"] == marks
    if targets and targets[0].value == 0:
        assert "demo/web-1" in text


def test_uninstall_names_every_installed_object_namespace_last() -> None:
    result = CliRunner().invoke(cli, ["viz", "uninstall"])
    assert result.exit_code == 0, result.output
    removed = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.output) if d]
    installed = [(o["kind"], o["metadata"]["name"]) for o in render()]
    assert sorted(removed) == sorted(installed)
    assert removed[-1] == ("Namespace", "gossamer-viz")


def test_web_dashboard_reads_prometheus_and_answers_only_its_own_names() -> None:
    import re

    objects = {(o["kind"], o["metadata"]["name"]): o for o in render("--web-image", "r/web:1")}
    pod = objects[("Deployment", "web")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "r/web:1"
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert args["prometheus-url"] == "http://prometheus.gossamer-viz.svc.cluster.local:9090"
    hosts = re.compile(args["enforced-host"])
    for allowed in ("localhost:8084", "127.0.0.1", "web.gossamer-viz.svc.cluster.local:8084"):
        assert hosts.fullmatch(allowed), allowed
    for refused in ("evil.example", "web.gossamer-viz.svc.cluster.local.evil.example"):
        assert not hosts.fullmatch(refused), refused
    assert objects[("Service", "web")]["spec"]["ports"][0]["port"] == 8084
    rules = objects[("ClusterRole", "gossamer-gossamer-viz-web")]["rules"]
    assert all(set(r["verbs"]) == {"get", "list"} for r in rules)
