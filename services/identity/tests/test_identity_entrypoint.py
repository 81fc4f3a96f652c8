"""``python -m gossamer_identity``: --help lists every declared setting."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields

from gossamer_identity.settings import IdentitySettings


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossamer_identity", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_help_prints_every_setting() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for f in fields(IdentitySettings):
        spec = f.metadata["gossamer_setting"]
        assert (spec.flag or spec.env) in result.stdout, f.name
