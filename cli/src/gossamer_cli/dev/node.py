"""The local node: a dedicated network namespace holding the bridge every pod hangs off.

Nothing is ever added to the host's own namespace. ``enter`` moves the calling process into
the node namespace, so the Kubernetes control plane, Gossamer's control plane and the pod
runtime that follow all listen on the node's loopback and bridge, never the host's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from gossamer_common.netns import NETNS_RUN_DIR, enter_netns

from gossamer_cli.dev.layout import NodeLayout

NETNS_ETC = Path("/etc/netns")


class NodeError(RuntimeError):
    """The node network could not be made (not root, no iproute2, name taken...)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise NodeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def existing_namespaces(layout: NodeLayout) -> list[str]:
    lines = _ip("netns", "list", check=False).stdout.splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    return [name for name in names if layout.owns_netns(name)]


def create(layout: NodeLayout) -> None:
    """Create the node namespace with its loopback and bridge."""
    if layout.node_netns in existing_namespaces(layout):
        raise NodeError(
            f"network namespace {layout.node_netns} already exists: another local mesh is "
            "running, or one was not cleaned up (run `gossamer dev down`)"
        )
    _ip("netns", "add", layout.node_netns)
    try:
        ns = layout.node_netns
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", layout.bridge, "type", "bridge")
        _ip("-n", ns, "addr", "add", f"{layout.node_address}/{layout.bridge_prefix_len}",
            "dev", layout.bridge)  # fmt: skip
        _ip("-n", ns, "link", "set", layout.bridge, "up")
    except BaseException:
        destroy(layout)
        raise


def enter(layout: NodeLayout) -> None:
    """Move this process into the node namespace. Call before any thread starts."""
    enter_netns(f"{NETNS_RUN_DIR}/{layout.node_netns}")


def destroy(layout: NodeLayout) -> list[str]:
    """Delete every namespace of this layout (pods first) and their /etc/netns files."""
    removed = []
    names = existing_namespaces(layout)
    for name in sorted(names, key=lambda n: n == layout.node_netns):
        _ip("netns", "delete", name, check=False)
        removed.append(name)
    for path in NETNS_ETC.glob(f"{layout.prefix}-*") if NETNS_ETC.exists() else []:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
    return removed


def processes_inside(layout: NodeLayout, proc: Path = Path("/proc")) -> list[int]:
    """Pids of every process (other than this one) whose network namespace is the node's or a
    pod's of ``layout``: what a local mesh that died without cleaning up leaves running."""
    namespaces = set()
    for name in existing_namespaces(layout):
        with contextlib.suppress(OSError):
            st = os.stat(f"{NETNS_RUN_DIR}/{name}")
            namespaces.add((st.st_dev, st.st_ino))
    pids = []
    for entry in proc.iterdir() if namespaces else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            st = os.stat(entry / "ns" / "net")
        except OSError:
            continue  # gone, or a kernel thread
        if (st.st_dev, st.st_ino) in namespaces:
            pids.append(int(entry.name))
    return sorted(pids)


def stop_processes(layout: NodeLayout, grace: float = 10.0) -> list[int]:
    """SIGTERM every process inside the layout's namespaces, SIGKILL what is left after
    ``grace`` seconds; the pids signalled. Each round looks the processes up again, so a pid
    reused by an unrelated program outside the namespaces is never signalled."""
    signalled = processes_inside(layout)
    for pid in signalled:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and processes_inside(layout):
        time.sleep(0.1)
    for _ in range(50):  # bounded: SIGKILL cannot be refused, only delayed by the kernel
        left = processes_inside(layout)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        signalled += [pid for pid in left if pid not in signalled]
        time.sleep(0.1)
    return signalled
