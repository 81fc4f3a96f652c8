"""The command line end to end, without touching a firewall: usage errors and --simulate."""

from __future__ import annotations

import json

import pytest
from gossamer_proxy_init.__main__ import EXIT_USAGE, main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "4143", "-o", "99999"], "--outgoing-proxy-port must be a valid TCP port"),
        (["-p", "4143", "-o", "4140", "--subnets-to-ignore", "10.0.0/8x"], "not a valid CIDR"),
        (["-p", "4143", "-o", "4140", "--iptables-mode", "iptables"], "--iptables-mode must be"),
    ],
)
def test_invalid_flags_exit_2_with_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "nothing was changed" in err


def test_help_lists_linkerd_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--incoming-proxy-port", "--subnets-to-ignore", "--iptables-mode", "--cleanup"):
        assert flag in out


def test_simulate_prints_payload_per_family(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-p", "4143", "-o", "4140", "-u", "2102", "--iptables-mode", "nft", "-w"]
    assert main([*args, "--simulate", "--log-format", "json"]) == 0
    captured = capsys.readouterr()
    assert "# IPv4: iptables-nft-restore --noflush -w\n*nat\n" in captured.out
    assert "# IPv6: ip6tables-nft-restore --noflush -w\n*nat\n" in captured.out
    assert captured.out.count("-j REDIRECT --to-ports 4140") == 2
    events = [json.loads(line) for line in captured.err.splitlines()]
    assert events[0]["event"].startswith("simulate")
    assert events[0]["level"] == "info"


def test_simulate_cleanup_and_sysctl(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cleanup", "--simulate", "--ipv6=false"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert main(["-p", "1", "-o", "2", "--simulate", "--timeout-close-wait-secs", "60"]) == 0
    assert "would write 60 to /proc/sys/net/netfilter/" in capsys.readouterr().out
