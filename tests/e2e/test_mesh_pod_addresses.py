"""A pod has one address: on its namespace's eth0, in ``status.podIP``, and where probes go.

Local mode's runtime hands out pod IPs (as a kubelet's CNI does) and reports them. Pods are
deleted and replaced so that addresses are handed out again; every live pod must then agree
with itself and its Service's EndpointSlice. A status rewritten by someone else (as kwok once
did, handing a started pod a second, recycled address) is put right by the runtime, and the
pod's probes keep going to the address its namespace has.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, echo_app, is_ready

pytestmark = [pytest.mark.netns, pytest.mark.timeout(900)]

NS = "pod-addresses"
APP = "addressed"
REPLICAS = 2


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(NS, echo_app(NS, APP, replicas=REPLICAS), ready={APP: REPLICAS})
    yield local_mesh
    local_mesh.delete_namespace(NS)


def namespace_address(mesh: LocalMeshHandle, pod: dict[str, Any]) -> str:
    """The IPv4 address on the pod namespace's eth0 (what the pod really has)."""
    argv = ["ip", "-n", mesh.pod_netns(pod), "-4", "-o", "addr", "show", "dev", "eth0"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    (line,) = out.splitlines()
    return line.split(" inet ", 1)[1].split("/", 1)[0]


def probe_addresses(mesh: LocalMeshHandle, pod: dict[str, Any]) -> set[str]:
    """Every address the runtime's log says it probed this pod at."""
    key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    found = set()
    for line in mesh.log.read_text(errors="replace").splitlines():
        if key not in line or '"probe"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("pod") == key and str(event.get("probe", "")).startswith("http://"):
            found.add(event["probe"].split("//", 1)[1].rsplit(":", 1)[0])
    return found


def slice_addresses(mesh: LocalMeshHandle) -> set[str]:
    slices = mesh.get("endpointslices", "", NS)["items"]
    return {
        address
        for s in slices
        if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == APP
        for endpoint in s.get("endpoints") or []
        for address in endpoint.get("addresses") or []
    }


def assert_one_address_each(mesh: LocalMeshHandle, pods: list[dict[str, Any]]) -> set[str]:
    addresses = set()
    for pod in pods:
        name, status = pod["metadata"]["name"], pod["status"]
        real = namespace_address(mesh, pod)
        assert status["podIP"] == real, (name, status["podIP"], real)
        assert [i["ip"] for i in status["podIPs"]] == [real], (name, status["podIPs"])
        assert ipaddress.ip_address(real) in ipaddress.ip_network(mesh.layout.pod_cidr)
        probed = probe_addresses(mesh, pod)
        assert probed == {real}, f"{name} has {real} but was probed at {sorted(probed)}"
        addresses.add(real)
    assert len(addresses) == len(pods), "two live pods share an address"
    return addresses


def test_replaced_pods_each_have_one_address_everywhere(mesh: LocalMeshHandle) -> None:
    seen: set[str] = set()
    for _ in range(3):
        old = {p["metadata"]["name"] for p in mesh.pods(NS, f"app={APP}")}
        mesh.kubectl("delete", "pod", "-n", NS, "-l", f"app={APP}", "--wait=false")
        pods = converge(
            lambda: mesh.wait_ready(NS, f"app={APP}", REPLICAS, limit=180),
            lambda ready, old=old: not old & {p["metadata"]["name"] for p in ready},
            limit=180,
        )
        assert not old & {p["metadata"]["name"] for p in pods}, "the old pods are still there"
        addresses = assert_one_address_each(mesh, pods)
        in_slice = converge(
            lambda: slice_addresses(mesh), lambda found, want=addresses: found == want
        )
        assert in_slice == addresses
        seen |= addresses
    # Addresses go round the pod CIDR: a replaced pod's address is not the next one given out.
    assert len(seen) == 3 * REPLICAS


def test_a_foreign_pod_ip_in_the_status_is_put_right(mesh: LocalMeshHandle) -> None:
    pod = mesh.wait_ready(NS, f"app={APP}", REPLICAS)[0]
    name = pod["metadata"]["name"]
    real = namespace_address(mesh, pod)
    network = ipaddress.ip_network(mesh.layout.pod_cidr)
    foreign = str(network.broadcast_address - 1)  # handed out last, if ever
    assert foreign != real
    body = json.dumps({"status": {"podIP": foreign, "podIPs": [{"ip": foreign}]}})
    mesh.kubectl("patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge", "-p", body)

    def current() -> dict[str, Any]:
        found: dict[str, Any] = mesh.get("pod", name, NS)
        return found

    after = converge(current, lambda p: p["status"].get("podIP") == real, limit=30)
    assert after["status"]["podIP"] == real, "the runtime did not report the pod's address again"
    ready = converge(current, is_ready, limit=60)
    assert is_ready(ready), f"{name} is no longer Ready"
    assert probe_addresses(mesh, ready) == {real}
    proxy = next(
        c
        for c in ready["status"].get("initContainerStatuses", [])
        + ready["status"]["containerStatuses"]
        if c["name"] == "linkerd-proxy"
    )
    assert proxy["restartCount"] == 0, "liveness restarted the proxy"
