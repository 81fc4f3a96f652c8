"""``gossamer dev down``'s sweep: every process left inside the node's and the pods' network
namespaces is stopped (SIGTERM, then SIGKILL), and nothing outside them is touched."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from gossamer_cli.dev import node
from gossamer_cli.dev.layout import NodeLayout

pytestmark = pytest.mark.netns


@pytest.fixture
def layout() -> Iterator[NodeLayout]:
    layout = NodeLayout(prefix=f"gdt{os.getpid() % 100000}")
    node.create(layout)
    subprocess.run(["ip", "netns", "add", layout.pod_netns("pod-a")], check=True)
    try:
        yield layout
    finally:
        node.stop_processes(layout, grace=1)
        node.destroy(layout)


def spawn(netns: str, script: str) -> subprocess.Popen[bytes]:
    # Their own session, as local mode starts containers and control-plane components.
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "sh", "-c", script], start_new_session=True
    )


def test_stop_processes_ends_everything_inside_and_nothing_outside(layout: NodeLayout) -> None:
    pod_ns = layout.pod_netns("pod-a")
    inside = [
        spawn(layout.node_netns, "exec sleep 300"),
        spawn(pod_ns, "exec sleep 300"),
        spawn(pod_ns, "trap '' TERM; sleep 300 & wait"),  # ignores SIGTERM: needs SIGKILL
    ]
    outside = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(node.processes_inside(layout)) < 4:  # three shells/sleeps and a child sleep
            assert time.monotonic() < deadline, node.processes_inside(layout)
            time.sleep(0.05)
        assert outside.pid not in node.processes_inside(layout)

        signalled = node.stop_processes(layout, grace=1)

        assert {p.pid for p in inside} <= set(signalled)
        assert node.processes_inside(layout) == []
        for p in inside:
            assert p.wait(timeout=10) is not None
        assert outside.poll() is None
        assert sorted(node.destroy(layout)) == sorted([layout.node_netns, pod_ns])
        assert node.existing_namespaces(layout) == []
    finally:
        outside.kill()
        outside.wait()
        for p in inside:
            if p.poll() is None:
                p.kill()
                p.wait()
