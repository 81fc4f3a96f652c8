"""The ``gossamer`` command."""

from __future__ import annotations

import click

from gossamer_cli import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gossamer")
def cli() -> None:
    """Gossamer: a Linkerd-compatible service mesh for Kubernetes, written in Python."""


def main() -> None:
    cli()
