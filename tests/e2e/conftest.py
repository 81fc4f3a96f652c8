"""The local mesh, shared by the end-to-end tests of one run (started once, torn down after).

Needs root (network namespaces, iptables, uid switching). Without it the tests skip with the
reason (a failure under GOSSAMER_REQUIRE_E2E=1, by the root conftest.py's rule). After the
session the mesh is torn down the way the README gives for a crash: SIGKILL to ``gossamer dev
up`` (none of its own cleanup runs), then ``gossamer dev down``; a check asserts that no
namespace, process, /etc/netns entry or host iptables rule was left behind. (The orderly exit
is covered by test_demo_lifecycle.py.)

While writing tests, ``GOSSAMER_E2E_ATTACH=<prefix>:<state dir>`` attaches to a mesh started
by hand (``gossamer dev up --headless --prefix P --state-dir D --images ...``) instead of
starting one, and leaves it running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from localmesh import (
    LocalMeshHandle,
    attach_local_mesh,
    host_firewall,
    leftovers,
    mesh_processes,
    start_local_mesh,
    still_running,
)

REPO = Path(__file__).resolve().parents[2]
# Unique per test session, so two runs on one machine never share a namespace name.
PREFIX = f"gse{os.getpid()}"


@pytest.fixture(scope="session")
def local_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMeshHandle]:
    if os.geteuid() != 0:
        pytest.skip("local mesh needs root (network namespaces, iptables, uid 2102)")
    attach = os.environ.get("GOSSAMER_E2E_ATTACH")
    if attach:
        prefix, _, state_dir = attach.partition(":")
        yield attach_local_mesh(Path(state_dir), prefix)
        return
    state = Path("/var/tmp") / f"{PREFIX}-state"
    image_maps = [
        REPO / "examples" / "demo" / "local-images.yaml",
        Path(__file__).parent / "local-images.yaml",  # gossamer/e2e-app: tests/e2e/apps
    ]
    firewall = host_firewall()
    handle = start_local_mesh(state, PREFIX, image_maps)
    try:
        yield handle
    finally:
        processes = mesh_processes(handle.layout)
        handle.kill()  # a crash: `dev up` cleans nothing up itself
        down = subprocess.run(
            [sys.executable, "-m", "gossamer_cli.main", "dev", "down",
             "--state-dir", str(state), "--prefix", PREFIX],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        left = leftovers(state, PREFIX) + still_running(processes)
        left += ["ready.json"] if (state / "ready.json").exists() else []
        changed = host_firewall() != firewall
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, f"gossamer dev down failed: {down.stderr[-2000:]}"
        assert not left, f"dev down after a crash left things behind: {left}"
        assert not changed, "the local mesh changed the host's own iptables rules"
