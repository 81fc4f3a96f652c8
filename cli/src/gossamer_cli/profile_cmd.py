"""``gossamer profile``: write a ServiceProfile, as ``linkerd profile`` does.

``gossamer profile (--template | --open-api FILE | --proto FILE) SERVICE [-n ns]`` prints
the profile as YAML on stdout (``FILE`` may be ``-`` for stdin); the parsing is in
:mod:`gossamer_cli.profile_spec`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gossamer_cli import manifests, profile_spec


def _read(path: str, flag: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(profile_spec.MAX_SOURCE_BYTES + 1), "<stdin>"
    file = Path(path)
    try:
        if file.stat().st_size > profile_spec.MAX_SOURCE_BYTES:
            raise click.BadParameter(
                f"{path} is larger than {profile_spec.MAX_SOURCE_BYTES} bytes", param_hint=flag
            )
        return file.read_text(encoding="utf-8"), path
    except FileNotFoundError:
        raise click.BadParameter(f"no such file: {path}", param_hint=flag) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=flag) from None


@click.command("profile")
@click.argument("service")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--template", "as_template", is_flag=True, help="Output a commented template.")
@click.option("--open-api", "open_api", metavar="FILE", help="OpenAPI/Swagger spec (JSON/YAML).")
@click.option("--proto", metavar="FILE", help="Protobuf definition of a gRPC service.")
@click.option(
    "--cluster-domain", default="cluster.local", show_default=True, help="Cluster DNS suffix."
)
def profile(
    service: str,
    namespace: str,
    as_template: bool,
    open_api: str | None,
    proto: str | None,
    cluster_domain: str,
) -> None:
    """Output a ServiceProfile for SERVICE, from a template, an OpenAPI spec or a .proto."""
    chosen = [flag for flag, on in (("--template", as_template), ("--open-api", open_api),
                                    ("--proto", proto)) if on]  # fmt: skip
    if len(chosen) != 1:
        raise click.UsageError(
            "give exactly one of --template, --open-api FILE or --proto FILE"
            + (f" (got {', '.join(chosen)})" if chosen else "")
        )
    try:
        if as_template:
            click.echo(profile_spec.template(service, namespace, cluster_domain), nl=False)
            return
        if open_api is not None:
            routes = profile_spec.parse_openapi(*_read(open_api, "--open-api"))
        else:
            assert proto is not None
            routes = profile_spec.parse_proto(*_read(proto, "--proto"))
        obj = profile_spec.service_profile(service, namespace, routes, cluster_domain)
    except profile_spec.ProfileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(manifests.to_yaml([obj]), nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(profile)
