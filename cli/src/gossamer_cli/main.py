"""The ``gossamer`` command: a thin click group.

Each subcommand lives in its own module and is attached here with one line
(``<module>.register(cli)`` or ``cli.add_command(...)``), so that parallel work on
different commands never touches the same lines.
"""

from __future__ import annotations

import click

from gossamer_cli import (
    __version__,
    authz_cmd,
    check,
    completion_cmd,
    diagnostics_cmd,
    identity_cmd,
    inject_cmd,
    install,
    profile_cmd,
    prune_cmd,
    svid_cmd,
    version_cmd,
)
from gossamer_cli.dev import command as dev_cmd
from gossamer_cli.jaeger import command as jaeger_cmd
from gossamer_cli.viz import command as viz_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gossamer")
def cli() -> None:
    """Gossamer: a Linkerd-compatible service mesh for Kubernetes, written in Python."""


identity_cmd.register(cli)
inject_cmd.register(cli)
version_cmd.register(cli)
install.register(cli)
check.register(cli)
dev_cmd.register(cli)
diagnostics_cmd.register(cli)
viz_cmd.register(cli)
profile_cmd.register(cli)
completion_cmd.register(cli)
authz_cmd.register(cli)
prune_cmd.register(cli)
jaeger_cmd.register(cli)
svid_cmd.register(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
