"""The local mesh, shared by the end-to-end tests of one run (started once, torn down after).

Needs root (network namespaces, iptables, uid switching). Without it the tests skip with the
reason (a failure under GOSSAMER_REQUIRE_E2E=1, by the root conftest.py's rule). After the
session a check asserts that the mesh left no namespace, process or /etc/netns entry behind.

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

from localmesh import LocalMeshHandle, attach_local_mesh, start_local_mesh

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
    handle = start_local_mesh(state, PREFIX, image_maps)
    try:
        yield handle
    finally:
        handle.stop()
        leftovers = _leftovers(state)
        shutil.rmtree(state, ignore_errors=True)
        assert not leftovers, f"the local mesh left things behind: {leftovers}"


def _leftovers(state: Path) -> list[str]:
    found = []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line.split()[0] for line in namespaces.splitlines() if line.startswith(PREFIX)]
    if Path("/etc/netns").exists():
        found += [p.name for p in Path("/etc/netns").iterdir() if p.name.startswith(PREFIX)]
    procs = subprocess.run(["pgrep", "-af", f"{state}|{PREFIX}-"], capture_output=True, text=True)
    found += [line for line in procs.stdout.splitlines() if "pgrep" not in line]
    return found
