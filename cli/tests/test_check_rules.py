"""``gossamer check``'s pure rules over snapshots built from what ``gossamer install`` renders."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli import __version__
from gossamer_cli import check_rules as rules
from gossamer_cli.check import probe_ready, render_table
from gossamer_cli.dev.controlplane import ControlPlane
from gossamer_cli.dev.layout import NodeLayout
from gossamer_cli.main import cli
from gossamer_tls import certificates_to_pem, create_issuer, generate_trust_anchor_and_issuer

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _now_is_when_the_test_runs() -> None:
    """Certificates made by fixtures use the real clock; judge them at the test's own time.

    A module-level "now" taken at import would be minutes older than certificates generated
    later in a long run, and make them look not yet valid.
    """
    global NOW
    NOW = dt.datetime.now(dt.UTC)


def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    result = CliRunner().invoke(cli, ["install"])
    assert result.exit_code == 0, result.output
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.output) if d}


def running_pod(deployment: Mapping[str, Any], index: int) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "metadata": {**template["metadata"], "name": f"{deployment['metadata']['name']}-{index}"},
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{"name": "linkerd-proxy", "ready": True}],
        },
    }


@pytest.fixture
def healthy() -> rules.Snapshot:
    objs = rendered()
    deployments = [
        {**d, "status": {"readyReplicas": d["spec"]["replicas"]}}
        for (kind, _), d in objs.items()
        if kind == "Deployment"
    ]
    crds = ("servers.policy.linkerd.io",)
    return rules.Snapshot(
        namespace="gossamer",
        cli_version=__version__,
        server_version="v1.30.14",
        namespace_object=objs["Namespace", "gossamer"],
        config_map=objs["ConfigMap", "gossamer-config"],
        trust_roots=objs["ConfigMap", "gossamer-identity-trust-roots"],
        issuer_secret=objs["Secret", "gossamer-identity-issuer"],
        injector_secret=objs["Secret", "gossamer-proxy-injector-k8s-tls"],
        webhook=objs["MutatingWebhookConfiguration", "gossamer-proxy-injector-webhook-config"],
        crd_names=frozenset(crds),
        crd_versions={name: ("v1",) for name in rules.GATEWAY_API_CRDS},
        expected_crds=crds,
        cluster_roles=frozenset(n for k, n in objs if k == "ClusterRole"),
        cluster_role_bindings=frozenset(n for k, n in objs if k == "ClusterRoleBinding"),
        service_accounts=frozenset(n for k, n in objs if k == "ServiceAccount"),
        services=frozenset(n for k, n in objs if k == "Service"),
        deployments=tuple(deployments),
        control_plane_pods=tuple(running_pod(d, 0) for d in deployments),
    )


def failures(results: list[rules.Result]) -> list[str]:
    return [r.description for r in results if not r.ok and not r.warning]


def test_a_healthy_control_plane_passes(healthy: rules.Snapshot) -> None:
    results = rules.run(healthy, NOW)
    assert failures(results) == []
    assert not rules.failed(results)
    categories = [r.category for r in results]
    assert categories[0] == "kubernetes-api"
    assert "linkerd-webhooks-and-apisvc-tls" in categories
    assert render_table(results).endswith("Status check results are \u221a")


def test_unreachable_cluster_stops_after_kubernetes_api(healthy: rules.Snapshot) -> None:
    healthy.server_version = None
    healthy.client_error = "connection refused"
    results = rules.run(healthy, NOW)
    assert {r.category for r in results} == {"kubernetes-api"}
    assert failures(results) == ["can query the Kubernetes API"]


def test_old_kubernetes_is_named(healthy: rules.Snapshot) -> None:
    healthy.server_version = "v1.27.3"
    assert failures(rules.run(healthy, NOW)) == [
        "is running the minimum Kubernetes API version (v1.29)"
    ]


def test_missing_webhook(healthy: rules.Snapshot) -> None:
    healthy.webhook = None
    results = rules.run(healthy, NOW)
    assert failures(results) == ["proxy-injector MutatingWebhookConfiguration exists"]
    table = render_table(results)
    assert "\u00d7 proxy-injector MutatingWebhookConfiguration exists" in table
    assert "see: re-apply the control plane" in table


def test_expired_issuer(healthy: rules.Snapshot) -> None:
    material = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=NOW - dt.timedelta(days=40),
    )
    expired = create_issuer(
        material.trust_anchor,
        common_name="identity.gossamer.cluster.local",
        now=NOW - dt.timedelta(days=30),
        lifetime=dt.timedelta(days=1),
    )
    healthy.trust_roots = {
        "data": {"ca-bundle.crt": certificates_to_pem([material.trust_anchor.certificate]).decode()}
    }
    healthy.issuer_secret = {
        "data": {"crt.pem": base64.b64encode(certificates_to_pem([expired.certificate])).decode()}
    }
    failed = failures(rules.run(healthy, NOW))
    assert "issuer credentials are within their validity period" in failed
    assert "issuer credentials are signed by the trust anchor" in failed


def test_issuer_from_another_anchor(healthy: rules.Snapshot) -> None:
    other = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
    )
    healthy.issuer_secret = {
        "data": {
            "crt.pem": base64.b64encode(certificates_to_pem([other.issuer.certificate])).decode()
        }
    }
    assert failures(rules.run(healthy, NOW)) == [
        "issuer credentials are signed by the trust anchor"
    ]


def test_garbage_trust_roots(healthy: rules.Snapshot) -> None:
    healthy.trust_roots = {"data": {"ca-bundle.crt": "hello"}}
    assert failures(rules.run(healthy, NOW)) == [
        "trust anchors are using a valid format",
        "control plane proxies trust the current trust anchors",
    ]


def test_webhook_ca_mismatch_and_missing_service(healthy: rules.Snapshot) -> None:
    other = rendered()["MutatingWebhookConfiguration", "gossamer-proxy-injector-webhook-config"]
    healthy.webhook = other
    healthy.services = healthy.services - {"gossamer-proxy-injector"}
    assert failures(rules.run(healthy, NOW)) == [
        "proxy-injector caBundle verifies the serving certificate",
        "proxy-injector webhook points at an existing Service",
    ]


def test_unavailable_deployment_and_unready_pods(healthy: rules.Snapshot) -> None:
    d = dict(healthy.deployments[0])
    d["status"] = {"readyReplicas": 0}
    healthy.deployments = (d, *healthy.deployments[1:])
    pod = dict(healthy.control_plane_pods[1])
    pod["status"] = {"phase": "Pending"}
    healthy.control_plane_pods = (healthy.control_plane_pods[0], pod)
    failed = failures(rules.run(healthy, NOW))
    assert f"{d['metadata']['name']} Deployment is available" in failed
    assert "control plane pods are ready" in failed
    assert "control plane proxies are ready" in failed


def test_missing_rbac_and_crds(healthy: rules.Snapshot) -> None:
    healthy.cluster_roles = frozenset()
    healthy.crd_names = frozenset()
    result = {r.description: r for r in rules.run(healthy, NOW)}
    assert not result["control plane ClusterRoles exist"].ok
    assert "gossamer-gossamer-identity" in result["control plane ClusterRoles exist"].message
    assert "gossamer install --crds" in result["control plane CustomResourceDefinitions exist"].hint


def test_objects_of_unenforced_crds_are_named_as_warnings(
    healthy: rules.Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    crd = "widgets.example.linkerd.io"
    monkeypatch.setattr(rules, "UNENFORCED_CRDS", {crd: "Widget"})
    healthy.crd_names = healthy.crd_names | {crd}
    described = {r.description: r for r in rules.run(healthy, NOW)}
    # Installed but unused: check still says the CRD is not enforced.
    title = f"no Widget objects ({crd} is installed, not enforced by Gossamer)"
    assert described[title].ok
    healthy.unenforced_objects = {crd: 2}
    results = rules.run(healthy, NOW)
    flagged = [r for r in results if not r.ok]
    assert [r.description for r in flagged] == [title]
    assert flagged[0].warning
    assert "2 Widget object(s) exist" in flagged[0].message
    assert "does not enforce Widget" in flagged[0].message
    assert not rules.failed(results)  # a warning, not a failure


def test_external_workloads_are_enforced_and_invalid_ones_are_named(
    healthy: rules.Snapshot,
) -> None:
    from gossamer_cli.check import invalid_external_workloads

    assert rules.EXTERNAL_WORKLOADS_CRD not in rules.UNENFORCED_CRDS
    healthy.crd_names = healthy.crd_names | {rules.EXTERNAL_WORKLOADS_CRD}
    described = {r.description: r for r in rules.run(healthy, NOW)}
    assert described["ExternalWorkloads are valid"].ok
    assert not [d for d in described if "ExternalWorkload objects" in d]
    good = {
        "metadata": {"name": "vm-1", "namespace": "ns"},
        "spec": {"meshTLS": {"identity": "spiffe://td/vm-1", "serverName": "vm-1.td"}},
    }
    bad = {
        "metadata": {"name": "vm-2", "namespace": "ns"},
        "spec": {"meshTLS": {"identity": "spiffe://td/vm-2", "serverName": "VM_2"}},
    }
    healthy.invalid_external_workloads = invalid_external_workloads([good, bad])
    results = rules.run(healthy, NOW)
    (flagged,) = [r for r in results if not r.ok]
    assert flagged.description == "ExternalWorkloads are valid"
    assert flagged.warning
    assert "ExternalWorkload ns/vm-2: spec.meshTLS.serverName 'VM_2'" in flagged.message
    assert "vm-1" not in flagged.message
    assert not rules.failed(results)


def test_mesh_attached_tls_and_tcp_routes_are_named_as_unenforced(
    healthy: rules.Snapshot,
) -> None:
    tls, tcp = "tlsroutes.gateway.networking.k8s.io", "tcproutes.gateway.networking.k8s.io"
    assert not [r for r in rules.run(healthy, NOW) if "TLSRoute" in r.description]
    healthy.crd_names = healthy.crd_names | {tls, tcp}
    healthy.unenforced_routes = {tls: 3, tcp: 0}
    results = rules.run(healthy, NOW)
    named = {r.description: r for r in results if "Route objects with" in r.description}
    assert len(named) == 2
    (flagged,) = [r for r in named.values() if not r.ok]
    assert f"({tls} is not enforced there by Gossamer)" in flagged.description
    assert flagged.warning
    assert "3 TLSRoute object(s) name a Server" in flagged.message
    (tcp_line,) = [d for d in named if "TCPRoute" in d]
    assert "with a Server parent" in tcp_line  # Service and EgressNetwork parents are enforced


SERVICE = {"name": "web", "kind": "Service", "group": "core"}
EGRESS = {"name": "out", "kind": "EgressNetwork", "group": "policy.linkerd.io"}
SERVER = {"name": "srv", "kind": "Server", "group": "policy.linkerd.io"}


@pytest.mark.parametrize(
    ("crd", "parents", "ignored"),
    [
        ("tlsroutes.gateway.networking.k8s.io", [SERVER], True),
        ("tcproutes.gateway.networking.k8s.io", [SERVER], True),
        ("tlsroutes.gateway.networking.k8s.io", [SERVICE], False),  # the outbound policy's
        ("tlsroutes.gateway.networking.k8s.io", [{**SERVICE, "group": ""}], False),
        ("tlsroutes.gateway.networking.k8s.io", [EGRESS], False),
        ("tcproutes.gateway.networking.k8s.io", [SERVICE], False),
        ("tcproutes.gateway.networking.k8s.io", [EGRESS], False),
        ("tlsroutes.gateway.networking.k8s.io", [{"name": "gw"}], False),  # a Gateway's
        ("tlsroutes.gateway.networking.k8s.io", [], False),
        ("tlsroutes.gateway.networking.k8s.io", ["not-a-ref"], False),
    ],
)
def test_which_route_parents_are_unenforced(crd: str, parents: list[Any], ignored: bool) -> None:
    unenforced = rules.UNENFORCED_MESH_ROUTES[crd].parents
    assert rules.has_parent({"spec": {"parentRefs": parents}}, unenforced) is ignored


async def test_list_objects_reads_one_bounded_page() -> None:
    from gossamer_cli.check import LIST_LIMIT, _list_objects

    asked: list[tuple[str, dict[str, str]]] = []

    class Client:
        async def request(self, method: str, path: str, *, params: dict[str, str]) -> Any:
            asked.append((path, params))
            return {"items": [{"spec": {}}, "junk"]}

    async def get(key: str, call: Any) -> Any:
        return await call()

    crd = {
        "metadata": {"name": "tlsroutes.gateway.networking.k8s.io"},
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": {"plural": "tlsroutes"},
            "versions": [{"name": "v1alpha2", "served": True, "storage": True}],
        },
    }
    assert await _list_objects(Client(), crd, get) == [{"spec": {}}]
    path = "/apis/gateway.networking.k8s.io/v1alpha2/tlsroutes"
    assert asked == [(path, {"limit": str(LIST_LIMIT)})]


def test_egress_networks_are_enforced_so_not_warned_about() -> None:
    assert "egressnetworks.policy.linkerd.io" not in rules.UNENFORCED_CRDS


def test_unenforced_crds_are_installed_by_the_chart() -> None:
    """Every CRD the rule watches for is one the chart installs (else the rule is dead)."""
    from gossamer_cli.check import expected_crds

    assert set(rules.UNENFORCED_CRDS) <= set(expected_crds())


async def test_count_objects_of_a_crd() -> None:
    from gossamer_cli.check import _count_objects

    asked: list[tuple[str, dict[str, str]]] = []

    class Client:
        async def request(self, method: str, path: str, *, params: dict[str, str]) -> Any:
            asked.append((path, params))
            return {"items": [{}], "metadata": {"remainingItemCount": 4}}

    async def get(key: str, call: Any) -> Any:
        return await call()

    crd = {
        "metadata": {"name": "egressnetworks.policy.linkerd.io"},
        "spec": {
            "group": "policy.linkerd.io",
            "names": {"plural": "egressnetworks"},
            "versions": [{"name": "v1alpha1", "served": True, "storage": True}],
        },
    }
    assert await _count_objects(Client(), crd, get) == 5
    assert asked == [("/apis/policy.linkerd.io/v1alpha1/egressnetworks", {"limit": "1"})]


def test_version_skew_is_a_warning(healthy: rules.Snapshot) -> None:
    healthy.cli_version = "9.9.9"
    results = rules.run(healthy, NOW)
    assert not rules.failed(results)
    assert any(r.warning and not r.ok for r in results)
    assert "\u203c control plane and cli versions match" in render_table(results)


def test_pre_checks(healthy: rules.Snapshot) -> None:
    healthy.access = {f"{v} {r}": True for v, r in rules.PRE_ACCESS}
    assert failures(rules.run(healthy, NOW, pre=True)) == [
        "control plane namespace does not already exist"
    ]
    healthy.namespace_object = None
    healthy.access["create customresourcedefinitions"] = False
    assert failures(rules.run(healthy, NOW, pre=True)) == ["can create customresourcedefinitions"]


def test_data_plane(healthy: rules.Snapshot) -> None:
    app = running_pod(healthy.deployments[0], 7)
    uninjected = {"metadata": {"name": "plain"}, "spec": {"containers": []}, "status": {}}
    healthy.data_plane_pods = (app, uninjected)
    healthy.data_plane_namespace = "demo"
    failed = failures(rules.run(healthy, NOW, proxy=True))
    assert failed == ["data plane pods are injected"]
    healthy.data_plane_namespace_exists = False
    assert failures(rules.run(healthy, NOW, proxy=True)) == ["data plane namespace exists"]


def test_bad_kubeconfig_is_named(healthy: rules.Snapshot) -> None:
    healthy.config_error = "no such file: /nope"
    results = rules.run(healthy, NOW)
    assert failures(results) == ["can initialize the client"]
    assert results[0].message == "no such file: /nope"


def test_check_command_without_a_cluster(tmp_path: Any) -> None:
    result = CliRunner().invoke(cli, ["check", "--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "\u00d7 can initialize the client" in result.output
    assert str(tmp_path / "missing") in result.output


# --- local mode (gossamer dev: the control plane runs as processes) ---------------------------


@pytest.fixture
def local(tmp_path: Path) -> rules.Snapshot:
    """What check reads from a local-mode plane: objects from ControlPlane's own registration."""
    plane = ControlPlane(
        tmp_path, tmp_path / "kubeconfig", NodeLayout(), runtime_venv=tmp_path, apiserver_port=6443
    )
    plane.write_pki(NOW)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in plane.configuration()}
    assert not {k for k, _ in objs} & {"Deployment", "Service", "PodDisruptionBudget"}
    crds = ("servers.policy.linkerd.io",)
    return rules.Snapshot(
        namespace="gossamer",
        cli_version=__version__,
        server_version="v1.30.14",
        namespace_object=objs["Namespace", "gossamer"],
        config_map=objs["ConfigMap", "gossamer-config"],
        trust_roots=objs["ConfigMap", "gossamer-identity-trust-roots"],
        issuer_secret=objs["Secret", "gossamer-identity-issuer"],
        injector_secret=objs["Secret", "gossamer-proxy-injector-k8s-tls"],
        webhook=plane.webhook_configuration(),
        crd_names=frozenset(crds),
        crd_versions={name: ("v1",) for name in rules.GATEWAY_API_CRDS},
        expected_crds=crds,
        cluster_roles=frozenset(n for k, n in objs if k == "ClusterRole"),
        cluster_role_bindings=frozenset(n for k, n in objs if k == "ClusterRoleBinding"),
        service_accounts=frozenset(n for k, n in objs if k == "ServiceAccount"),
        admin_ready={"identity": None, "destination": None, "proxy-injector": None},
    )


def test_local_mode_records_its_admin_addresses(local: rules.Snapshot) -> None:
    assert local.local_mode
    assert rules.local_admin_addresses(local.config_map) == {
        "identity": "10.244.0.2:9990",
        "destination": "10.244.0.3:9996",
        "proxy-injector": "127.0.0.1:9995",
    }


def test_a_healthy_local_mode_plane_passes(local: rules.Snapshot) -> None:
    results = rules.run(local, NOW)
    assert failures(results) == []
    assert [r.description for r in results if not r.ok] == []  # not even a warning
    described = [r.description for r in results]
    assert "gossamer-proxy-injector answers /ready on its admin address (local mode)" in described
    assert "proxy-injector caBundle verifies the serving certificate" in described
    assert "proxy-injector webhook URL is an https URL with a host" in described
    assert "control plane pods are ready" not in described
    assert rules.CP_PROXY not in {r.category for r in results}


def test_local_mode_names_the_component_that_is_not_ready(local: rules.Snapshot) -> None:
    local.admin_ready["destination"] = "cannot connect to 127.0.0.1:9996: Connection refused"
    results = rules.run(local, NOW)
    assert failures(results) == [
        "gossamer-destination answers /ready on its admin address (local mode)"
    ]
    table = render_table(results)
    assert "gossamer-destination is not ready: cannot connect to 127.0.0.1:9996" in table
    assert "control-plane/logs/destination.log" in table


def test_local_mode_without_an_admin_address(local: rules.Snapshot) -> None:
    assert local.config_map is not None
    annotations = local.config_map["metadata"]["annotations"]
    del annotations[rules.admin_address_annotation("identity")]
    del local.admin_ready["identity"]
    results = rules.run(local, NOW)
    assert failures(results) == [
        "gossamer-identity answers /ready on its admin address (local mode)"
    ]
    assert "gossamer-config records no admin address for gossamer-identity" in render_table(results)


def test_local_mode_webhook_cert_must_name_the_url_host(local: rules.Snapshot) -> None:
    assert local.webhook is not None
    local.webhook["webhooks"][0]["clientConfig"]["url"] = "https://injector.example:8443/"
    assert failures(rules.run(local, NOW)) == [
        "proxy-injector caBundle verifies the serving certificate"
    ]


def test_local_mode_webhook_url_must_be_https(local: rules.Snapshot) -> None:
    assert local.webhook is not None
    local.webhook["webhooks"][0]["clientConfig"]["url"] = "http://localhost:8443/"
    assert failures(rules.run(local, NOW)) == [
        "proxy-injector webhook URL is an https URL with a host"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9990", ("127.0.0.1", 9990)), ("[::1]:9995", ("::1", 9995))],
)
def test_parse_admin_address(text: str, expected: tuple[str, int]) -> None:
    assert rules.parse_admin_address(text) == expected


@pytest.mark.parametrize("text", ["9990", ":9990", "localhost:http", "127.0.0.1:70000"])
def test_parse_admin_address_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="admin address"):
        rules.parse_admin_address(text)


async def test_probe_ready_over_loopback() -> None:
    """The probe's answers from a real listener: 200, 503, not HTTP, and nobody listening."""
    answers = {
        b"ok": b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"busy": b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        b"junk": b"SSH-2.0-nope\r\n",
    }
    current = [b"ok"]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answers[current[0]])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await probe_ready(f"127.0.0.1:{port}") is None
        current[0] = b"busy"
        assert await probe_ready(f"127.0.0.1:{port}") == (
            f"127.0.0.1:{port}/ready answered HTTP/1.1 503 Service Unavailable"
        )
        current[0] = b"junk"
        assert "not HTTP" in (await probe_ready(f"127.0.0.1:{port}") or "")
    closed = await probe_ready(f"127.0.0.1:{port}")
    assert closed is not None
    assert closed.startswith(f"cannot connect to 127.0.0.1:{port}")
    assert await probe_ready("nonsense") == "admin address 'nonsense' is not host:port"


def test_absent_gateway_api_crds_are_a_warning_that_says_how_to_install_them(
    healthy: rules.Snapshot,
) -> None:
    check = "Gateway API HTTPRoute and GRPCRoute CRDs (v1) are installed"
    result = {r.description: r for r in rules.run(healthy, NOW)}
    assert result[check].ok
    healthy.crd_versions = {"httproutes.gateway.networking.k8s.io": ("v1beta1",)}
    results = rules.run(healthy, NOW)
    result = {r.description: r for r in results}[check]
    assert not result.ok
    assert result.warning
    assert not rules.failed(results)
    assert "grpcroutes.gateway.networking.k8s.io is not installed" in result.message
    assert "httproutes.gateway.networking.k8s.io does not serve v1" in result.message
    assert "policy.linkerd.io HTTPRoutes still work" in result.message
    assert "gateway-api/releases" in result.hint
    assert "standard-install.yaml" in result.hint
