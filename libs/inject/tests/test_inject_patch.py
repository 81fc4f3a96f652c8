from __future__ import annotations

import copy
import dataclasses
from typing import Any

import kubernetes_validate
import pytest
from gossamer_inject import ManifestError, MeshValues, Origin, Owner, build_pod_patch, jsonpatch
from gossamer_inject.errors import ConfigError, PatchError
from gossamer_inject.opaque import service_patch
from gossamer_inject.uninject import uninject_pod

MESH = MeshValues(trust_anchors_pem="-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n")


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                }
            ],
            **spec,
        },
    }
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    return body


def webhook(p: dict[str, Any], ns: dict[str, str] | None = None, **kw: Any) -> Any:
    return build_pod_patch(
        p,
        mesh=MESH,
        origin=Origin.WEBHOOK,
        created_by="gossamer/proxy-injector test",
        namespace="shop",
        namespace_annotations=ns or {},
        **kw,
    )


def applied(p: dict[str, Any], ops: list[jsonpatch.Op]) -> dict[str, Any]:
    out = jsonpatch.apply(copy.deepcopy(p), ops)
    kubernetes_validate.validate(out, "1.32.0", strict=True)
    return out  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_namespace_enabled_injects_native_sidecar_after_init() -> None:
    result = webhook(pod(), {"linkerd.io/inject": "enabled"}, owner=Owner("Deployment", "web"))
    assert result.decision.inject
    out = applied(pod(), result.ops)
    init, proxy = out["spec"]["initContainers"]
    assert init["name"] == "linkerd-init"
    assert proxy["name"] == "linkerd-proxy"
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 4191}
    assert [c["name"] for c in out["spec"]["containers"]] == ["web"]
    assert proxy["ports"] == [
        {"containerPort": 4143, "name": "linkerd-proxy"},
        {"containerPort": 4191, "name": "linkerd-admin"},
    ]
    assert proxy["securityContext"]["runAsUser"] == 2102
    env = env_of(proxy)
    assert env["LINKERD2_PROXY_INBOUND_PORTS"] == "8080"
    assert (
        env["LINKERD2_PROXY_IDENTITY_SVC_ADDR"]
        == "gossamer-identity.gossamer.svc.cluster.local:8080"
    )
    assert (
        env["LINKERD2_PROXY_DESTINATION_SVC_ADDR"] == "gossamer-dst.gossamer.svc.cluster.local:8086"
    )
    assert env["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"] == MESH.trust_anchors_pem
    assert env["LINKERD2_PROXY_IDENTITY_LOCAL_NAME"] == (
        "$(_pod_sa).$(_pod_ns).serviceaccount.identity.gossamer.cluster.local"
    )
    assert "LINKERD2_PROXY_INGRESS_MODE" not in env
    names = [e["name"] for e in proxy["env"]]
    # $(...) expansion only sees variables defined earlier in the list.
    assert names.index("_pod_sa") < names.index("LINKERD2_PROXY_IDENTITY_LOCAL_NAME")
    assert names.index("_pod_ns") < names.index("LINKERD2_PROXY_DESTINATION_CONTEXT")
    assert init["args"] == [
        "--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140", "--proxy-uid", "2102",
        "--inbound-ports-to-ignore", "4190,4191,4567,4568", "--outbound-ports-to-ignore",
        "4567,4568", "--iptables-mode", "nft", "--ipv6=false",
    ]  # fmt: skip
    meta = out["metadata"]
    assert meta["labels"] == {
        "app": "web",
        "linkerd.io/control-plane-ns": "gossamer",
        "linkerd.io/workload-ns": "shop",
        "linkerd.io/proxy-deployment": "web",
    }
    assert meta["annotations"]["linkerd.io/inject"] == "enabled"  # inherited from namespace
    assert meta["annotations"]["linkerd.io/proxy-version"] == "0.1.0"
    assert len(meta["annotations"]["linkerd.io/trust-root-sha256"]) == 64
    vols = {v["name"]: v for v in out["spec"]["volumes"]}
    token = vols["linkerd-identity-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {
        "audience": "identity.l5d.io",
        "expirationSeconds": 86400,
        "path": "linkerd-identity-token",
    }
    assert vols["linkerd-identity-end-entity"]["emptyDir"] == {"medium": "Memory"}


def test_paths_escape_slashes() -> None:
    result = webhook(pod({"team": "a"}), {"linkerd.io/inject": "enabled"})
    paths = [op["path"] for op in result.ops]
    assert "/metadata/annotations/linkerd.io~1created-by" in paths
    assert jsonpatch.pointer("a/b", "c~d") == "/a~1b/c~0d"


def test_non_native_puts_proxy_first_with_await() -> None:
    p = pod(
        {"linkerd.io/inject": "enabled", "config.linkerd.io/proxy-enable-native-sidecar": "false"}
    )
    out = applied(p, webhook(p).ops)
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["linkerd-init"]
    proxy = out["spec"]["containers"][0]
    assert proxy["name"] == "linkerd-proxy"
    assert proxy["lifecycle"]["postStart"]["exec"]["command"][0] == "gossamer-await"
    assert "restartPolicy" not in proxy
    p["metadata"]["annotations"]["config.linkerd.io/proxy-await"] = "disabled"
    out = applied(p, webhook(p).ops)
    assert out["spec"]["containers"][-1]["name"] == "linkerd-proxy"


def test_existing_init_containers_run_after_the_mesh() -> None:
    p = pod({"linkerd.io/inject": "enabled"}, initContainers=[{"name": "migrate", "image": "m"}])
    out = applied(p, webhook(p).ops)
    assert [c["name"] for c in out["spec"]["initContainers"]] == [
        "linkerd-init",
        "linkerd-proxy",
        "migrate",
    ]


@pytest.mark.parametrize(
    ("pod_value", "ns_value", "inject"),
    [
        (None, None, False),
        (None, "enabled", True),
        (None, "ingress", True),
        ("disabled", "enabled", False),
        ("enabled", None, True),
        ("enabled", "disabled", True),
        (None, "disabled", False),
        ("ingress", None, True),
        ("yes", "enabled", False),
        (None, "on", False),
    ],
)
def test_decision_table(pod_value: str | None, ns_value: str | None, inject: bool) -> None:
    ann = {} if pod_value is None else {"linkerd.io/inject": pod_value}
    ns = {} if ns_value is None else {"linkerd.io/inject": ns_value}
    assert webhook(pod(ann), ns).decision.inject is inject


def test_invalid_inject_value_is_a_requested_refusal() -> None:
    result = webhook(pod({"linkerd.io/inject": "yes"}))
    assert not result.decision.inject
    assert result.decision.requested
    assert "'yes'" in result.decision.reason


def test_ingress_mode_env() -> None:
    p = pod({"linkerd.io/inject": "ingress"})
    proxy = applied(p, webhook(p).ops)["spec"]["initContainers"][1]
    assert env_of(proxy)["LINKERD2_PROXY_INGRESS_MODE"] == "true"


def test_host_network_is_never_injected() -> None:
    result = webhook(pod({"linkerd.io/inject": "enabled"}, hostNetwork=True))
    assert not result.decision.inject
    assert result.decision.requested
    assert "hostNetwork" in result.decision.reason
    assert result.ops == []


def test_already_injected_is_untouched_and_quiet() -> None:
    p = pod({"linkerd.io/inject": "enabled"})
    once = applied(p, webhook(p).ops)
    again = webhook(once)
    assert not again.decision.inject
    assert not again.decision.requested
    assert again.ops == []
    istio = pod({"linkerd.io/inject": "enabled"})
    istio["spec"]["containers"].append({"name": "istio-proxy", "image": "istio/proxyv2:1.22"})
    assert not webhook(istio).decision.inject


def test_port_clash_is_declined() -> None:
    p = pod({"linkerd.io/inject": "enabled"})
    p["spec"]["containers"][0]["ports"].append({"containerPort": 4191})
    result = webhook(p)
    assert not result.decision.inject
    assert result.decision.requested
    assert "web:4191" in result.decision.reason


def test_namespace_config_is_inherited_and_pod_wins() -> None:
    p = pod({"config.linkerd.io/proxy-log-level": "debug"})
    ns = {
        "linkerd.io/inject": "enabled",
        "config.linkerd.io/proxy-log-level": "trace",
        "config.linkerd.io/proxy-cpu-limit": "1",
        "config.alpha.linkerd.io/proxy-wait-before-exit-seconds": "3",
        "unrelated.example/x": "y",
    }
    out = applied(p, webhook(p, ns).ops)
    ann = out["metadata"]["annotations"]
    assert ann["config.linkerd.io/proxy-log-level"] == "debug"
    assert ann["config.linkerd.io/proxy-cpu-limit"] == "1"
    assert "unrelated.example/x" not in ann
    proxy = out["spec"]["initContainers"][1]
    assert env_of(proxy)["LINKERD2_PROXY_LOG"] == "debug"
    assert proxy["resources"] == {"limits": {"cpu": "1"}}
    assert proxy["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sleep", "3"]


def test_opaque_ports_annotation_filtered_to_exposed_ports() -> None:
    p = pod({"linkerd.io/inject": "enabled"})
    p["spec"]["containers"][0]["ports"].append({"containerPort": 3306, "name": "mysql"})
    ann = applied(p, webhook(p).ops)["metadata"]["annotations"]
    assert ann["config.linkerd.io/opaque-ports"] == "3306"
    plain = pod({"linkerd.io/inject": "enabled"})
    assert (
        "config.linkerd.io/opaque-ports"
        not in applied(plain, webhook(plain).ops)["metadata"]["annotations"]
    )


def test_bad_override_raises_config_error() -> None:
    p = pod({"linkerd.io/inject": "enabled", "config.linkerd.io/proxy-cpu-limit": "fast"})
    with pytest.raises(ConfigError, match="proxy-cpu-limit"):
        webhook(p)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(spec=[]),
        lambda p: p["spec"].update(containers=[]),
        lambda p: p["spec"].update(containers="web"),
        lambda p: p["metadata"].update(annotations={"a": 1}),
        lambda p: p["metadata"].update(labels=["x"]),
        lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": "80"}]),
        lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 0}]),
        lambda p: p["spec"].update(volumes={}),
        lambda p: p["spec"].update(initContainers=["x"]),
        lambda p: p.update(metadata="x"),
    ],
)
def test_malformed_pods_raise_manifest_error(mutate: Any) -> None:
    p = pod({"linkerd.io/inject": "enabled"})
    mutate(p)
    with pytest.raises(ManifestError):
        webhook(p)


def test_pod_without_metadata_maps() -> None:
    p = pod(None)
    del p["metadata"]["labels"]
    out = applied(p, webhook(p, {"linkerd.io/inject": "enabled"}).ops)
    assert out["metadata"]["labels"]["linkerd.io/control-plane-ns"] == "gossamer"
    template: dict[str, Any] = {"spec": copy.deepcopy(p["spec"])}
    cli = build_pod_patch(template, mesh=MESH, origin=Origin.CLI, created_by="cli")
    patched = jsonpatch.apply(copy.deepcopy(template), cli.ops)
    assert patched["metadata"]["annotations"]["linkerd.io/created-by"] == "cli"


def test_cli_origin_ignores_namespace_and_respects_disabled() -> None:
    cli = build_pod_patch(pod(), mesh=MESH, origin=Origin.CLI, created_by="cli")
    assert cli.decision.inject
    off = build_pod_patch(
        pod({"linkerd.io/inject": "disabled"}), mesh=MESH, origin=Origin.CLI, created_by="cli"
    )
    assert not off.decision.inject


def test_uninject_reverses_inject() -> None:
    original = pod({"keep": "me"}, initContainers=[{"name": "migrate", "image": "m"}])
    original["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    injected = applied(original, webhook(original, {"linkerd.io/inject": "enabled"}).ops)
    assert uninject_pod(injected)
    injected["metadata"]["annotations"].pop("linkerd.io/inject")
    assert injected == original
    assert not uninject_pod(injected)


def test_service_opaque_ports() -> None:
    svc = {
        "metadata": {"name": "db"},
        "spec": {
            "ports": [
                {"port": 5432},
                {"port": 80, "targetPort": 3306},
                {"port": 8080, "targetPort": "http"},
                {"port": 6379, "protocol": "UDP"},
            ]
        },
    }
    ops = service_patch(svc, namespace_annotations={}, default=MESH.opaque_ports)
    out = jsonpatch.apply(copy.deepcopy(svc), ops)
    assert out["metadata"]["annotations"] == {"config.linkerd.io/opaque-ports": "5432,80"}
    assert service_patch(out, namespace_annotations={}, default=MESH.opaque_ports) == []
    ns = {"config.linkerd.io/opaque-ports": "8080"}
    ops = service_patch(svc, namespace_annotations=ns, default=MESH.opaque_ports)
    assert ops[-1]["value"] == "8080"
    web = {"metadata": {"name": "w"}, "spec": {"ports": [{"port": 80}]}}
    assert service_patch(web, namespace_annotations={}, default=MESH.opaque_ports) == []
    with pytest.raises(ManifestError):
        service_patch({"spec": {"ports": [{"port": "x"}]}}, namespace_annotations={}, default="")


def test_jsonpatch_errors() -> None:
    doc = {"a": [1, 2]}
    with pytest.raises(PatchError):
        jsonpatch.apply(doc, [jsonpatch.remove("/b")])
    with pytest.raises(PatchError):
        jsonpatch.apply(doc, [jsonpatch.add("/a/9", 1)])
    with pytest.raises(PatchError):
        jsonpatch.apply(doc, [jsonpatch.add("/a/01", 1)])
    with pytest.raises(PatchError):
        jsonpatch.apply(doc, [{"op": "move", "path": "/a"}])
    with pytest.raises(PatchError):
        jsonpatch.apply(doc, [jsonpatch.add("nope", 1)])
    assert jsonpatch.apply(doc, [jsonpatch.add("/a/-", 3), jsonpatch.replace("/a/0", 0)]) == {
        "a": [0, 2, 3]
    }


def test_control_plane_names_are_left_out_without_control_plane_tls() -> None:
    p = pod({"linkerd.io/inject": "enabled"})
    named = env_of(applied(p, webhook(p).ops)["spec"]["initContainers"][1])
    assert named["LINKERD2_PROXY_IDENTITY_SVC_NAME"].startswith("gossamer-identity.gossamer.")
    plain_mesh = dataclasses.replace(MESH, control_plane_tls=False)
    plain = build_pod_patch(
        p,
        mesh=plain_mesh,
        origin=Origin.WEBHOOK,
        created_by="test",
        namespace="shop",
        namespace_annotations={},
    )
    env = env_of(applied(p, plain.ops)["spec"]["initContainers"][1])
    for name in ("IDENTITY", "DESTINATION", "POLICY"):
        assert f"LINKERD2_PROXY_{name}_SVC_NAME" not in env
        assert f"LINKERD2_PROXY_{name}_SVC_ADDR" in env


def _proxy(out: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in out["spec"]["initContainers"] if c["name"] == "linkerd-proxy")


def test_trace_collector_namespace_annotation_sets_the_proxys_trace_env() -> None:
    p = pod()
    ns = {
        "linkerd.io/inject": "enabled",
        "config.linkerd.io/trace-collector": "collector.tracing:4317",
    }
    patch = webhook(p, ns, owner=Owner("Deployment", "web"))
    out = applied(p, patch.ops)
    proxy = _proxy(out)
    env = env_of(proxy)
    assert env["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR"] == "collector.tracing:4317"
    assert env["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME"] == (
        "collector.tracing.serviceaccount.identity.gossamer.cluster.local"
    )
    assert env["LINKERD2_PROXY_TRACE_PROTOCOL"] == "opentelemetry"
    assert env["LINKERD2_PROXY_TRACE_SERVICE_NAME"] == "web"
    assert env["LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH"] == "/var/run/linkerd/podinfo/labels"
    assert {"mountPath": "/var/run/linkerd/podinfo", "name": "linkerd-podinfo"} in proxy[
        "volumeMounts"
    ]
    podinfo = next(v for v in out["spec"]["volumes"] if v["name"] == "linkerd-podinfo")
    assert podinfo["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.labels"
    assert out["metadata"]["annotations"]["jaeger.linkerd.io/tracing-enabled"] == "true"
    # uninject takes all of it away again
    assert uninject_pod(out)
    assert "linkerd-podinfo" not in {v["name"] for v in out["spec"].get("volumes", [])}
    assert "jaeger.linkerd.io/tracing-enabled" not in out["metadata"].get("annotations", {})


def test_trace_collector_service_account_and_bare_names() -> None:
    p = pod(
        {
            "linkerd.io/inject": "enabled",
            "config.linkerd.io/trace-collector": "otel:4317",
            "config.alpha.linkerd.io/trace-collector-service-account": "otel-sa",
        }
    )
    env = env_of(_proxy(applied(p, webhook(p).ops)))
    assert env["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME"] == (
        "otel-sa.$(_pod_ns).serviceaccount.identity.gossamer.cluster.local"
    )
    assert env["LINKERD2_PROXY_TRACE_SERVICE_NAME"] == "$(_pod_name)"  # no owner known


def test_without_a_collector_nothing_of_tracing_is_written() -> None:
    p = pod({"linkerd.io/inject": "enabled"})
    out = applied(p, webhook(p).ops)
    assert not any(k.startswith("LINKERD2_PROXY_TRACE") for k in env_of(_proxy(out)))
    assert "linkerd-podinfo" not in {v["name"] for v in out["spec"]["volumes"]}


@pytest.mark.parametrize("value", ["collector", "collector:port", "collector:0", "a b:1"])
def test_a_bad_trace_collector_is_a_config_error(value: str) -> None:
    p = pod({"linkerd.io/inject": "enabled", "config.linkerd.io/trace-collector": value})
    with pytest.raises(ConfigError, match="trace-collector"):
        webhook(p)


def test_an_ip_collector_has_no_identity() -> None:
    p = pod({"linkerd.io/inject": "enabled", "config.linkerd.io/trace-collector": "10.0.0.7:4317"})
    env = env_of(_proxy(applied(p, webhook(p).ops)))
    assert env["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR"] == "10.0.0.7:4317"
    assert "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME" not in env
