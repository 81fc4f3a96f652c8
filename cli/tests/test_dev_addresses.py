"""Pod addresses of the local node: one per pod, handed out round-robin, reused last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from gossamer_cli.dev import images, stages, status
from gossamer_cli.dev.addresses import NoFreeAddressError, PodAddresses
from gossamer_cli.dev.layout import NodeLayout
from gossamer_cli.dev.pod import LocalPod, RuntimeContext


def test_a_pod_keeps_its_address_and_no_two_pods_share_one() -> None:
    pool = PodAddresses("10.244.1.0/24")
    first = pool.claim("a")
    assert first == "10.244.1.1"
    assert pool.claim("a") == first  # asking again (a later watch event) changes nothing
    assert pool.claim("b") == "10.244.1.2"
    assert pool.of("a") == first
    assert len(pool) == 2


def test_a_released_address_is_reused_only_after_every_other_one() -> None:
    pool = PodAddresses("10.244.1.0/29")  # .1 to .6
    held = [pool.claim(f"p{i}") for i in range(3)]
    assert held == ["10.244.1.1", "10.244.1.2", "10.244.1.3"]
    pool.release("p0")  # 10.244.1.1 is free again, but comes last
    assert [pool.claim(f"q{i}") for i in range(3)] == ["10.244.1.4", "10.244.1.5", "10.244.1.6"]
    assert pool.claim("r") == "10.244.1.1"  # wrapped around to the only free one
    with pytest.raises(NoFreeAddressError, match="no free address"):
        pool.claim("s")
    pool.release("q1")
    assert pool.claim("s") == "10.244.1.5"


def test_a_pods_own_earlier_address_is_kept_if_free_and_never_stolen() -> None:
    pool = PodAddresses("10.244.1.0/24", reserved=["10.244.1.1"])
    assert pool.claim("a", preferred="10.244.1.7") == "10.244.1.7"
    assert pool.claim("b", preferred="10.244.1.7") != "10.244.1.7"  # held by a
    assert pool.claim("c", preferred="10.244.1.1") != "10.244.1.1"  # reserved (the node)
    assert pool.claim("d", preferred="192.168.0.9") == "10.244.1.4"  # not ours
    assert pool.claim("e", preferred="junk").startswith("10.244.1.")
    assert "10.244.1.1" not in {pool.of(uid) for uid in "abcde"}


def test_the_status_reports_the_runtimes_addresses() -> None:
    state = status.PodState(pod_ip="10.244.1.9", host_ip="10.244.0.1", started_at=100.0)
    patch = status.pod_status_patch(state, 101.0, [])["status"]
    assert patch["podIP"] == "10.244.1.9"
    assert patch["podIPs"] == [{"ip": "10.244.1.9"}]
    assert patch["hostIP"] == "10.244.0.1"
    assert patch["hostIPs"] == [{"ip": "10.244.0.1"}]
    assert patch["startTime"] == "1970-01-01T00:01:40Z"


def test_kwok_plays_no_pod_stage_in_local_mode() -> None:
    """A stage handing out podIP could play twice for one pod and change its address."""
    docs = [d for d in yaml.safe_load_all(stages.local_mode_stages()) if d]
    pod_stages = [d for d in docs if d.get("spec", {}).get("resourceRef", {}).get("kind") == "Pod"]
    assert len(pod_stages) == 1  # none at all would make kwok fall back to its defaults
    (only,) = pod_stages
    assert only["spec"]["selector"]["matchExpressions"] == [
        {"key": ".metadata.uid", "operator": "DoesNotExist"}
    ]
    assert "podIP" not in stages.local_mode_stages()


def _pod(status_ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "containers": [
                {
                    "name": "linkerd-proxy",
                    "image": "gossamer/proxy",
                    "env": [
                        {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    ],
                }
            ]
        },
        "status": {"podIP": status_ip, "podIPs": [{"ip": status_ip}]} if status_ip else {},
    }


async def test_a_pod_sees_and_reports_its_own_address_whatever_the_status_says(
    tmp_path: Path,
) -> None:
    ctx = RuntimeContext(
        client=None,  # type: ignore[arg-type]
        layout=NodeLayout(),
        images={},
        state_dir=tmp_path,
        now=lambda: 100.0,
    )
    pod = LocalPod(_pod(""), ctx, "10.244.1.7")
    spec = pod.pod["spec"]["containers"][0]
    assert await pod._env(spec) == {"IPS": "10.244.1.7", "HOST": "10.244.0.1"}
    # Someone rewrites the status (as kwok's second stage play did): the runtime's address
    # stays what the environment, the probes and the next status report use.
    pod.observe(_pod("10.244.1.254"))
    assert pod.pod_ip == "10.244.1.7"
    assert await pod._env(spec) == {"IPS": "10.244.1.7", "HOST": "10.244.0.1"}
    assert pod._status_dirty.is_set()  # the runtime's status goes out again
    report = status.pod_status_patch(pod.state, 101.0, [])["status"]
    assert report["podIP"] == "10.244.1.7"


def test_a_runtime_venv_without_bytecode_is_noticed(tmp_path: Path) -> None:
    package = tmp_path / "lib" / "python3.11" / "site-packages" / "gossamer_proxy"
    package.mkdir(parents=True)
    (package / "app.py").write_text("")
    assert not images.runtime_venv_compiled(tmp_path)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"")
    assert images.runtime_venv_compiled(tmp_path)
