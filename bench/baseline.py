"""A runtime venv of another git revision, so its proxy can run beside today's (``--baseline-rev``).

The revision is checked out in a throwaway git worktree under /tmp, installed with
``uv sync --frozen --no-editable`` (its own lockfile, no dev tools) into a venv of its own,
and the worktree is removed again: a non-editable venv needs no sources. The venv is kept
under ``/tmp/gossamer-bench-baseline/<commit>`` and reused while its stamp matches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BASELINE_ROOT", "Baseline", "BaselineError", "build_baseline"]

BASELINE_ROOT = Path("/tmp/gossamer-bench-baseline")
REPO = Path(__file__).resolve().parents[1]


class BaselineError(RuntimeError):
    pass


@dataclass(frozen=True)
class Baseline:
    commit: str
    python: str

    @property
    def label(self) -> str:
        return f"gossamer@{self.commit[:9]}"


def _git(*args: str, cwd: Path = REPO) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise BaselineError(f"git {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def resolve(rev: str) -> str:
    """The full commit id of ``rev``; a clear error for anything that is not a commit."""
    if not rev or rev.startswith("-"):
        raise BaselineError(f"not a git revision: {rev!r}")
    return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")


def _base_python() -> str:
    """The interpreter the current venv was made from, so both sides run the same Python."""
    found = os.environ.get("UV_PYTHON") or getattr(sys, "_base_executable", None)
    return str(found or sys.executable)


def build_baseline(rev: str, root: Path = BASELINE_ROOT) -> Baseline:
    commit = resolve(rev)
    uv = shutil.which("uv")
    if uv is None:
        raise BaselineError("uv is missing (make uv-install)")
    home = root / commit
    venv = home / "venv"
    stamp = venv / ".gossamer-baseline"
    python = venv / "bin" / "python"
    if python.exists() and stamp.is_file() and stamp.read_text() == commit:
        return Baseline(commit, str(python))
    checkout = home / "src"
    if checkout.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=REPO)
        shutil.rmtree(checkout, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    print(f"baseline: building {commit[:9]} in {venv}", file=sys.stderr)
    _git("worktree", "add", "--detach", str(checkout), commit)
    try:
        env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": _base_python()}
        out = subprocess.run(
            [
                uv,
                "sync",
                "--frozen",
                "--no-editable",
                "--no-default-groups",
                "--compile-bytecode",  # as the image and local mode's runtime venv
                "--quiet",
            ],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise BaselineError(f"uv sync of {commit[:9]} failed:\n{out.stderr[-2000:]}")
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(checkout)],
            cwd=REPO,
            capture_output=True,
        )
    check = subprocess.run(
        [str(python), "-c", "import gossamer_proxy"], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise BaselineError(f"the baseline venv has no gossamer_proxy:\n{check.stderr[-1000:]}")
    stamp.write_text(commit)
    return Baseline(commit, str(python))
