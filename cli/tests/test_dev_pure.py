"""Unit tests for local mode's pure parts: names, hosts files, launch lines, status, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import click
import pytest
from gossamer_cli.dev import images, launch, layout, promtext, status, table, volumes


def test_pod_names_are_stable_short_and_owned() -> None:
    node = layout.NodeLayout()
    ns, veth = node.pod_netns("abc-123"), node.pod_veth("abc-123")
    assert ns == node.pod_netns("abc-123") != node.pod_netns("abc-124")
    assert len(veth.encode()) <= 15
    assert node.owns_netns(ns)
    assert node.owns_netns(node.node_netns)
    assert not node.owns_netns("other-ns")


def test_hosts_file_maps_services_and_fixed_names() -> None:
    text = layout.render_hosts(
        pod_name="web-1",
        pod_ip="10.244.1.5",
        services=[
            layout.ServiceAddress("web", "demo", "10.96.0.10"),
            layout.ServiceAddress("headless", "demo", "None"),
        ],
        fixed={"gossamer-identity.gossamer.svc.cluster.local": "10.244.0.1"},
    )
    assert "10.244.1.5 web-1" in text
    assert "10.96.0.10 web.demo.svc.cluster.local web.demo.svc" in text
    assert "10.244.0.1 gossamer-identity.gossamer.svc.cluster.local" in text
    assert "headless" not in text


def test_image_repository_drops_registry_tag_and_digest() -> None:
    assert images.image_repository("gossamer/proxy:dev") == "gossamer/proxy"
    assert images.image_repository("ghcr.io/gossamer/proxy:v1@sha256:ab") == "gossamer/proxy"
    assert images.image_repository("localhost:5000/gossamer/demo-app") == "gossamer/demo-app"


def test_container_argv_follows_kubernetes_rules() -> None:
    image = images.LocalImage(entrypoint=("python", "-m", "x"), cmd=("--default",))
    assert images.container_argv(image, None, None) == ["python", "-m", "x", "--default"]
    assert images.container_argv(image, None, ["--a"]) == ["python", "-m", "x", "--a"]
    assert images.container_argv(image, ["sh"], ["-c", "true"]) == ["sh", "-c", "true"]
    with pytest.raises(images.ImageError):
        images.container_argv(images.LocalImage(), None, None)


def test_image_map_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "images.yaml"
    bad.write_text("images: [1, 2]\n")
    with pytest.raises(images.ImageError, match="expected a mapping under 'images'"):
        images.load_image_map(bad, tmp_path, tmp_path)
    good = tmp_path / "ok.yaml"
    good.write_text("images:\n  demo/app:\n    workdir: app\n    env: {PATH: '{venv}/bin'}\n")
    loaded = images.load_image_map(good, tmp_path, Path("/opt/venv"))
    assert loaded["demo/app"].env["PATH"] == "/opt/venv/bin"
    assert loaded["demo/app"].workdir == str(tmp_path / "app")


def test_launch_line_enters_netns_mounts_and_drops_privileges() -> None:
    ident = launch.identity_for({"securityContext": {"runAsUser": 2102}}, {})
    argv = launch.launch_argv(
        netns="gsm-pod-1",
        identity=ident,
        argv=["python", "-m", "gossamer_proxy"],
        mounts=[launch.Mount("/state/tok", "/var/run/secrets/tokens", read_only=True)],
    )
    assert argv[:4] == ["ip", "netns", "exec", "gsm-pod-1"]
    script = argv[argv.index("-c") + 1]
    assert "mount --bind /state/tok /var/run/secrets/tokens" in script
    assert "remount,bind,ro" in script
    assert "setpriv --reuid=2102 --regid=2102 --clear-groups" in script
    assert argv[-3:] == ["python", "-m", "gossamer_proxy"]


def test_default_app_uid_and_capabilities() -> None:
    app = launch.identity_for({}, {})
    assert (app.uid, app.gid) == (launch.DEFAULT_APP_UID, launch.DEFAULT_APP_UID)
    init = launch.identity_for(
        {"securityContext": {"runAsUser": 65534, "capabilities": {"add": ["NET_ADMIN"]}}}, {}
    )
    argv = launch.launch_argv(netns="n", identity=init, argv=["x"])
    script = argv[argv.index("-c") + 1]
    assert "--ambient-caps=+net_admin" in script


def test_status_patch_conditions_and_phase() -> None:
    proxy = status.ContainerState("proxy", "gossamer/proxy", started_at=100.0, ready=True)
    app = status.ContainerState("app", "demo", started_at=101.0, ready=False)
    pod = status.PodState(containers=[proxy, app], initialized=True)
    pod.phase = status.phase_for(pod, "Always")
    patch = status.pod_status_patch(pod, 102.0, [])["status"]
    conditions = {c["type"]: c["status"] for c in patch["conditions"]}
    assert patch["phase"] == "Running"
    assert conditions == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "False", "Ready": "False",
    }  # fmt: skip
    assert patch["containerStatuses"][0]["state"]["running"]["startedAt"] == "1970-01-01T00:01:40Z"
    app.ready = True
    again = status.pod_status_patch(pod, 200.0, patch["conditions"])["status"]
    scheduled = next(c for c in again["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["lastTransitionTime"] == "1970-01-01T00:01:42Z"  # unchanged, kept


def test_job_phase_succeeds_when_all_containers_exit_zero() -> None:
    done = status.ContainerState("job", "x", started_at=1.0, finished_at=2.0, exit_code=0)
    pod = status.PodState(containers=[done], initialized=True)
    assert status.phase_for(pod, "Never") == "Succeeded"
    done.exit_code = 1
    assert status.phase_for(pod, "OnFailure") == "Failed"


METRICS = """
# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",tls="true",client_id="a"} 90
request_total{direction="inbound",tls="no_identity",no_tls_reason="no_tls_from_remote"} 10
response_total{direction="inbound",classification="success",status_code="200"} 95
response_total{direction="inbound",classification="failure",status_code="502"} 5
response_latency_ms_bucket{direction="inbound",le="10"} 50
response_latency_ms_bucket{direction="inbound",le="100"} 100
response_latency_ms_bucket{direction="inbound",le="+Inf"} 100
process_cpu_seconds_total 1.5
"""


def test_promtext_parses_labels_with_escapes() -> None:
    (sample,) = promtext.parse('m{a="x\\"y",b="1\\n2"} 3.5')
    assert sample.labels == (("a", 'x"y'), ("b", "1\n2"))
    assert sample.value == 3.5
    (inf,) = promtext.parse('h_bucket{le="+Inf"} +Inf')
    assert math.isinf(inf.value)
    with pytest.raises(promtext.PromTextError, match="line 1"):
        list(promtext.parse("m{a=unquoted} 1"))


def test_table_rates_success_latency_and_mtls_share() -> None:
    now = table.counters_by_direction(promtext.parse(METRICS))["inbound"]
    zero = table.Counters()
    r = table.row("web", 1, now.minus(zero), 10.0, "inbound")
    assert r.rps == 10.0
    assert r.success_rate == pytest.approx(0.95)
    assert r.mtls_share == pytest.approx(0.9)
    assert r.p50 == pytest.approx(10.0)
    assert r.p99 == pytest.approx(98.2)
    text = table.render([r], "demo")
    assert "web" in text
    assert "95.0%" in text
    assert "90.0%" in text


def test_counter_reset_counts_from_zero() -> None:
    before = table.Counters(requests=100)
    after = table.Counters(requests=7)
    assert after.minus(before).requests == 7


def test_downward_api_field_paths() -> None:
    pod = {
        "metadata": {"name": "web-1", "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web", "nodeName": "n"},
        "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]},
    }
    assert volumes.field_value(pod, "status.podIPs") == "10.244.1.5,fd00::5"
    assert volumes.field_value(pod, "spec.serviceAccountName") == "web"
    assert volumes.field_value(pod, "metadata.labels['app']") == "web"
    assert volumes.field_value(pod, "metadata.labels") == 'app="web"'
    with pytest.raises(volumes.VolumeError, match="unsupported fieldPath"):
        volumes.field_value(pod, "status.nothing")


def test_a_native_sidecar_that_is_not_ready_keeps_the_pod_unready() -> None:
    proxy = status.ContainerState("proxy", "gossamer/proxy", started_at=100.0, sidecar=True)
    init = status.ContainerState("init", "gossamer/proxy-init", started_at=99.0, exit_code=0)
    app = status.ContainerState("app", "demo", started_at=101.0, ready=True)
    pod = status.PodState(init_containers=[init, proxy], containers=[app], initialized=True)
    pod.phase = status.phase_for(pod, "Always")

    def ready() -> str:
        patch = status.pod_status_patch(pod, 102.0, [])["status"]
        return next(c["status"] for c in patch["conditions"] if c["type"] == "Ready")

    assert ready() == "False"  # the app answers but its proxy does not: no endpoint yet
    proxy.ready = True
    assert ready() == "True"  # a finished (non-sidecar) init container does not gate


def test_dev_kubectl_prefers_the_kube_bins_kubectl_then_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gossamer_cli.dev.command import kubectl_path
    from gossamer_kube.testing.binaries import locate_kubectl

    built = tmp_path / "kube-bins" / "kubectl"
    on_path = tmp_path / "path" / "kubectl"
    for program in (built, on_path):
        program.parent.mkdir()
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv("GOSSAMER_KUBECTL", str(built))
    locate_kubectl.cache_clear()
    try:
        assert kubectl_path() == str(built)
        monkeypatch.setenv("GOSSAMER_KUBECTL", str(tmp_path / "absent"))
        locate_kubectl.cache_clear()
        assert kubectl_path() == str(on_path)
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(click.ClickException, match="make kube-bins"):
            kubectl_path()
    finally:
        locate_kubectl.cache_clear()
