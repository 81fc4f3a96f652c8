"""The Go-built tool scripts build each binary once, into the cache named by its version.

A fake ``go`` on PATH records every ``go build`` and writes the binaries it was asked for, so
these tests check what the scripts build without compiling anything.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_GO = r"""#!/usr/bin/env python3
import os, sys
with open(os.environ["FAKE_GO_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args and args[0] == "build":
    out = args[args.index("-o") + 1]
    for package in args[args.index("-o") + 2:]:
        name = os.path.basename(os.getcwd() if package == "." else package.rstrip("/"))
        target = os.path.join(out, name) if out.endswith("/") else out
        with open(target, "w") as binary:
            binary.write("#!/bin/sh\necho " + name + "\n")
        os.chmod(target, 0o755)
"""


def _fake_go(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "go.log"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GOSSAMER_CACHE": str(tmp_path / "cache"),
        "FAKE_GO_LOG": str(log),
    }
    return env, log


def _run(script: str, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_kubectl_is_built_once_for_the_tests_and_the_node(tmp_path: Path) -> None:
    env, log = _fake_go(tmp_path)
    kubectl = _run("kubectl-bin.sh", env=env)
    node_bin = Path(_run("kube-bins.sh", "--node", env=env))

    builds = [line for line in log.read_text().splitlines() if line.startswith("build")]
    assert sum("cmd/kubectl" in line for line in builds) == 1, builds
    assert any("cmd/kubelet" in line and "cmd/kube-proxy" in line for line in builds), builds
    for binary in ("kubelet", "kube-proxy", "pause"):
        assert os.access(node_bin / binary, os.X_OK), binary
    assert (node_bin / "kubectl").resolve() == Path(kubectl).resolve()

    # Warm: nothing is built again, and the link stays.
    _run("kube-bins.sh", "--node", env=env)
    assert [ln for ln in log.read_text().splitlines() if ln.startswith("build")] == builds
    assert (node_bin / "kubectl").resolve() == Path(kubectl).resolve()


def test_node_binaries_build_kubectl_when_the_tests_have_not(tmp_path: Path) -> None:
    env, log = _fake_go(tmp_path)
    node_bin = Path(_run("kube-bins.sh", "--node", env=env))
    builds = [line for line in log.read_text().splitlines() if line.startswith("build")]
    assert sum("cmd/kubectl" in line for line in builds) == 1, builds
    assert os.access(node_bin / "kubectl", os.X_OK)
    assert _run("kubectl-bin.sh", env=env) == str((node_bin / "kubectl").resolve())


def _skaffold_build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/skaffold-build.sh beside a stand-in images.sh that prints what it was given."""
    scripts = tmp_path / "repo" / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "skaffold-build.sh").write_text((ROOT / "scripts" / "skaffold-build.sh").read_text())
    (scripts / "images.sh").write_text('echo "ONLY=$ONLY REGISTRY=$REGISTRY TAG=$TAG PUSH=$PUSH"\n')
    clean = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "PUSH_IMAGE")}
    return subprocess.run(
        ["bash", str(scripts / "skaffold-build.sh")],
        capture_output=True, text=True, timeout=30, env={**clean, **env}, check=False,
    )  # fmt: skip


def test_skaffold_builder_builds_the_image_skaffold_names(tmp_path: Path) -> None:
    result = _skaffold_build(
        tmp_path, IMAGE="localhost:5000/gossamer/proxy-init:4f2a9c", PUSH_IMAGE="true"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "ONLY=proxy-init", "REGISTRY=localhost:5000/gossamer", "TAG=4f2a9c", "PUSH=1",
    ]  # fmt: skip


def test_skaffold_builder_refuses_an_image_without_registry_or_tag(tmp_path: Path) -> None:
    assert _skaffold_build(tmp_path).returncode != 0
    result = _skaffold_build(tmp_path, IMAGE="proxy", PUSH_IMAGE="false")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
