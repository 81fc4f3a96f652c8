"""Flag parsing and validation: Linkerd's syntax is accepted, bad values get a clear error."""

from __future__ import annotations

import ipaddress

import pytest
from gossamer_proxy_init.config import (
    IptablesMode,
    LogFormat,
    PortRange,
    ProxyInitConfig,
    Subnet,
    parse_args,
)
from gossamer_proxy_init.errors import ConfigError

BASE = ["--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140"]

# What Linkerd's injector passes by default (linkerd-wire.md §4.3).
LINKERD_DEFAULT_ARGS = [
    "--firewall-bin-path", "iptables-nft", "--firewall-save-bin-path", "iptables-nft-save",
    "--ipv6=false", "--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140",
    "--proxy-uid", "2102", "--inbound-ports-to-ignore", "4190,4191,4567,4568",
    "--outbound-ports-to-ignore", "4567,4568",
]  # fmt: skip


def test_linkerd_injector_default_args() -> None:
    config = parse_args(LINKERD_DEFAULT_ARGS)
    assert config.iptables_mode is IptablesMode.NFT
    assert config.ipv6 is False
    assert config.families == (4,)
    assert (config.incoming_proxy_port, config.outgoing_proxy_port) == (4143, 4140)
    assert config.proxy_uid == 2102
    assert config.proxy_gid == -1
    assert [p.multiport_token for p in config.inbound_ports_to_ignore] == [
        "4190",
        "4191",
        "4567",
        "4568",
    ]
    assert [p.multiport_token for p in config.outbound_ports_to_ignore] == ["4567", "4568"]
    assert any("deprecated" in note for note in config.notes)


def test_defaults() -> None:
    config = parse_args(BASE)
    assert config == ProxyInitConfig(incoming_proxy_port=4143, outgoing_proxy_port=4140)
    assert config.ipv6 is True  # Linkerd's binary default; the chart passes --ipv6=false
    assert config.iptables_mode is IptablesMode.LEGACY
    assert config.log_format is LogFormat.PLAIN
    assert not config.simulate
    assert not config.cleanup


def test_short_flags_and_repeated_lists() -> None:
    config = parse_args(
        [
            *["-p", "4143", "-o", "4140", "-u", "2102", "-g", "2103"],
            *["-r", "80,8080", "-r", "9090"],
            *["--inbound-ports-to-ignore", "4190", "--inbound-ports-to-ignore", " 5000-5010 ,4191"],
            *["--subnets-to-ignore", "10.0.0.0/8", "--subnets-to-ignore", "fd00::/8", "-w"],
        ]
    )
    assert config.proxy_gid == 2103
    assert config.ports_to_redirect == (80, 8080, 9090)
    assert config.inbound_ports_to_ignore == (
        PortRange(4190, 4190),
        PortRange(5000, 5010),
        PortRange(4191, 4191),
    )
    assert [s.network for s in config.subnets_to_ignore] == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    ]
    assert config.use_wait_flag is True


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("--ipv6", True), ("--ipv6=true", True), ("--ipv6=false", False), ("--ipv6=0", False)],
)
def test_bool_flag_syntax(flag: str, expected: bool) -> None:
    assert parse_args([*BASE, flag]).ipv6 is expected


@pytest.mark.parametrize("mode", ["legacy", "nft", "plain"])
def test_iptables_modes(mode: str) -> None:
    assert parse_args([*BASE, "--iptables-mode", mode]).iptables_mode == IptablesMode(mode)


@pytest.mark.parametrize(
    ("bin_path", "mode"),
    [
        ("iptables-legacy", IptablesMode.LEGACY),
        ("iptables-nft", IptablesMode.NFT),
        ("/sbin/iptables", IptablesMode.PLAIN),
    ],
)
def test_firewall_bin_path_selects_mode(bin_path: str, mode: IptablesMode) -> None:
    assert parse_args([*BASE, "--firewall-bin-path", bin_path]).iptables_mode is mode


def test_cleanup_needs_no_ports() -> None:
    config = parse_args(["--cleanup"])
    assert config.cleanup is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--outgoing-proxy-port", "4140"], "--incoming-proxy-port is required"),
        (["-p", "70000", "-o", "4140"], "--incoming-proxy-port must be a valid TCP port"),
        (["-p", "4143", "-o", "0"], "--outgoing-proxy-port must be a valid TCP port"),
        (["-p", "x", "-o", "4140"], "'x' is not an integer"),
        ([*BASE, "--inbound-ports-to-ignore", "4190,65536"], "must be a valid TCP port"),
        ([*BASE, "--outbound-ports-to-ignore", "abc"], "'abc' is not a port or a port range"),
        ([*BASE, "--outbound-ports-to-ignore", "20-10"], "bounds reversed"),
        ([*BASE, "--outbound-ports-to-ignore", "1-2-3"], "is not a port or a port range"),
        ([*BASE, "--ports-to-redirect", "8080,99999"], "--ports-to-redirect must be a valid"),
        ([*BASE, "--subnets-to-ignore", "10.0.0.0/33"], "'10.0.0.0/33' is not a valid CIDR"),
        ([*BASE, "--subnets-to-ignore", "10.0.0.300/8"], "is not a valid CIDR"),
        ([*BASE, "--subnets-to-ignore", "10.0.0.1"], "needs a prefix length"),
        ([*BASE, "--iptables-mode", "ebpf"], "--iptables-mode must be one of legacy, nft, plain"),
        ([*BASE, "--firewall-bin-path", "nft"], "--firewall-bin-path must be one of"),
        (
            [*BASE, "--firewall-save-bin-path", "iptables-nft"],
            "must be one of iptables-legacy-save",
        ),
        (
            [*BASE, "--iptables-mode", "legacy", "--firewall-bin-path", "iptables-nft"],
            "conflicts with legacy",
        ),
        ([*BASE, "--proxy-uid", "-5"], "--proxy-uid must be -1 (unset)"),
        ([*BASE, "--proxy-gid", str(2**32)], "--proxy-gid must be -1 (unset)"),
        ([*BASE, "--timeout-close-wait-secs", "-1"], "--timeout-close-wait-secs must be"),
        ([*BASE, "--log-format", "xml"], "--log-format must be plain or json"),
        ([*BASE, "--log-level", "verbose"], "--log-level must be one of"),
        ([*BASE, "--ipv6=maybe"], "'maybe' is not a boolean"),
        ([*BASE, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        ([*BASE, "--ipv"], "unrecognized arguments"),  # no silent prefix matching
    ],
)
def test_invalid_flags_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_args(args)
    assert message in str(info.value)


def test_port_range_parts() -> None:
    assert PortRange.parse("80").multiport_token == "80"
    assert PortRange.parse("80").multiport_slots == 1
    assert PortRange.parse("80-80").multiport_slots == 1
    assert PortRange.parse("80-90").multiport_token == "80:90"
    assert PortRange.parse("80-90").multiport_slots == 2


def test_subnet_keeps_spelling_and_normalizes_network() -> None:
    subnet = Subnet.parse("10.1.2.3/8")
    assert subnet.text == "10.1.2.3/8"
    assert str(subnet.network) == "10.0.0.0/8"
    assert Subnet.parse("FD00::/8").version == 6
