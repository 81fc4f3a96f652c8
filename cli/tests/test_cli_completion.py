"""``gossamer completion``: scripts a real bash sources, completing the real command tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from gossamer_cli.main import cli

#: The installed ``gossamer`` entry point, next to this interpreter.
BIN = Path(sys.executable).parent


def script(shell: str) -> str:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0, result.output
    return result.output


def bash_complete(tmp_path: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being completed), with the script sourced."""
    path = tmp_path / "gossamer.bash"
    path.write_text(script("bash"))
    typed = " ".join(f"'{w}'" for w in words)
    program = (
        "set -e\n"
        f"source '{path}'\n"
        "complete -p gossamer | grep -q _gossamer_completion\n"
        f"COMP_WORDS=({typed}); COMP_CWORD={len(words) - 1}\n"
        "_gossamer_completion gossamer\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def test_bash_sources_the_script_and_completes_a_subcommand(tmp_path: Path) -> None:
    assert os.access(BIN / "gossamer", os.X_OK)
    assert bash_complete(tmp_path, "gossamer", "vi") == ["viz"]
    top = bash_complete(tmp_path, "gossamer", "")
    for name in ("authz", "check", "completion", "identity", "install", "profile", "prune"):
        assert name in top
    assert bash_complete(tmp_path, "gossamer", "viz", "sta") == ["stat"]
    assert bash_complete(tmp_path, "gossamer", "profile", "--op") == ["--open-api"]
    assert sorted(bash_complete(tmp_path, "gossamer", "completion", "")) == ["bash", "fish", "zsh"]


def test_zsh_and_fish_scripts_name_the_command() -> None:
    zsh = script("zsh")
    assert zsh.startswith("#compdef gossamer")
    assert "_GOSSAMER_COMPLETE=zsh_complete" in zsh
    fish = script("fish")
    assert "complete --no-files --command gossamer" in fish
    assert "_GOSSAMER_COMPLETE=fish_complete" in fish


def test_an_unknown_shell_is_refused() -> None:
    result = CliRunner().invoke(cli, ["completion", "powershell"])
    assert result.exit_code == 2
    assert "'powershell' is not one of 'bash', 'zsh', 'fish'" in result.output
