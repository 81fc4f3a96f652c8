"""``gossamer svid``: an X.509-SVID from the mesh issuer, as files an external proxy loads."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from gossamer_cli.main import cli
from gossamer_tls import (
    certificates_to_pem,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
    verify_chain,
)
from gossamer_tls.svid import spiffe_id_of

VM = "spiffe://cluster.local/vm/billing"


@pytest.fixture
def issuer_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )
    cert, key, anchors = tmp_path / "crt.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_bytes(certificates_to_pem([trust.issuer.certificate]))
    key.write_bytes(private_key_to_pem(trust.issuer.private_key))
    anchors.write_bytes(certificates_to_pem([trust.trust_anchor.certificate]))
    return cert, key, anchors


def test_writes_an_svid_chained_to_the_issuer(
    issuer_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, anchors = issuer_files
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["svid", VM, "--issuer-cert", str(cert), "--issuer-key", str(key),
         "--out-dir", str(out), "--trust-anchors", str(anchors), "--lifetime", "1h"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote the SVID for {VM}" in result.output
    chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    assert spiffe_id_of(chain[0]) == VM
    assert chain[0].not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(hours=1, minutes=1)
    roots = x509.load_pem_x509_certificates((out / "bundle.pem").read_bytes())
    verify_chain(chain[0], chain[1:], roots, now=dt.datetime.now(dt.UTC))
    assert stat.S_IMODE((out / "svid_key.pem").stat().st_mode) == 0o600


def test_refuses_what_is_not_a_spiffe_id(
    issuer_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, _ = issuer_files
    result = CliRunner().invoke(
        cli,
        ["svid", "https://cluster.local/vm", "--issuer-cert", str(cert),
         "--issuer-key", str(key), "--out-dir", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "is not a SPIFFE ID" in result.output
    assert not (tmp_path / "out").exists()
    missing = CliRunner().invoke(
        cli,
        ["svid", VM, "--issuer-cert", str(tmp_path / "nope.pem"), "--issuer-key", str(key),
         "--out-dir", str(tmp_path / "out")],
    )  # fmt: skip
    assert missing.exit_code == 1
    assert "cannot read issuer certificate" in missing.output
