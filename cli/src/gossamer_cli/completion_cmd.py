"""``gossamer completion bash|zsh|fish``: a shell completion script, as ``linkerd completion``.

The script is Click's, for this very command tree: on every <Tab> the shell runs
``gossamer`` with ``_GOSSAMER_COMPLETE=<shell>_complete`` and the words typed so far, and
the command answers with the subcommands, options and choices that fit there. So the
completions always match the installed CLI, subcommands added later included.

    source <(gossamer completion bash)
    gossamer completion zsh > "${fpath[1]}/_gossamer"
    gossamer completion fish > ~/.config/fish/completions/gossamer.fish

Click's fish script splits each answer (``plain,<value>\t<help>``) at *every* comma and
keeps the second piece, so a help text with a comma ("Success rate, RPS, latency ...") was
cut at its first comma. Ours splits at the first comma only (:class:`FishComplete`).
"""

from __future__ import annotations

import click
from click import shell_completion
from click.shell_completion import get_completion_class

PROG_NAME = "gossamer"
COMPLETE_VAR = "_GOSSAMER_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


class FishComplete(shell_completion.FishComplete):
    """Click's fish completion with the answer split at its first comma only."""

    source_template = shell_completion.FishComplete.source_template.replace(
        'set -l metadata (string split "," $completion);',
        'set -l metadata (string split --max 1 "," $completion);',
    )


def script(root: click.Command, shell: str) -> str:
    cls = FishComplete if shell == "fish" else get_completion_class(shell)
    if cls is None:  # click.Choice has already refused it; kept for direct callers
        raise click.BadParameter(f"unsupported shell {shell!r}; one of {', '.join(SHELLS)}")
    return cls(root, {}, PROG_NAME, COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Output a shell completion script for bash, zsh or fish."""
    click.echo(script(ctx.find_root().command, shell))


def register(cli: click.Group) -> None:
    cli.add_command(completion)
