"""The world outside the mesh, for egress tests: a network namespace of the test's own, joined
to one pod's namespace by a veth pair on a /30 outside every cluster network, with a server
process in it. No traffic leaves the namespaces of the test.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from localmesh import LocalMeshHandle


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def outside_world(
    mesh: LocalMeshHandle,
    pod: dict[str, Any],
    *,
    name: str,
    veth: str,
    pod_side: str,
    outside: str,
    server: str,
) -> Iterator[None]:
    """While in the block, namespace ``<prefix>-<name>`` holds ``outside`` on ``<veth>0``, the
    pod holds ``pod_side`` on ``<veth>1``, and ``server`` (Python source, given ``outside`` as
    its argument; it prints ``ready`` once it listens and runs until its stdin closes) serves
    there. Afterwards the server is killed and the namespace, with the veth pair, deleted."""
    ext = f"{mesh.layout.prefix}-{name}"
    pod_ns = mesh.pod_netns(pod)
    _ip("netns", "add", ext)
    process: subprocess.Popen[str] | None = None
    try:
        _ip("-n", ext, "link", "add", f"{veth}0", "type", "veth", "peer", "name", f"{veth}1",
            "netns", pod_ns)  # fmt: skip
        _ip("-n", ext, "addr", "add", f"{outside}/30", "dev", f"{veth}0")
        _ip("-n", ext, "link", "set", f"{veth}0", "up")
        _ip("-n", ext, "link", "set", "lo", "up")
        _ip("-n", pod_ns, "addr", "add", f"{pod_side}/30", "dev", f"{veth}1")
        _ip("-n", pod_ns, "link", "set", f"{veth}1", "up")
        process = subprocess.Popen(
            ["ip", "netns", "exec", ext, sys.executable, "-c", server, outside],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait(10)
        subprocess.run(["ip", "netns", "delete", ext], capture_output=True, timeout=30)
