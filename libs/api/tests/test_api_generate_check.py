"""generate.py: committed code is current, output is deterministic, staleness is reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

API_DIR = Path(__file__).resolve().parents[1]
GENERATE = API_DIR / "generate.py"
COMMITTED = API_DIR / "src" / "gossamer_api" / "proxy"


def run_generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_generated_code_is_current() -> None:
    result = run_generate("--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_generation_is_deterministic_and_matches_committed(tmp_path: Path) -> None:
    result = run_generate("--output-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    generated = tmp_path / "gossamer_api" / "proxy"
    names = sorted(p.name for p in generated.iterdir())
    assert names == sorted(
        p.name for p in COMMITTED.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")
    )
    for name in names:
        assert (generated / name).read_bytes() == (COMMITTED / name).read_bytes(), name
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", "_grpc.py"):
        assert f"destination{suffix}" in names


def test_check_lists_every_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "gossamer_api" / "proxy"
    shutil.copytree(COMMITTED, stale, ignore=shutil.ignore_patterns("__pycache__"))
    (stale / "destination_pb2.py").write_text("# edited by hand\n")
    (stale / "net_pb2.pyi").unlink()
    (stale / "old_pb2.py").write_text("# from a removed .proto\n")

    result = run_generate("--check", "--output-root", str(tmp_path))

    assert result.returncode == 1
    assert "is stale; run `make protos`" in result.stderr
    assert "out of date: destination_pb2.py" in result.stderr
    assert "missing: net_pb2.pyi" in result.stderr
    assert "no longer generated: old_pb2.py" in result.stderr
    assert "identity_pb2.py" not in result.stderr
    # --check never writes.
    assert (stale / "destination_pb2.py").read_text() == "# edited by hand\n"


def test_regenerating_repairs_stale_output(tmp_path: Path) -> None:
    stale = tmp_path / "gossamer_api" / "proxy"
    shutil.copytree(COMMITTED, stale, ignore=shutil.ignore_patterns("__pycache__"))
    (stale / "destination_pb2.py").write_text("# edited by hand\n")
    (stale / "old_pb2_grpc.py").write_text("# from a removed .proto\n")
    (stale / "notes.txt").write_text("not ours\n")

    assert run_generate("--output-root", str(tmp_path)).returncode == 0

    assert run_generate("--check", "--output-root", str(tmp_path)).returncode == 0
    assert not (stale / "old_pb2_grpc.py").exists()
    assert (stale / "notes.txt").read_text() == "not ours\n"
