"""The README's real-node steps are the ones scripts/e2e-node.sh runs.

e2e-node.sh reads each step, a ```sh block marked ``<!-- e2e-node: NAME -->``, from the README
through scripts/readme-step.sh and runs it. These tests keep the two in step without a node:
every step the script runs is in the README exactly once, every README step is run, and the
reader refuses a malformed block instead of running part of one.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READER = ROOT / "scripts" / "readme-step.sh"


def _read(*args: str, readme: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if readme is not None:
        env["README"] = str(readme)
    return subprocess.run(
        ["bash", str(READER), *args], capture_output=True, text=True, timeout=30, env=env,
        check=False,
    )  # fmt: skip


def _steps_run_by_the_script() -> list[str]:
    script = (ROOT / "scripts" / "e2e-node.sh").read_text()
    return re.findall(r"^\s*(?:if .*then )?step ([a-z0-9-]+)", script, flags=re.MULTILINE)


def test_every_step_the_script_runs_is_in_the_readme_once() -> None:
    run = _steps_run_by_the_script()
    assert {"node-up", "env", "images", "install", "demo", "uninstall", "helm-install",
            "helm-upgrade", "helm-uninstall", "skaffold-run", "skaffold-delete",
            "node-down"} <= set(run)  # fmt: skip
    for name in set(run):
        result = _read(name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), name


def test_every_readme_step_is_run_by_the_script() -> None:
    listed = _read("--list").stdout.split()
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == set(_steps_run_by_the_script())


def test_a_step_is_the_whole_block_and_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "text\n<!-- e2e-node: one -->\n```sh\nfirst line\n\nsecond  # comment\n```\n"
        "after\n```sh\nnot a step\n```\n"
    )
    result = _read("one", readme=readme)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first line\n\nsecond  # comment\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<!-- e2e-node: other -->\n```sh\nx\n```\n", "no step one"),
        ("<!-- e2e-node: one -->\n```sh\nx\n```\n<!-- e2e-node: one -->\n```sh\ny\n```\n",
         "appears 2 times"),
        ("<!-- e2e-node: one -->\nprose\n```sh\nx\n```\n", "not followed by a ```sh line"),
        ("<!-- e2e-node: one -->\n```sh\nx\n", "no closing"),
    ],
    ids=["missing", "twice", "no-fence", "unclosed"],
)  # fmt: skip
def test_a_malformed_step_is_refused(tmp_path: Path, text: str, error: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    result = _read("one", readme=readme)
    assert result.returncode == 1
    assert error in result.stderr
