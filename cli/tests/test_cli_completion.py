"""``gossamer completion``: scripts real bash, zsh and fish load, completing the real tree.

Each shell runs the script as a user would install it and asks for completions the way the
shell itself does on <Tab>: bash calls the completion function with ``COMP_WORDS``; zsh runs
an interactive shell on a pseudo-terminal (``zsh/zpty``), types the words and a Tab, and
records the line after completion and every match the completion system added (``compadd``
wrapped); fish answers ``complete -C``.
"""

from __future__ import annotations

import os
import shlex
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


def _shell_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


#: Drives an interactive zsh on a pseudo-terminal: $1 output prefix, $2 how the script is
#: loaded (``source`` or a directory for ``fpath``), $3 the words typed before <Tab>. Each
#: step waits for the prompt ("RY> " once the last command succeeded), so no keystroke
#: reaches the terminal before zle reads it raw.
ZSH_DRIVER = r"""
zmodload zsh/zpty || exit 3
out=$1 load=$2 typed=$3
zpty z zsh -f -i
step() {
  zpty -w z "$1"
  zpty -r -m z line '*RY> *' || { print -u2 "zsh: no prompt after: $1"; exit 4 }
}
step "PS1='R%(?.Y.N)> '"
if [[ $load == source ]]; then
  step "autoload -U compinit; compinit -u -d $out.dump; source <(gossamer completion zsh)"
else
  step "fpath=($load \$fpath); autoload -U compinit; compinit -u -d $out.dump"
fi
step 'compadd() {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a hits; builtin compadd -A hits "$@"; print -rl -- "${hits[@]}" >> '$out'.matches
  builtin compadd "$@"
}'
step 'show-line() { print -r -- "$BUFFER" > '$out'.line; BUFFER="print DONE\$((6*7))"
  zle accept-line }; zle -N show-line; bindkey "^T" show-line'
zpty -w -n z "$typed"$'	\C-t'
zpty -r -m z line '*DONE42*' || { print -u2 "zsh: no line after <Tab>"; exit 5 }
zpty -d z
"""


def zsh_complete(tmp_path: Path, typed: str, *, load: str = "source") -> tuple[str, list[str]]:
    """The line after <Tab> and the matches zsh's completion system added, in real zsh."""
    out = tmp_path / f"zsh-{len(list(tmp_path.iterdir()))}"
    run = subprocess.run(
        ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", str(out), load, typed],
        capture_output=True, text=True, env=_shell_env(), timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    line = Path(f"{out}.line").read_text().rstrip("\n")
    matches_file = Path(f"{out}.matches")
    matches = matches_file.read_text().splitlines() if matches_file.exists() else []
    return line, matches


def fish_complete(tmp_path: Path, typed: str) -> dict[str, str]:
    """``complete -C`` in real fish with the script sourced: candidate -> description."""
    path = tmp_path / "gossamer.fish"
    path.write_text(script("fish"))
    run = subprocess.run(
        ["fish", "--no-config", "-c", f"source {path}; complete -C {shlex.quote(typed)}"],
        capture_output=True, text=True, env=_shell_env(), timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    candidates = {}
    for line in run.stdout.splitlines():
        value, _, description = line.partition("\t")
        candidates[value] = description
    return candidates


def test_bash_sources_the_script_and_completes_a_subcommand(tmp_path: Path) -> None:
    assert os.access(BIN / "gossamer", os.X_OK)
    assert bash_complete(tmp_path, "gossamer", "vi") == ["viz"]
    top = bash_complete(tmp_path, "gossamer", "")
    for name in ("authz", "check", "completion", "identity", "install", "profile", "prune"):
        assert name in top
    assert bash_complete(tmp_path, "gossamer", "viz", "sta") == ["stat"]
    assert bash_complete(tmp_path, "gossamer", "profile", "--op") == ["--open-api"]
    assert sorted(bash_complete(tmp_path, "gossamer", "completion", "")) == ["bash", "fish", "zsh"]


def test_zsh_sources_the_script_and_completes_on_tab(tmp_path: Path) -> None:
    assert zsh_complete(tmp_path, "gossamer vi") == ("gossamer viz ", ["viz"])
    line, matches = zsh_complete(tmp_path, "gossamer viz ")
    assert line == "gossamer viz "  # several candidates: the line stays, they are listed
    assert sorted(matches) == [
        "check", "dashboard", "edges", "install", "routes", "stat", "tap", "top", "uninstall",
    ]  # fmt: skip
    assert zsh_complete(tmp_path, "gossamer viz sta") == ("gossamer viz stat ", ["stat"])
    assert zsh_complete(tmp_path, "gossamer profile --op")[0] == "gossamer profile --open-api "
    _, shells = zsh_complete(tmp_path, "gossamer completion ")
    assert sorted(shells) == ["bash", "fish", "zsh"]


def test_zsh_autoloads_the_script_from_fpath(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_gossamer").write_text(script("zsh"))
    assert zsh_complete(tmp_path, "gossamer vi", load=str(functions)) == ("gossamer viz ", ["viz"])


def test_fish_completes_subcommands_with_whole_descriptions(tmp_path: Path) -> None:
    assert list(fish_complete(tmp_path, "gossamer vi")) == ["viz"]
    top = fish_complete(tmp_path, "gossamer ")
    for name in ("authz", "check", "completion", "identity", "install", "profile", "prune"):
        assert name in top
    stat = fish_complete(tmp_path, "gossamer viz sta")
    assert list(stat) == ["stat"]
    # Click's own script cut every description at its first comma ("Success rate").
    assert stat["stat"].startswith("Success rate, RPS, latency")
    assert list(fish_complete(tmp_path, "gossamer profile --op")) == ["--open-api"]
    assert sorted(fish_complete(tmp_path, "gossamer completion ")) == ["bash", "fish", "zsh"]


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
