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
        ("ClusterRoleBinding", "gossamer-gossamer-viz-web-admin"),
        ("ServiceAccount", "tap"),
        ("ClusterRole", "gossamer-gossamer-viz-tap"),
        ("ClusterRoleBinding", "gossamer-gossamer-viz-tap"),
        ("ClusterRoleBinding", "gossamer-gossamer-viz-tap-auth-delegator"),
        ("RoleBinding", "gossamer-gossamer-viz-tap-auth-reader"),
        ("Role", "gossamer-viz-tap-trust-roots"),
        ("RoleBinding", "gossamer-viz-tap-trust-roots"),
        ("ClusterRole", "gossamer-gossamer-viz-tap-admin"),
        ("Secret", "tap-k8s-tls"),
        ("Service", "tap"),
        ("APIService", "v1alpha1.tap.linkerd.io"),
        ("Deployment", "tap"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_prometheus_config_uses_pod_discovery_and_linkerds_relabelling() -> None:
    rendered = render("-L", "mesh-system", "--scrape-interval", "5s")
    objects = {
        o["kind"]: o
        for o in rendered
        if o["kind"] != "ConfigMap"
        and (o["metadata"].get("labels") or {}).get("component") in (None, "prometheus")
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


def test_the_tap_service_has_its_identity_its_rights_and_a_serving_certificate() -> None:
    import base64

    from cryptography import x509

    objects = render("-L", "mesh", "--namespace", "viz", "--identity-trust-domain", "example.org")
    named = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    deployment = named[("Deployment", "tap")]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "tap"  # tap.viz.serviceaccount.identity.mesh...
    assert pod["metadata"]["annotations"]["linkerd.io/inject"] == "disabled"
    args = pod["spec"]["containers"][0]["args"]
    assert "--trust-domain=example.org" in args
    assert "--identity-addr=identity.mesh.svc.cluster.local:8080" in args
    assert "--trust-anchors-configmap=mesh/gossamer-identity-trust-roots" in args
    (token,) = [v for v in pod["spec"]["volumes"] if v["name"] == "identity-token"]
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "identity.l5d.io"
    # Delegated authentication and authorization, as an aggregated API server's.
    delegator = named[("ClusterRoleBinding", "mesh-viz-tap-auth-delegator")]
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    reader = named[("RoleBinding", "mesh-viz-tap-auth-reader")]
    assert reader["metadata"]["namespace"] == "kube-system"
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    trust = named[("Role", "viz-tap-trust-roots")]
    assert trust["metadata"]["namespace"] == "mesh"
    assert trust["rules"][0]["resourceNames"] == ["gossamer-identity-trust-roots"]
    # Tapping is Linkerd's tap-admin right; the dashboard has it, nobody else is given it.
    admin = named[("ClusterRole", "mesh-viz-tap-admin")]
    assert admin["rules"] == [
        {"apiGroups": ["tap.linkerd.io"], "resources": ["*"], "verbs": ["watch"]}
    ]
    bindings = [o for o in objects if o["kind"].endswith("Binding")]
    to_admin = [b for b in bindings if b["roleRef"]["name"] == "mesh-viz-tap-admin"]
    assert [s["name"] for b in to_admin for s in b["subjects"]] == ["web"]
    secret = named[("Secret", "tap-k8s-tls")]
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["tap.viz.svc"]
    web_args = named[("Deployment", "web")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tap-url=https://tap.viz.svc.cluster.local:8089" in web_args


def test_the_tap_api_service_routes_to_the_tap_service_trusting_its_ca() -> None:
    import base64

    objects = render("--namespace", "viz")
    named = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    api_service = named[("APIService", "v1alpha1.tap.linkerd.io")]
    assert api_service["apiVersion"] == "apiregistration.k8s.io/v1"
    spec = api_service["spec"]
    assert (spec["group"], spec["version"]) == ("tap.linkerd.io", "v1alpha1")
    assert spec["service"] == {"name": "tap", "namespace": "viz", "port": 8089}
    assert named[("Service", "tap")]["spec"]["ports"][0]["port"] == 8089
    secret = named[("Secret", "tap-k8s-tls")]
    assert spec["caBundle"] == secret["data"]["ca.crt"]
    assert "insecureSkipTLSVerify" not in spec
    assert base64.b64decode(spec["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----")


def test_yaml_output_has_no_anchors_even_where_one_dict_is_used_twice() -> None:
    # The Prometheus and web Deployments share one labels dict between selector and template.
    result = CliRunner().invoke(cli, ["viz", "install"])
    assert result.exit_code == 0, result.output
    assert "&id" not in result.output
    assert "*id" not in result.output
