"""`gossamer jaeger install|uninstall` render valid manifests; `check` judges the cluster."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import yaml
from click.testing import CliRunner
from gossamer_cli.jaeger import health
from gossamer_cli.jaeger.manifests import JaegerValues, render
from gossamer_cli.main import cli

KUBE_VERSION = "1.30"


def run(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["jaeger", *args])
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_every_manifest_validates_against_kubernetes_schemas() -> None:
    objects = run("install")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "gossamer-jaeger"),
        ("ServiceAccount", "collector"),
        ("ConfigMap", "collector-config"),
        ("Service", "collector"),
        ("Deployment", "collector"),
        ("ServiceAccount", "jaeger"),
        ("Service", "jaeger"),
        ("Deployment", "jaeger"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert objects[0]["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}


def test_the_collector_receives_otlp_and_exports_to_jaeger() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in run("install")}
    config = yaml.safe_load(objects["ConfigMap", "collector-config"]["data"]["collector.yaml"])
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert config["exporters"]["otlp"]["endpoint"] == "jaeger.gossamer-jaeger:4317"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp"]
    pod = objects["Deployment", "collector"]["spec"]["template"]["spec"]
    # The identity the injector derives from collector.gossamer-jaeger:4317.
    assert pod["serviceAccountName"] == "collector"
    ports = {p["name"]: p["port"] for p in objects["Service", "collector"]["spec"]["ports"]}
    assert ports["otlp"] == 4317


def test_values_set_the_address_and_leave_parts_out() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "jaeger", "install", "--set", "collector.address=otel.tracing:4317",
            "--set", "collector.enabled=false", "--set", "jaeger.enabled=false",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "config.linkerd.io/trace-collector=otel.tracing:4317" in result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
    assert kinds == ["Namespace"]


def test_bad_values_are_refused_with_the_key_named() -> None:
    for bad, words in (
        ("collector.adress=x:1", "unknown value 'collector.adress'"),
        ("collector.address=nohost", "host:port"),
        ("jaeger.enabled=maybe", "true or false"),
    ):
        result = CliRunner().invoke(cli, ["jaeger", "install", "--set", bad])
        assert result.exit_code != 0
        assert words in result.output, result.output


def test_uninstall_lists_names_with_the_namespace_last() -> None:
    objects = run("uninstall", "-o", "json")[0]["items"]
    assert objects[-1] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "gossamer-jaeger"},
    }
    assert len(objects) == len(render(JaegerValues()))
    json.dumps(objects)


def test_check_judges_deployments_and_traced_pods() -> None:
    ready = {"status": {"availableReplicas": 1}}
    traced = {"metadata": {"annotations": {"jaeger.linkerd.io/tracing-enabled": "true"}}}
    results = health.judge("gossamer-jaeger", True, {"collector": ready, "jaeger": ready}, [traced])
    assert all(r.ok for r in results)
    results = health.judge("gossamer-jaeger", True, {"collector": None, "jaeger": ready}, [])
    assert [r.ok for r in results] == [True, False, True, False]
    assert "gossamer-jaeger" in health.render(results).splitlines()[0]
    missing = health.judge("gossamer-jaeger", False, {}, [])
    assert len(missing) == 1
    assert not missing[0].ok
