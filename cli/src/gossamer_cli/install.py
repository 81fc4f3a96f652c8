"""``gossamer install``, ``upgrade`` and ``uninstall``: manifests on stdout, for ``kubectl``.

Like ``linkerd install`` these commands change nothing themselves; pipe them to
``kubectl apply -f -`` (or ``kubectl delete -f -``). ``install`` generates the trust anchor,
issuer and webhook certificates unless given; ``upgrade`` reads the ones already in the cluster
so that an upgrade never rotates the mesh's identity by accident.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from gossamer_cli import manifests as m
from gossamer_cli.manifests_certs import (
    CertificateInputError,
    IdentityPems,
    check_identity,
    check_trust_anchors,
    generate_identity,
    generate_webhook,
)
from gossamer_cli.manifests_values import (
    ChartValues,
    ValuesError,
    chart_app_version,
    chart_values,
    merge,
    parse_set,
)
from gossamer_cli.private_files import write_private_file

NAMESPACE_HELP = "Namespace of the control plane."


def _emit(objects: Sequence[dict[str, Any]], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(m.to_json_list(objects), indent=2))
    else:
        click.echo(m.to_yaml(objects), nl=False)


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise click.UsageError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _identity_overrides(pems: IdentityPems, external: bool) -> dict[str, Any]:
    tls = {} if external else {"crtPEM": pems.issuer_crt_pem, "keyPEM": pems.issuer_key_pem}
    issuer: dict[str, Any] = {"tls": tls}
    if external:
        issuer["scheme"] = "kubernetes.io/tls"
    return {"identityTrustAnchorsPEM": pems.trust_anchors_pem, "identity": {"issuer": issuer}}


def render(
    *,
    namespace: str,
    ha: bool,
    value_files: Sequence[Path],
    sets: Sequence[str],
    certs: Mapping[str, Any],
    install_namespace: bool = True,
) -> list[dict[str, Any]]:
    """Merge values (chart, HA, files, certificates, ``--set``) and render the control plane."""
    overrides = [merge({"installNamespace": install_namespace}, certs), parse_set(sets)]
    values = chart_values(ha=ha, files=value_files, overrides=overrides)
    parsed = ChartValues.parse(values, namespace=namespace, app_version=chart_app_version())
    return m.control_plane(parsed)


def _values_options(f: Any) -> Any:
    f = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Set a chart value (as helm --set), e.g. --set image.registry=ghcr.io/me.",
    )(f)
    f = click.option(
        "-f",
        "--values",
        "value_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A values file (as helm -f); later files win.",
    )(f)
    f = click.option("--ha", is_flag=True, help="Apply the chart's values-ha.yaml.")(f)
    f = click.option(
        "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
    )(f)
    f = click.option(
        "-L",
        "--gossamer-namespace",
        "namespace",
        default="gossamer",
        show_default=True,
        help=NAMESPACE_HELP,
    )(f)
    return f


@click.command("install")
@_values_options
@click.option("--crds", is_flag=True, help="Render only the CustomResourceDefinitions.")
@click.option(
    "--identity-trust-anchors-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM trust anchor(s); generated when absent.",
)
@click.option(
    "--identity-issuer-certificate-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM issuer certificate, signed by a trust anchor.",
)
@click.option(
    "--identity-issuer-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM issuer private key (ECDSA P-256).",
)
@click.option(
    "--write-identity-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the trust anchor and issuer as ca.crt, issuer.crt, issuer.key here "
    "(for helm/skaffold values, or to keep the generated ones).",
)
@click.option(
    "--identity-external-issuer",
    is_flag=True,
    help="The issuer Secret (kubernetes.io/tls) is managed outside, e.g. by cert-manager.",
)
def install(
    namespace: str,
    output: str,
    ha: bool,
    value_files: tuple[Path, ...],
    sets: tuple[str, ...],
    crds: bool,
    identity_trust_anchors_file: Path | None,
    identity_issuer_certificate_file: Path | None,
    identity_issuer_key_file: Path | None,
    identity_external_issuer: bool,
    write_identity_dir: Path | None,
) -> None:
    """Print the control plane's manifests (or with --crds the CRDs) for kubectl apply."""
    try:
        if crds:
            _emit(m.crds(), output)
            return
        now = dt.datetime.now(dt.UTC)
        trust_domain = str(_peek_trust_domain(ha, value_files, sets))
        anchors = _read(identity_trust_anchors_file, "trust anchors file")
        issuer_crt = _read(identity_issuer_certificate_file, "issuer certificate file")
        issuer_key = _read(identity_issuer_key_file, "issuer key file")
        given = [v is not None for v in (anchors, issuer_crt, issuer_key)]
        if identity_external_issuer:
            if anchors is None:
                raise click.UsageError(
                    "--identity-external-issuer needs --identity-trust-anchors-file"
                )
            if issuer_crt is not None or issuer_key is not None:
                raise click.UsageError(
                    "--identity-external-issuer: the issuer lives in the Secret managed outside "
                    "(e.g. by cert-manager); do not give --identity-issuer-certificate-file "
                    "or --identity-issuer-key-file"
                )
            check_trust_anchors(anchors)
            pems = IdentityPems(anchors, "", "")
        elif any(given) and not all(given):
            raise click.UsageError(
                "give all of --identity-trust-anchors-file, --identity-issuer-certificate-file "
                "and --identity-issuer-key-file, or none of them (to generate all three)"
            )
        elif anchors is not None and issuer_crt is not None and issuer_key is not None:
            pems = IdentityPems(anchors, issuer_crt, issuer_key)
            check_identity(pems, namespace=namespace, trust_domain=trust_domain, now=now)
        else:
            pems = generate_identity(namespace=namespace, trust_domain=trust_domain, now=now)
        if write_identity_dir is not None:
            _write_identity(write_identity_dir, pems)
        webhook = generate_webhook(namespace=namespace, now=now)
        certs = merge(
            _identity_overrides(pems, identity_external_issuer),
            {
                "proxyInjector": {
                    "crtPEM": webhook.crt_pem,
                    "keyPEM": webhook.key_pem,
                    "caBundle": webhook.ca_pem,
                }
            },
        )
        objects = render(
            namespace=namespace, ha=ha, value_files=value_files, sets=sets, certs=certs
        )
    except (ValuesError, CertificateInputError) as exc:
        raise click.ClickException(str(exc)) from exc
    _emit(objects, output)


def _write_identity(directory: Path, pems: IdentityPems) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_text(pems.trust_anchors_pem)
        if pems.issuer_crt_pem:
            (directory / "issuer.crt").write_text(pems.issuer_crt_pem)
            write_private_file(directory / "issuer.key", pems.issuer_key_pem.encode())
    except OSError as exc:
        raise click.UsageError(f"cannot write to {directory}: {exc.strerror}") from exc


def _peek_trust_domain(ha: bool, value_files: Sequence[Path], sets: Sequence[str]) -> str:
    values = chart_values(ha=ha, files=value_files, overrides=[parse_set(sets)])
    return str(values.get("identityTrustDomain") or values.get("clusterDomain") or "")


# --- upgrade ---------------------------------------------------------------------------------


def _secret_text(secret: Mapping[str, Any], key: str) -> str:
    data = secret.get("data") or {}
    if key not in data:
        raise ValuesError(f"Secret {secret['metadata']['name']} has no {key}")
    return base64.b64decode(data[key]).decode()


async def fetch_installed_certs(kubeconfig: str | None, namespace: str) -> dict[str, Any]:
    """The certificates of the running install, as chart values."""
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeApiError
    from gossamer_kube.resources import CONFIGMAPS, MUTATINGWEBHOOKCONFIGURATIONS, SECRETS

    async with KubeClient(KubeConfig.load(kubeconfig)) as client:
        try:
            roots = await client.get(CONFIGMAPS, m.TRUST_ROOTS_CONFIG_MAP, namespace=namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                raise ValuesError(
                    f"no Gossamer control plane in namespace {namespace!r} "
                    f"(ConfigMap {m.TRUST_ROOTS_CONFIG_MAP} not found); use gossamer install"
                ) from exc
            raise
        config = await client.get(CONFIGMAPS, m.CONFIG_MAP, namespace=namespace)
        scheme = (config.get("data") or {}).get("issuerScheme", "linkerd.io/tls")
        issuer: dict[str, Any] = {"scheme": scheme}
        if scheme == "linkerd.io/tls":
            secret = await client.get(SECRETS, m.ISSUER_SECRET, namespace=namespace)
            issuer["tls"] = {
                "crtPEM": _secret_text(secret, "crt.pem"),
                "keyPEM": _secret_text(secret, "key.pem"),
            }
        tls = await client.get(SECRETS, m.INJECTOR_TLS_SECRET, namespace=namespace)
        hook = await client.get(
            MUTATINGWEBHOOKCONFIGURATIONS, f"{namespace}-proxy-injector-webhook-config"
        )
    ca = base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]).decode()
    return {
        "identityTrustAnchorsPEM": (roots.get("data") or {}).get("ca-bundle.crt", ""),
        "identity": {"issuer": issuer},
        "proxyInjector": {
            "crtPEM": _secret_text(tls, "tls.crt"),
            "keyPEM": _secret_text(tls, "tls.key"),
            "caBundle": ca,
        },
    }


@click.command("upgrade")
@_values_options
@click.option("--crds", is_flag=True, help="Render only the CustomResourceDefinitions.")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
def upgrade(
    namespace: str,
    output: str,
    ha: bool,
    value_files: tuple[Path, ...],
    sets: tuple[str, ...],
    crds: bool,
    kubeconfig: str | None,
) -> None:
    """Print the upgraded control plane, keeping the installed certificates."""
    try:
        if crds:
            _emit(m.crds(), output)
            return
        certs = asyncio.run(fetch_installed_certs(kubeconfig, namespace))
        objects = render(
            namespace=namespace, ha=ha, value_files=value_files, sets=sets, certs=certs
        )
    except ValuesError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the cluster could not be read: say so, with the reason
        raise click.ClickException(f"cannot read the installed control plane: {exc}") from exc
    _emit(objects, output)


# --- uninstall -------------------------------------------------------------------------------

_PLACEHOLDER = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"
#: Stand-ins for the certificates where only the rendered objects' names matter.
PLACEHOLDER_CERTS: Mapping[str, Any] = {
    "identityTrustAnchorsPEM": _PLACEHOLDER,
    "identity": {"issuer": {"tls": {"crtPEM": _PLACEHOLDER, "keyPEM": _PLACEHOLDER}}},
    "proxyInjector": {
        "crtPEM": _PLACEHOLDER,
        "keyPEM": _PLACEHOLDER,
        "caBundle": _PLACEHOLDER,
    },
}


def uninstall_objects(namespace: str, *, keep_crds: bool) -> list[dict[str, Any]]:
    """Name-only objects to delete: webhook first (stop injecting), namespace and CRDs last."""
    rendered = render(
        namespace=namespace, ha=True, value_files=(), sets=(), certs=PLACEHOLDER_CERTS
    )
    first = [o for o in rendered if o["kind"] == "MutatingWebhookConfiguration"]
    last = [o for o in rendered if o["kind"] == "Namespace"]
    middle = [o for o in rendered if o not in first and o not in last]
    ordered = first + middle + last + ([] if keep_crds else m.crds())
    out = []
    for o in ordered:
        meta = {"name": o["metadata"]["name"]}
        if "namespace" in o["metadata"]:
            meta["namespace"] = o["metadata"]["namespace"]
        out.append({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": meta})
    return out


@click.command("uninstall")
@click.option(
    "-L", "--gossamer-namespace", "namespace", default="gossamer", show_default=True,
    help=NAMESPACE_HELP,
)  # fmt: skip
@click.option(
    "--keep-crds", is_flag=True, help="Leave the CRDs (and so every policy resource) in place."
)
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def uninstall(namespace: str, keep_crds: bool, output: str) -> None:
    """Print every object of the control plane for `kubectl delete --ignore-not-found -f -`."""
    try:
        objects = uninstall_objects(namespace, keep_crds=keep_crds)
    except ValuesError as exc:
        raise click.ClickException(str(exc)) from exc
    _emit(objects, output)


def register(cli: click.Group) -> None:
    for command in (install, upgrade, uninstall):
        cli.add_command(command)
