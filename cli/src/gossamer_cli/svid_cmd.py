"""``gossamer svid``: sign an X.509-SVID for a proxy outside Kubernetes (an ExternalWorkload).

Linkerd's external proxies get their SVID from a SPIRE agent. Without SPIRE, the mesh issuer
(the ``crt.pem``/``key.pem`` of the issuer Secret, or local mode's
``<state>/control-plane/identity/issuer``) signs one: a fresh P-256 key and a leaf whose only
name is the SPIFFE ID as a URI SAN, chained to the issuer. The command writes ``svid.pem``
(leaf, then issuer), ``svid_key.pem`` (mode 0600) and, with ``--trust-anchors``,
``bundle.pem`` into ``--out-dir``, the files a SPIFFE helper would write; the external proxy
reads them through ``GOSSAMER_PROXY_IDENTITY_CERT_FILE`` and ``…_KEY_FILE`` with
``LINKERD2_PROXY_IDENTITY_SERVER_ID`` = the SPIFFE ID. Run it again before the SVID expires
(it lives ``--lifetime``, never past the issuer): the proxy re-reads the files when they
change, no restart needed. The key file is replaced atomically, mode 0600.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from gossamer_common.settings import parse_duration
from gossamer_tls import CertifiedKey, TlsError, load_certificate, load_certificates
from gossamer_tls.pem import load_private_key
from gossamer_tls.svid import issue_svid

from gossamer_cli.private_files import write_private_file


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@click.command("svid")
@click.argument("spiffe_id")
@click.option(
    "--issuer-cert", type=click.Path(path_type=Path, dir_okay=False), required=True,
    help="The mesh issuer's certificate (PEM), e.g. the issuer Secret's crt.pem.",
)  # fmt: skip
@click.option(
    "--issuer-key", type=click.Path(path_type=Path, dir_okay=False), required=True,
    help="The mesh issuer's private key (PEM).",
)  # fmt: skip
@click.option(
    "--out-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
    help="Where to write svid.pem, svid_key.pem (and bundle.pem).",
)  # fmt: skip
@click.option(
    "--trust-anchors", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="The mesh trust anchors (PEM), copied to bundle.pem.",
)  # fmt: skip
@click.option("--lifetime", default="24h", show_default=True, help="How long the SVID lives.")
def svid_command(
    spiffe_id: str,
    issuer_cert: Path,
    issuer_key: Path,
    out_dir: Path,
    trust_anchors: Path | None,
    lifetime: str,
) -> None:
    """Sign an X.509-SVID for SPIFFE_ID (spiffe://<trust-domain>/<path>) with the mesh
    issuer, for a proxy outside Kubernetes."""
    try:
        seconds = parse_duration(lifetime)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lifetime") from None
    if seconds <= 0:
        raise click.BadParameter("must be positive", param_hint="--lifetime")
    try:
        issuer = CertifiedKey(
            load_certificate(_read(issuer_cert, "issuer certificate"), what="issuer certificate"),
            load_private_key(_read(issuer_key, "issuer key"), what="issuer key"),
        )
        anchors = (
            load_certificates(_read(trust_anchors, "trust anchors"), what="trust anchors")
            if trust_anchors is not None
            else None
        )
        svid = issue_svid(
            issuer, spiffe_id, now=dt.datetime.now(dt.UTC), lifetime=dt.timedelta(seconds=seconds)
        )
    except TlsError as exc:
        raise click.ClickException(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_private_file(out_dir / "svid_key.pem", svid.key_pem)
    (out_dir / "svid.pem").write_bytes(svid.chain_pem)
    if anchors is not None and trust_anchors is not None:
        (out_dir / "bundle.pem").write_bytes(_read(trust_anchors, "trust anchors"))
    not_after = svid.chain[0].not_valid_after_utc.isoformat()
    click.echo(f"wrote the SVID for {spiffe_id} to {out_dir} (valid until {not_after})")


def register(group: click.Group) -> None:
    group.add_command(svid_command)
