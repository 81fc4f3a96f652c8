"""The end of scripts/e2e-node.sh prunes earlier runs' images only when it knows this run's
tag, and a failed prune never fails the run (scripts/prune-e2e-run.sh).

A fake ``buildah`` on PATH lists the images it is given and records every removal, so
nothing touches the machine's real image storage.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = "localhost:5000/gossamer"

FAKE_BUILDAH = r"""#!/usr/bin/env bash
echo "$*" >>"$FAKE_BUILDAH_LOG"
case "$1" in
  images) printf '%s\n' $FAKE_IMAGES ;;
  rmi) exit "${FAKE_RMI_STATUS:-0}" ;;
esac
"""


def _run(tmp_path: Path, *args: str, rmi_status: int = 0) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    buildah = bin_dir / "buildah"
    buildah.write_text(FAKE_BUILDAH)
    buildah.chmod(0o755)
    log = tmp_path / "buildah.log"
    log.write_text("")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_BUILDAH_LOG": str(log),
        "FAKE_IMAGES": f"{OWN}/proxy:dev-1 {OWN}/proxy:dev-2 localhost/other:1",
        "FAKE_RMI_STATUS": str(rmi_status),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/prune-e2e-run.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr, log.read_text().splitlines()


def test_without_the_runs_tag_no_image_is_pruned(tmp_path: Path) -> None:
    for args in ((), ("",)):
        status, stderr, calls = _run(tmp_path, *args)
        assert status == 0
        assert calls == []  # not even listed
        assert "no image pruned" in stderr


def test_earlier_runs_images_go_and_this_runs_stay(tmp_path: Path) -> None:
    status, stderr, calls = _run(tmp_path, "dev-2")
    assert status == 0, stderr
    assert [c for c in calls if c.startswith("rmi")] == [f"rmi {OWN}/proxy:dev-1"]
    assert f"removed {OWN}/proxy:dev-1" in stderr


def test_a_failed_prune_is_a_warning_not_a_failed_run(tmp_path: Path) -> None:
    status, stderr, calls = _run(tmp_path, "dev-2", rmi_status=1)
    assert status == 0
    assert f"rmi {OWN}/proxy:dev-1" in calls
    assert "WARNING: pruning the images of earlier runs failed" in stderr


def _cleanup_body() -> list[str]:
    text = (ROOT / "scripts/e2e-node.sh").read_text()
    body = re.search(r"^cleanup\(\) \{\n(.*?)^\}", text, re.S | re.M)
    assert body is not None
    lines = [line.strip() for line in body.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_e2e_node_prunes_through_the_guarded_step() -> None:
    body = _cleanup_body()
    assert 'bash scripts/prune-e2e-run.sh "${TAG:-}"' in body
    assert not any("prune-e2e-images.sh" in line for line in body)


def test_e2e_node_ignores_further_signals_while_cleaning_up() -> None:
    # The run's status first, then no TERM/INT/HUP trap: a second signal must not cut the
    # node-down (or anything else cleanup does) short.
    assert _cleanup_body()[:2] == ["status=$?", "trap '' TERM INT HUP"]
