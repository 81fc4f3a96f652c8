"""Choosing binaries for a mode (with Linkerd's fallback) and reporting tool failures clearly.

Nothing here runs an iptables tool: the host's own tables are never touched. Real iptables is
exercised inside throwaway namespaces in test_proxy_init_interception.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gossamer_proxy_init.config import IptablesMode
from gossamer_proxy_init.errors import FirewallError
from gossamer_proxy_init.firewall import (
    Binaries,
    Firewall,
    Which,
    binary_name,
    resolve_binaries,
    set_close_wait_timeout,
)


def fake_which(installed: set[str]) -> Which:
    return lambda name: f"/usr/sbin/{name}" if name in installed else None


def tools(*names: str) -> set[str]:
    return {f"{n}{suffix}" for n in names for suffix in ("", "-save", "-restore")}


@pytest.mark.parametrize(
    ("mode", "family", "name"),
    [
        (IptablesMode.LEGACY, 4, "iptables-legacy"),
        (IptablesMode.NFT, 4, "iptables-nft"),
        (IptablesMode.PLAIN, 4, "iptables"),
        (IptablesMode.LEGACY, 6, "ip6tables-legacy"),
        (IptablesMode.NFT, 6, "ip6tables-nft"),
        (IptablesMode.PLAIN, 6, "ip6tables"),
    ],
)
def test_binary_names(mode: IptablesMode, family: int, name: str) -> None:
    assert binary_name(mode, family) == name
    named = Binaries.named(mode, family)
    assert (named.save, named.restore) == (f"{name}-save", f"{name}-restore")


def test_requested_mode_wins_when_installed() -> None:
    which = fake_which(tools("iptables-legacy", "iptables-nft", "iptables"))
    chosen = resolve_binaries(IptablesMode.LEGACY, 4, which=which)
    assert chosen.mode is IptablesMode.LEGACY
    assert chosen.restore == "/usr/sbin/iptables-legacy-restore"


def test_fallback_order_is_nft_plain_legacy() -> None:
    which = fake_which(tools("ip6tables", "ip6tables-legacy"))
    assert resolve_binaries(IptablesMode.NFT, 6, which=which).mode is IptablesMode.PLAIN
    which = fake_which(tools("ip6tables-legacy"))
    assert resolve_binaries(IptablesMode.NFT, 6, which=which).mode is IptablesMode.LEGACY


def test_incomplete_tool_set_is_skipped() -> None:
    which = fake_which({"iptables-nft", "iptables-nft-save"} | tools("iptables"))
    assert resolve_binaries(IptablesMode.NFT, 4, which=which).mode is IptablesMode.PLAIN


def test_no_tools_is_a_clear_error() -> None:
    with pytest.raises(FirewallError, match=r"no IPv6 iptables tools found on PATH \(tried"):
        resolve_binaries(IptablesMode.NFT, 6, which=fake_which(set()))


def test_missing_binary_reports_the_command() -> None:
    fw = Firewall(Binaries(IptablesMode.NFT, 4, "x", "/nonexistent/iptables-save", "y"))
    with pytest.raises(FirewallError, match=r"not found.*/nonexistent/iptables-save -t nat"):
        fw.save()


def test_failing_tool_reports_status_and_stderr(tmp_path: Path) -> None:
    tool = tmp_path / "iptables-fake-restore"
    tool.write_text("#!/bin/sh\ncat >/dev/null\necho 'line 3 failed' >&2\nexit 1\n")
    tool.chmod(0o755)
    fw = Firewall(Binaries(IptablesMode.NFT, 4, "x", "y", str(tool)), wait=True)
    with pytest.raises(FirewallError) as info:
        fw.restore("*nat\nCOMMIT\n")
    assert "exited with status 1" in str(info.value)
    assert "--noflush -w" in str(info.value)
    assert info.value.stderr.strip() == "line 3 failed"


def test_restore_feeds_payload_on_stdin(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    tool = tmp_path / "iptables-fake-restore"
    tool.write_text(f'#!/bin/sh\necho "$@" > {seen}\ncat >> {seen}\n')
    tool.chmod(0o755)
    Firewall(Binaries(IptablesMode.NFT, 4, "x", "y", str(tool))).restore("*nat\nCOMMIT\n")
    assert seen.read_text() == "--noflush\n*nat\nCOMMIT\n"


def test_close_wait_sysctl_written_and_errors_reported(tmp_path: Path) -> None:
    path = tmp_path / "nf_conntrack_tcp_timeout_close_wait"
    set_close_wait_timeout(3600, str(path))
    assert path.read_text() == "3600\n"
    with pytest.raises(FirewallError, match=r"cannot set .*missing/x to 5"):
        set_close_wait_timeout(5, str(tmp_path / "missing" / "x"))
