"""Issuer loading, validation and hot reload from files (both Secret layouts and ..data swaps)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gossamer_identity.issuer import IssuerError, IssuerFiles, IssuerReloader, load_issuer
from gossamer_tls import (
    CertifiedKey,
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    create_issuer,
    create_trust_anchor,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


def fresh() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
    )


def pem(material: TrustMaterial) -> tuple[bytes, bytes, bytes]:
    return (
        certificates_to_pem([material.trust_anchor.certificate]),
        certificates_to_pem([material.issuer.certificate]),
        private_key_to_pem(material.issuer.private_key),
    )


def test_load_valid_issuer() -> None:
    material = fresh()
    loaded = load_issuer(*pem(material), now=NOW)
    assert loaded.issuer.certificate == material.issuer.certificate
    assert loaded.anchors == (material.trust_anchor.certificate,)
    assert loaded.subject == "CN=identity.gossamer.cluster.local"
    assert loaded.expiry == material.issuer.certificate.not_valid_after_utc


def test_kubernetes_tls_bundle_with_chain_and_root() -> None:
    """cert-manager style tls.crt (issuer + intermediate + root): the root leaves the chain."""
    anchor = create_trust_anchor(common_name="root", now=NOW, path_length=2)
    middle = create_issuer(anchor, common_name="middle", now=NOW, path_length=1)
    issuer = create_issuer(middle, common_name="identity", now=NOW)
    bundle = certificates_to_pem([issuer.certificate, middle.certificate, anchor.certificate])
    loaded = load_issuer(
        certificates_to_pem([anchor.certificate]),
        bundle,
        private_key_to_pem(issuer.private_key),
        now=NOW,
    )
    assert loaded.issuer.chain == (middle.certificate,)
    assert len(loaded.issuer.intermediates_der) == 2
    leaf = loaded.issuer.sign_leaf(generate_private_key().public_key(), IDENTITY, now=NOW)
    assert leaf.valid_until <= middle.certificate.not_valid_after_utc


def test_expired_issuer_is_refused() -> None:
    material = fresh()
    later = material.issuer.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(IssuerError, match="expired"):
        load_issuer(*pem(material), now=later)


def test_issuer_that_is_not_a_ca_is_refused() -> None:
    material = fresh()
    key = generate_private_key()
    leaf = Issuer(material.issuer.certificate, material.issuer.private_key).sign_leaf(
        key.public_key(), IDENTITY, now=NOW
    )
    anchors = certificates_to_pem([material.trust_anchor.certificate])
    bundle = certificates_to_pem([leaf.certificate, material.issuer.certificate])
    with pytest.raises(IssuerError, match="not a CA"):
        load_issuer(anchors, bundle, private_key_to_pem(key), now=NOW)


def test_issuer_from_another_root_is_refused() -> None:
    ours, theirs = fresh(), fresh()
    anchors = certificates_to_pem([theirs.trust_anchor.certificate])
    with pytest.raises(IssuerError, match="not trusted"):
        load_issuer(anchors, *pem(ours)[1:], now=NOW)


def test_key_mismatch_is_refused() -> None:
    material = fresh()
    anchors, crt, _ = pem(material)
    with pytest.raises(IssuerError, match="does not match"):
        load_issuer(anchors, crt, private_key_to_pem(generate_private_key()), now=NOW)


def test_rsa_issuer_key_is_refused() -> None:
    material = fresh()
    anchors, crt, _ = pem(material)
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(IssuerError, match="must be ECDSA P-256, got RSA-2048"):
        load_issuer(anchors, crt, rsa_pem, now=NOW)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_malformed_files_are_named(which: int) -> None:
    parts = list(pem(fresh()))
    parts[which] = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    names = ["trust anchors", "issuer certificate", "issuer key"]
    with pytest.raises(IssuerError, match=names[which]):
        load_issuer(parts[0], parts[1], parts[2], now=NOW)


# -- files and reload ---------------------------------------------------------------------------


def write_plain(directory: Path, anchors_file: Path, material: TrustMaterial, scheme: str) -> None:
    anchors, crt, key = pem(material)
    crt_name, key_name = ("crt.pem", "key.pem") if scheme == "linkerd" else ("tls.crt", "tls.key")
    anchors_file.write_bytes(anchors)
    (directory / crt_name).write_bytes(crt)
    (directory / key_name).write_bytes(key)


def write_secret_mount(directory: Path, material: TrustMaterial, generation: int) -> None:
    """Imitate the kubelet's atomic writer: a timestamped dir, ..data symlink swapped by rename."""
    _, crt, key = pem(material)
    payload = directory / f"..2026_03_01_{generation:04d}"
    payload.mkdir()
    (payload / "tls.crt").write_bytes(crt)
    (payload / "tls.key").write_bytes(key)
    tmp_link = directory / "..data_tmp"
    tmp_link.symlink_to(payload.name)
    os.replace(tmp_link, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


@pytest.mark.parametrize("scheme", ["linkerd", "kubernetes"])
def test_files_load_both_layouts(tmp_path: Path, scheme: str) -> None:
    material = fresh()
    write_plain(tmp_path, tmp_path / "ca-bundle.crt", material, scheme)
    files = IssuerFiles(issuer_dir=tmp_path, trust_anchors=tmp_path / "ca-bundle.crt")
    assert files.load(now=NOW).issuer.certificate == material.issuer.certificate


def test_empty_issuer_directory_is_explained(tmp_path: Path) -> None:
    files = IssuerFiles(issuer_dir=tmp_path, trust_anchors=tmp_path / "ca-bundle.crt")
    with pytest.raises(IssuerError, match=r"neither crt\.pem/key\.pem"):
        files.load(now=NOW)


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    material = fresh()
    write_plain(tmp_path, tmp_path / "ca-bundle.crt", material, "linkerd")
    (tmp_path / "key.pem").unlink()
    files = IssuerFiles(issuer_dir=tmp_path, trust_anchors=tmp_path / "ca-bundle.crt")
    with pytest.raises(IssuerError, match=r"key\.pem"):
        files.load(now=NOW)


def test_reload_after_in_place_rewrite(tmp_path: Path) -> None:
    first, second = fresh(), fresh()
    anchors = tmp_path / "ca-bundle.crt"
    write_plain(tmp_path, anchors, first, "linkerd")
    changes: list[str] = []
    reloader = IssuerReloader.start(
        IssuerFiles(issuer_dir=tmp_path, trust_anchors=anchors),
        clock=lambda: NOW,
        on_change=lambda loaded: changes.append(loaded.subject),
    )
    assert reloader.poll() is False
    write_plain(tmp_path, anchors, second, "linkerd")
    assert reloader.poll() is True
    assert reloader.issuer.certificate == second.issuer.certificate
    assert changes == ["CN=identity.gossamer.cluster.local"]
    assert reloader.poll() is False


def test_reload_after_secret_symlink_swap(tmp_path: Path) -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW)
    first = create_issuer(anchor, common_name="identity-1", now=NOW)
    second = create_issuer(anchor, common_name="identity-2", now=NOW)
    anchors = tmp_path / "trust" / "ca-bundle.crt"
    anchors.parent.mkdir()
    anchors.write_bytes(certificates_to_pem([anchor.certificate]))
    issuer_dir = tmp_path / "issuer"
    issuer_dir.mkdir()
    write_secret_mount(issuer_dir, TrustMaterial(anchor, first), 1)
    reloader = IssuerReloader.start(IssuerFiles(issuer_dir, anchors), clock=lambda: NOW)
    assert reloader.current.subject == "CN=identity-1"
    write_secret_mount(issuer_dir, TrustMaterial(anchor, second), 2)
    assert reloader.poll() is True
    assert reloader.current.subject == "CN=identity-2"


def test_broken_rotation_keeps_the_working_issuer(tmp_path: Path) -> None:
    first, second = fresh(), fresh()
    anchors = tmp_path / "ca-bundle.crt"
    write_plain(tmp_path, anchors, first, "linkerd")
    failures: list[str] = []
    reloader = IssuerReloader.start(
        IssuerFiles(issuer_dir=tmp_path, trust_anchors=anchors),
        clock=lambda: NOW,
        on_failure=failures.append,
    )
    # Half-written rotation: new certificate, old key.
    (tmp_path / "crt.pem").write_bytes(certificates_to_pem([second.issuer.certificate]))
    assert reloader.poll() is False
    assert reloader.issuer.certificate == first.issuer.certificate
    assert len(failures) == 1
    assert "not trusted" in failures[0]
    assert reloader.poll() is False  # reported once, not on every poll
    assert len(failures) == 1
    # The rest of the rotation lands: now it validates and is installed.
    anchors.write_bytes(certificates_to_pem([second.trust_anchor.certificate]))
    (tmp_path / "key.pem").write_bytes(private_key_to_pem(second.issuer.private_key))
    assert reloader.poll() is True
    assert reloader.issuer.certificate == second.issuer.certificate


def test_start_refuses_unusable_material(tmp_path: Path) -> None:
    material = fresh()
    anchors = tmp_path / "ca-bundle.crt"
    write_plain(tmp_path, anchors, material, "linkerd")
    later = material.issuer.certificate.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(IssuerError, match="expired"):
        IssuerReloader.start(IssuerFiles(tmp_path, anchors), clock=lambda: later)


def test_certified_key_type_is_reexported() -> None:
    assert CertifiedKey.__name__ == "CertifiedKey"
