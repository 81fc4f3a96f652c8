"""``gossamer diagnostics``: Linkerd's output shapes; live against a destination and an admin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2
from gossamer_cli import diagnostics_cmd as dc
from gossamer_cli import diagnostics_pods as dp
from gossamer_cli.main import cli
from gossamer_common.admin import AdminServer
from gossamer_common.metrics import Registry
from gossamer_destination import testing as t
from gossamer_destination.app import DestinationApp
from gossamer_destination.settings import DestinationSettings
from gossamer_kube.resources import DEPLOYMENTS, PODS, REPLICASETS

TIMEOUT = 10.0


# -- resources and pods ------------------------------------------------------------------


def test_parse_resource_accepts_linkerds_kinds() -> None:
    assert dp.parse_resource("deploy/web") == (DEPLOYMENTS, "web")
    assert dp.parse_resource("po/web-0") == (PODS, "web-0")
    for bad, reason in (("web", "TYPE/NAME"), ("svc/web", "unsupported"), ("po/", "TYPE/NAME")):
        with pytest.raises(dp.ResourceError, match=reason):
            dp.parse_resource(bad)


def _pod(name: str, *, owner: str = "rs-uid", phase: str = "Running", native: bool = True) -> Any:
    proxy = {"name": "linkerd-proxy", "ports": [{"name": "linkerd-admin", "containerPort": 4191}]}
    spec = {"initContainers": [proxy], "containers": []} if native else {"containers": [proxy]}
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": owner}]},
        "spec": spec,
        "status": {"phase": phase, "podIP": "10.1.0.7"},
    }


def test_admin_target_finds_the_native_sidecar_port_and_says_why_not() -> None:
    assert dp.admin_target(_pod("a")) == dp.AdminTarget("a", "10.1.0.7", 4191)
    assert dp.admin_target(_pod("b", native=False)).port == 4191
    assert dp.admin_target(_pod("c", phase="Pending")).error == "pod not running: c"
    unmeshed = {"metadata": {"name": "d"}, "spec": {}, "status": {"phase": "Running"}}
    assert "no linkerd-admin port" in str(dp.admin_target(unmeshed).error)


class _FakeKube:
    def __init__(self, objects: dict[tuple[str, str], Any], lists: dict[str, list[Any]]) -> None:
        self.objects, self.lists = objects, lists
        self.selectors: list[str | None] = []

    async def get(self, ref: Any, name: str, namespace: str | None = None) -> Any:
        return self.objects[(ref.plural, name)]

    async def list(
        self, ref: Any, namespace: str | None = None, label_selector: str | None = None
    ) -> Any:
        self.selectors.append(label_selector)
        return self.lists[ref.plural], "1"


async def test_deployment_pods_are_those_of_its_replicasets() -> None:
    deploy = {"metadata": {"uid": "d-uid"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}}
    rs = {"metadata": {"name": "web-1", "uid": "rs-uid", "ownerReferences": [{"uid": "d-uid"}]},
          "spec": {"selector": {"matchLabels": {"app": "web", "h": "1"}}}}  # fmt: skip
    other_rs = {"metadata": {"name": "x", "uid": "x", "ownerReferences": [{"uid": "other"}]}}
    kube = _FakeKube(
        {(DEPLOYMENTS.plural, "web"): deploy, (REPLICASETS.plural, "web-1"): rs},
        {
            REPLICASETS.plural: [rs, other_rs],
            PODS.plural: [_pod("web-1-a"), _pod("stray", owner="nobody")],
        },
    )
    pods = await dp.pods_for(kube, "ns", "deploy/web")
    assert [p["metadata"]["name"] for p in pods] == ["web-1-a"]
    assert kube.selectors == ["app=web", "app=web,h=1"]


def test_obfuscate_hashes_identifying_labels_only() -> None:
    text = (
        "# HELP request_total x\n"
        'request_total{direction="outbound",authority="web.ns.svc.cluster.local:80"} 3\n'
    )
    out = dp.obfuscate_metrics(text)
    assert out.startswith("# HELP request_total x\n")
    assert 'direction="outbound"' in out
    assert "web.ns" not in out
    assert 'authority="' in out
    assert out.endswith("} 3\n")


# -- rendering ---------------------------------------------------------------------------


def _update(service: str, namespace: str, *pods: tuple[str, str, int]) -> destination_pb2.Update:
    update = destination_pb2.Update()
    update.add.metric_labels.update({"service": service, "namespace": namespace})
    for pod, ip, port in pods:
        addr = update.add.addrs.add()
        addr.addr.CopyFrom(tcp_address_to_proto(ip, port))
        addr.metric_labels["pod"] = pod
    return update


def test_endpoints_table_and_json_follow_linkerd() -> None:
    rows = dc.endpoint_rows(
        [_update("web", "emojivoto", ("web-0", "10.1.0.1", 8080), ("web-1", "10.1.0.2", 8080))]
    )
    assert dc.render_endpoints(rows, "table") == (
        "NAMESPACE   IP         PORT   POD     SERVICE\n"
        "emojivoto   10.1.0.1   8080   web-0   web.emojivoto\n"
        "emojivoto   10.1.0.2   8080   web-1   web.emojivoto\n"
    )
    assert json.loads(dc.render_endpoints(rows, "json"))[1] == {
        "namespace": "emojivoto", "ip": "10.1.0.2", "port": 8080, "pod": "web-1",
        "service": "web.emojivoto",
    }  # fmt: skip


def test_proxy_metrics_headers() -> None:
    results = [
        dc.MetricsResult("web-b", None, "pod not running: web-b"),
        dc.MetricsResult("web-a", "up 1\n", None),
    ]
    assert dc.render_proxy_metrics(results, obfuscate=False) == (
        "#\n# POD web-a (1 of 2)\n#\nup 1\n"
        "#\n# POD web-b (2 of 2)\n#\n# ERROR pod not running: web-b\n"
    )


# -- live: a real admin server and a real destination on loopback -------------------------


async def test_proxy_metrics_reads_a_real_admin_server(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    registry.counter_family("request_total", "x", ("authority",)).labels("web:80").value += 2
    admin = AdminServer(registry=registry)
    await admin.start("127.0.0.1", 0)
    pod = _pod("web-0")
    pod["status"]["podIP"] = "127.0.0.1"
    pod["spec"]["initContainers"][0]["ports"][0]["containerPort"] = admin.port

    async def fake_kube(kubeconfig: str | None, call: Any) -> Any:
        return [pod, _pod("web-1", phase="Pending")]

    monkeypatch.setattr(dc, "_kube", fake_kube)
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["diagnostics", "proxy-metrics", "-n", "ns", "deploy/web"]
        )
    finally:
        await admin.close()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#\n# POD web-0 (1 of 2)\n#\n# HELP request_total x\n")
    assert 'request_total{authority="web:80"} 2\n' in result.output
    assert result.output.endswith("#\n# POD web-1 (2 of 2)\n#\n# ERROR pod not running: web-1\n")


@pytest.fixture
async def destination() -> AsyncIterator[DestinationApp]:
    sources = t.memory_sources(
        t.namespace("ns"),
        t.service("web"),
        t.endpoint_slice("web", [("10.1.0.1", "web-1"), ("10.1.0.2", "web-2")]),
        t.pod("web-1", "10.1.0.1"),
        t.pod("web-2", "10.1.0.2"),
    )
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="127.0.0.1:0", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
    await asyncio.wait_for(app.start(), TIMEOUT)
    try:
        yield app
    finally:
        await app.stop(grace=0)


async def _run(*args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["diagnostics", *args])


async def test_endpoints_profile_and_policy_against_the_real_destination(
    destination: DestinationApp,
) -> None:
    dst = f"127.0.0.1:{destination.grpc_port}"
    table = await _run("endpoints", "--api-addr", dst, "web.ns.svc.cluster.local:80")
    assert table.exit_code == 0, table.output
    assert table.output.splitlines() == [
        "NAMESPACE   IP         PORT   POD     SERVICE",
        "ns          10.1.0.1   8080   web-1   web.ns",
        "ns          10.1.0.2   8080   web-2   web.ns",
    ]
    as_json = await _run(
        "endpoints", "-o", "json", "--api-addr", dst, "web.ns.svc.cluster.local:80"
    )
    assert [e["pod"] for e in json.loads(as_json.output)] == ["web-1", "web-2"]
    missing = await _run("endpoints", "--api-addr", dst, "nope.ns.svc.cluster.local:80")
    assert missing.exit_code != 0
    assert "NOT_FOUND" in missing.output

    prof = await _run("profile", "--api-addr", dst, "web.ns.svc.cluster.local:80")
    assert prof.exit_code == 0, prof.output
    assert json.loads(prof.output)["fully_qualified_name"] == "web.ns.svc.cluster.local"

    pol = f"127.0.0.1:{destination.policy_port}"
    outbound = await _run("policy", "-n", "ns", "--api-addr", pol, "svc/web", "80")
    assert outbound.exit_code == 0, outbound.output
    doc = yaml.safe_load(outbound.output)
    assert doc["metadata"]["resource"]["name"] == "web"
    inbound = await _run("policy", "-n", "ns", "-o", "json", "--api-addr", pol, "po/web-1", "8080")
    assert inbound.exit_code == 0, inbound.output
    assert "protocol" in json.loads(inbound.output)
    bad = await _run("policy", "--api-addr", pol, "deploy/web", "80")
    assert bad.exit_code == 2
    assert "po/NAME (inbound) or svc/NAME (outbound)" in bad.output


def test_control_plane_address_comes_from_local_mode_or_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    annotations = {dc.local_grpc_address_annotation("policy"): "10.0.0.1:8090"}

    async def fake_kube(kubeconfig: str | None, call: Any) -> Any:
        return {"metadata": {"annotations": annotations}}

    monkeypatch.setattr(dc, "_kube", fake_kube)
    assert dc._api_addr("127.0.0.1:1", "policy", None, "gossamer") == "127.0.0.1:1"
    assert dc._api_addr(None, "policy", None, "gossamer") == "10.0.0.1:8090"
    with pytest.raises(click.ClickException, match="pass --api-addr"):
        dc._api_addr(None, "destination", None, "gossamer")
