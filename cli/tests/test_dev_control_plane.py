"""Local mode's meshed control plane: the sandboxes' addresses, names and containers (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from gossamer_cli.dev.controlplane import ControlPlane, sandbox_pod, service_hosts
from gossamer_cli.dev.layout import NodeLayout
from gossamer_cli.dev.pod import resolve_env

LAYOUT = NodeLayout()
SUFFIX = "gossamer.serviceaccount.identity.gossamer.cluster.local"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> ControlPlane:
    state = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane(
        state, Path("/nonexistent/kubeconfig"), LAYOUT, runtime_venv=state, apiserver_port=34567
    )
    plane.write_pki(dt.datetime.now(dt.UTC))
    return plane


def test_sandboxes_sit_on_the_bridge_outside_the_pod_cidr() -> None:
    assert LAYOUT.control_plane_address("identity") == "10.244.0.2"
    assert LAYOUT.control_plane_address("destination") == "10.244.0.3"
    crowded = NodeLayout(node_address="10.244.1.1", pod_cidr="10.244.1.0/24")
    with pytest.raises(ValueError, match="inside the pod CIDR"):
        crowded.control_plane_address("identity")


def test_service_names_resolve_to_the_component_behind_them() -> None:
    hosts = service_hosts(LAYOUT)
    assert hosts["gossamer-identity.gossamer.svc.cluster.local"] == "10.244.0.2"
    for name in ("gossamer-dst", "gossamer-policy", "gossamer-sp-validator"):
        assert hosts[f"{name}.gossamer.svc.cluster.local"] == "10.244.0.3"


def _containers(plane: ControlPlane, component: str) -> dict[str, dict[str, object]]:
    ip = LAYOUT.control_plane_address(component)
    pod = sandbox_pod(plane.values(), component, ip=ip, node_name=LAYOUT.node_name, uid="u-1")
    named = {c["name"]: c for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]}
    return {name: {"spec": c, "env": resolve_env(c, pod)} for name, c in named.items()}


def test_identity_proxy_certifies_over_loopback_and_names_the_control_plane(
    plane: ControlPlane,
) -> None:
    env = _containers(plane, "identity")["linkerd-proxy"]["env"]
    assert isinstance(env, dict)
    assert env["LINKERD2_PROXY_IDENTITY_SVC_ADDR"] == "localhost.:8080"
    assert env["LINKERD2_PROXY_IDENTITY_SVC_NAME"] == f"gossamer-identity.{SUFFIX}"
    assert env["LINKERD2_PROXY_DESTINATION_SVC_NAME"] == f"gossamer-destination.{SUFFIX}"
    assert env["LINKERD2_PROXY_POLICY_SVC_NAME"] == f"gossamer-destination.{SUFFIX}"
    assert env["LINKERD2_PROXY_IDENTITY_LOCAL_NAME"] == f"gossamer-identity.{SUFFIX}"
    assert env["LINKERD2_PROXY_INBOUND_IPS"] == "10.244.0.2"
    assert env["LINKERD2_PROXY_DESTINATION_SVC_ADDR"].startswith("gossamer-dst.gossamer.svc.")


def test_destination_proxy_discovers_over_loopback(plane: ControlPlane) -> None:
    containers = _containers(plane, "destination")
    env = containers["linkerd-proxy"]["env"]
    assert isinstance(env, dict)
    assert env["LINKERD2_PROXY_DESTINATION_SVC_ADDR"] == "localhost.:8086"
    assert env["LINKERD2_PROXY_POLICY_SVC_ADDR"] == "localhost.:8090"
    assert (
        env["LINKERD2_PROXY_IDENTITY_SVC_ADDR"]
        == "gossamer-identity.gossamer.svc.cluster.local:8080"
    )
    assert env["LINKERD2_PROXY_IDENTITY_LOCAL_NAME"] == f"gossamer-destination.{SUFFIX}"
    init = containers["linkerd-init"]["spec"]
    assert isinstance(init, dict)
    args = list(init["args"])
    ignored = args[args.index("--outbound-ports-to-ignore") + 1].split(",")
    # The local apiserver's port bypasses the proxy, as 443/6443 do on a cluster.
    assert {"443", "6443", "34567"} <= set(ignored)


def test_local_configuration_points_at_the_sandboxes(plane: ControlPlane) -> None:
    config = next(o for o in plane.configuration() if o["kind"] == "Namespace")
    notes = config["metadata"]["annotations"]
    assert "10.244.0.2:9990" in notes.values()
    assert "10.244.0.3:9996" in notes.values()
    assert "10.244.0.3:8086" in notes.values()
    assert "127.0.0.1:9995" in notes.values()
