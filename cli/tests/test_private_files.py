"""Private keys are written 0600 and replaced atomically, whatever was at the path before."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from gossamer_cli.dev.tap import LocalTapService
from gossamer_cli.private_files import write_private_file


def test_an_existing_wider_key_file_is_replaced_owner_only(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(b"old")
    key.chmod(0o644)
    write_private_file(key, b"new secret")
    assert key.read_bytes() == b"new secret"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_the_local_tap_services_key_is_owner_only_even_over_an_old_readable_one(
    tmp_path: Path,
) -> None:
    tap = LocalTapService(tmp_path / "tap", tmp_path, tmp_path / "kubeconfig")
    (tmp_path / "tap").mkdir()
    old = tmp_path / "tap" / "tls.key"
    old.write_bytes(b"an older key")
    old.chmod(0o644)
    tap.write_certificates(dt.datetime.now(dt.UTC))
    assert b"PRIVATE KEY" in old.read_bytes()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
