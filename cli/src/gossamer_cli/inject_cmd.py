"""``gossamer inject`` and ``gossamer uninject``: edit manifests on their way to kubectl.

Both read multi-document YAML (files or ``-``), walk every workload (Lists included) and write
the documents back with ruamel's round-trip dumper, so comments, key order and unrelated
fields survive. The injection itself is :mod:`gossamer_inject`, the same code the webhook runs.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click
from gossamer_inject import annotations as a
from gossamer_inject import jsonpatch
from gossamer_inject.config import MeshValues
from gossamer_inject.decision import Origin, decide
from gossamer_inject.errors import InjectError
from gossamer_inject.patch import Owner, build_pod_patch
from gossamer_inject.podspec import check_pod
from gossamer_inject.uninject import remove_inject_annotation, uninject_pod
from gossamer_inject.workloads import objects, pod_template
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from gossamer_cli import __version__

CREATED_BY = f"gossamer/cli {__version__}"


@dataclass
class Report:
    """What happened to each resource, printed to stderr like ``linkerd inject`` does."""

    lines: list[str] = field(default_factory=list)

    def add(self, ref: str, what: str) -> None:
        self.lines.append(f"{ref} {what}")


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


_SEQ_UNDER_KEY = re.compile(r"^( *)[^\s#-][^:#]*:\s*\n( *)- ", re.MULTILINE)


def _indentation(text: str) -> tuple[int, int]:
    """Guess (sequence indent, dash offset) from the first list under a key."""
    match = _SEQ_UNDER_KEY.search(text)
    if match is None:
        return 2, 0
    offset = max(0, len(match[2]) - len(match[1]))
    return offset + 2, offset


def _read(sources: Iterable[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for source in sources:
        if source == "-":
            out.append(("<stdin>", sys.stdin.read()))
        else:
            try:
                out.append((source, Path(source).read_text()))
            except OSError as exc:
                raise click.ClickException(f"{source}: {exc.strerror}") from exc
    return out


def _transform(sources: Iterable[str], edit: Any, out: TextIO, report: Report) -> None:
    """Parse everything first, edit, then write: a bad document aborts before any output."""
    rendered: list[str] = []
    for name, text in _read(sources):
        yaml = _yaml()
        sequence, offset = _indentation(text)
        yaml.indent(mapping=2, sequence=sequence, offset=offset)
        yaml.explicit_start = text.lstrip().startswith("---")
        try:
            docs = list(yaml.load_all(text))
        except YAMLError as exc:
            raise click.ClickException(f"{name}: not valid YAML: {exc}") from exc
        for doc in docs:
            try:
                for obj in objects(doc):
                    edit(obj, report)
            except InjectError as exc:
                raise click.ClickException(f"{name}: {exc}") from exc
        buffer = io.StringIO()
        yaml.dump_all(docs, buffer)
        rendered.append(buffer.getvalue())
    out.write("---\n".join(rendered) if len(rendered) > 1 else "".join(rendered))


def _literal_multiline(node: Any) -> Any:
    """Show PEM and other multi-line strings as YAML block literals instead of escapes."""
    if isinstance(node, str) and "\n" in node:
        return LiteralScalarString(node)
    if isinstance(node, dict):
        return {k: _literal_multiline(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_literal_multiline(v) for v in node]
    return node


def _metadata(obj: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = CommentedMap()
        if isinstance(obj, CommentedMap):
            obj.insert(0, "metadata", metadata)
        else:
            obj["metadata"] = metadata
    return metadata


def _set_annotation(obj: MutableMapping[str, Any], key: str, value: str) -> None:
    metadata = _metadata(obj)
    if metadata.get("annotations") is None:
        metadata["annotations"] = CommentedMap()
    metadata["annotations"][key] = value


@dataclass(frozen=True)
class InjectOptions:
    manual: bool
    ingress: bool
    mesh: MeshValues


def _inject_one(opts: InjectOptions, obj: MutableMapping[str, Any], report: Report) -> None:
    kind = obj.get("kind")
    if kind == "Namespace":
        name = (obj.get("metadata") or {}).get("name", "")
        value = a.INJECT_INGRESS if opts.ingress else a.INJECT_ENABLED
        _set_annotation(obj, a.INJECT, value)
        report.add(f"namespace/{name}", "annotated")
        return
    found = pod_template(obj)
    if found is None:
        return
    template = found.template
    check_pod(template)
    if not opts.manual:
        decision = decide(template, origin=Origin.CLI, ingress=opts.ingress)
        if not decision.inject:
            report.add(found.ref, f"skipped: {decision.reason}")
            return
        value = a.INJECT_INGRESS if decision.ingress else a.INJECT_ENABLED
        _set_annotation(template, a.INJECT, value)
        report.add(found.ref, "injected")
        return
    result = build_pod_patch(
        template,
        mesh=opts.mesh,
        origin=Origin.CLI,
        created_by=CREATED_BY,
        namespace=found.namespace,
        owner=None if found.kind == "Pod" else Owner(found.kind, found.name),
        ingress=opts.ingress,
        annotate_opaque_ports=False,
    )
    if not result.decision.inject:
        report.add(found.ref, f"skipped: {result.decision.reason}")
        return
    ops = [
        {**op, "value": _literal_multiline(op["value"])} if "value" in op else op
        for op in result.ops
    ]
    jsonpatch.apply(template, ops)  # type: ignore[arg-type]
    report.add(found.ref, "injected")


def _uninject_one(obj: MutableMapping[str, Any], report: Report) -> None:
    kind = obj.get("kind")
    if kind == "Namespace":
        if remove_inject_annotation(obj):
            report.add(f"namespace/{(obj.get('metadata') or {}).get('name', '')}", "uninjected")
        return
    found = pod_template(obj)
    if found is None:
        return
    changed = uninject_pod(found.template)
    changed |= remove_inject_annotation(found.template)
    report.add(found.ref, "uninjected" if changed else "not injected")


def _print_report(report: Report, quiet: bool) -> None:
    if quiet:
        return
    for line in report.lines:
        click.echo(line, err=True)


@click.command("inject")
@click.argument("sources", nargs=-1)
@click.option(
    "--manual", is_flag=True, help="Write the proxy containers in, not just the annotation."
)
@click.option("--ingress", is_flag=True, help="Run the proxy in ingress mode.")
@click.option("--control-plane-namespace", default="gossamer", show_default=True)
@click.option("--trust-domain", default="cluster.local", show_default=True)
@click.option("--cluster-domain", default="cluster.local", show_default=True)
@click.option(
    "--trust-anchors-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="GOSSAMER_TRUST_ANCHORS_FILE",
    help="PEM trust anchors for the proxy (required with --manual).",
)
@click.option("--proxy-image", default="gossamer/proxy", show_default=True)
@click.option("--init-image", default="gossamer/proxy-init", show_default=True)
@click.option("--proxy-version", default=__version__, show_default=True)
@click.option(
    "--native-sidecar/--no-native-sidecar",
    default=True,
    show_default=True,
    help="Run the proxy as a native sidecar (an init container with restartPolicy Always).",
)
@click.option(
    "--iptables-mode",
    type=click.Choice(["nft", "legacy", "plain"]),
    default="nft",
    show_default=True,
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print the per-resource report.")
def inject(
    sources: tuple[str, ...],
    manual: bool,
    ingress: bool,
    control_plane_namespace: str,
    trust_domain: str,
    cluster_domain: str,
    trust_anchors_file: Path | None,
    proxy_image: str,
    init_image: str,
    proxy_version: str,
    native_sidecar: bool,
    iptables_mode: str,
    quiet: bool,
) -> None:
    """Add the mesh to the workloads in SOURCES (files, or - for stdin)."""
    anchors = ""
    if manual:
        if trust_anchors_file is None:
            raise click.UsageError("--manual needs --trust-anchors-file (the mesh's trust roots)")
        anchors = trust_anchors_file.read_text()
        if "-----BEGIN CERTIFICATE-----" not in anchors:
            raise click.UsageError(f"{trust_anchors_file} holds no PEM certificate")
    mesh = MeshValues(
        control_plane_namespace=control_plane_namespace,
        trust_domain=trust_domain,
        cluster_domain=cluster_domain,
        trust_anchors_pem=anchors,
        proxy_image=proxy_image,
        init_image=init_image,
        version=proxy_version,
        native_sidecar=native_sidecar,
        iptables_mode=iptables_mode,
    )
    opts = InjectOptions(manual=manual, ingress=ingress, mesh=mesh)
    report = Report()
    _transform(
        sources or ("-",),
        lambda obj, rep: _inject_one(opts, obj, rep),
        sys.stdout,
        report,
    )
    _print_report(report, quiet)


@click.command("uninject")
@click.argument("sources", nargs=-1)
@click.option("-q", "--quiet", is_flag=True, help="Do not print the per-resource report.")
def uninject(sources: tuple[str, ...], quiet: bool) -> None:
    """Remove the mesh from the workloads in SOURCES (files, or - for stdin)."""
    report = Report()
    _transform(sources or ("-",), _uninject_one, sys.stdout, report)
    _print_report(report, quiet)


def register(group: click.Group) -> None:
    group.add_command(inject)
    group.add_command(uninject)
