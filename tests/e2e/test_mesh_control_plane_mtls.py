"""Local mode's control plane is meshed: pods reach identity, destination and policy over mTLS.

As on a cluster, each control-plane component runs behind its own proxy, so the injector
names the control plane's identities in every pod proxy's environment
(``LINKERD2_PROXY_*_SVC_NAME``, which a real linkerd2-proxy requires next to a non-loopback
``*_SVC_ADDR``). The control-plane proxies' inbound metrics show the pods' connections
arriving as mTLS, and the destination's proxy names the client pod's identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, counter, echo_app, fetch_code, service_url
from localmesh import identity as identity_of

pytestmark = pytest.mark.netns

NS = "mesh-cp-mtls"
SUFFIX = "gossamer.serviceaccount.identity.gossamer.cluster.local"


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "server"),
        echo_app(NS, "client", service=False),
        ready={"server": 1, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _proxy_env(pod: dict[str, Any]) -> dict[str, str]:
    spec = pod["spec"]
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        if c["name"] == "linkerd-proxy":
            return {e["name"]: str(e.get("value", "")) for e in c.get("env") or []}
    raise AssertionError("the pod has no linkerd-proxy container")


def _control_metrics(mesh: LocalMeshHandle, component: str) -> str:
    return mesh.node_curl(f"http://{mesh.layout.control_plane_address(component)}:4191/metrics")


def test_pod_proxies_name_the_control_plane(mesh: LocalMeshHandle) -> None:
    (client,) = mesh.pods(NS, "app=client")
    env = _proxy_env(client)
    assert env["LINKERD2_PROXY_IDENTITY_SVC_NAME"] == f"gossamer-identity.{SUFFIX}"
    assert env["LINKERD2_PROXY_DESTINATION_SVC_NAME"] == f"gossamer-destination.{SUFFIX}"
    assert env["LINKERD2_PROXY_POLICY_SVC_NAME"] == f"gossamer-destination.{SUFFIX}"
    assert env["LINKERD2_PROXY_IDENTITY_SVC_ADDR"].startswith("gossamer-identity.gossamer.svc.")


def test_control_plane_connections_are_mtls(mesh: LocalMeshHandle) -> None:
    (client,) = mesh.pods(NS, "app=client")
    answer = mesh.python_in_pod(client, fetch_code(service_url(NS, "server")))
    assert answer["status"] == 200, answer

    # The pods certified through the identity proxy over TLS (a first Certify carries no
    # client certificate yet, so only tls="true" is certain here).
    identity_metrics = _control_metrics(mesh, "identity")
    assert (
        counter(
            identity_metrics, "tcp_open_total", direction="inbound", target_port="8080", tls="true"
        )
        > 0
    ), identity_metrics

    # Discovery for the server came over mTLS with the client pod's identity.
    client_id = identity_of(NS, "client")

    def mtls_opens() -> float:
        metrics = _control_metrics(mesh, "destination")
        return counter(
            metrics,
            "tcp_open_total",
            direction="inbound",
            target_port="8086",
            tls="true",
            client_id=client_id,
        )

    opened = converge(mtls_opens, lambda n: n > 0, limit=30)
    inbound = [
        line
        for line in _control_metrics(mesh, "destination").splitlines()
        if line.startswith("tcp_open_total") and 'direction="inbound"' in line
    ]
    assert opened > 0, inbound
