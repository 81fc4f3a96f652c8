from __future__ import annotations

from decimal import Decimal

import pytest
from gossamer_inject.errors import ConfigError
from gossamer_inject.values import (
    PortRange,
    format_duration,
    parse_bool,
    parse_cidrs,
    parse_duration,
    parse_int,
    parse_port,
    parse_port_ranges,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("1", Decimal(1)),
        ("1.5", Decimal("1.5")),
        ("64Mi", Decimal(64 * 2**20)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        (".5", Decimal("0.5")),
    ],
)
def test_quantity_parses(text: str, value: Decimal) -> None:
    assert parse_quantity("k", text) == value


@pytest.mark.parametrize("text", ["", "abc", "10 Mi", "10MB", "1.2.3", "-1", " 1", "1Mi "])
def test_bad_quantity_names_the_annotation(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_quantity("config.linkerd.io/proxy-cpu-limit", text)
    assert "config.linkerd.io/proxy-cpu-limit" in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("100ms", Decimal("0.1")), ("10s", 10), ("1m30s", 90), ("2h", 7200), ("1d", 86400)],
)
def test_duration_parses(text: str, seconds: Decimal) -> None:
    assert parse_duration("k", text) == Decimal(seconds)


@pytest.mark.parametrize("text", ["", "10", "ten s", "10x", "s", "1m 30s"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("k", text)


def test_format_duration_is_exact() -> None:
    assert format_duration(Decimal("0.1")) == "100ms"
    assert format_duration(Decimal(90)) == "90s"
    assert format_duration(Decimal("0.0005")) == "0.0005s"


@pytest.mark.parametrize("text", ["0", "65536", "http", "-1", "1.5", ""])
def test_bad_port(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_port("config.linkerd.io/admin-port", text)


def test_port_ranges_resolve_names_and_keep_ranges() -> None:
    ranges = parse_port_ranges("k", "25, grpc,4000-4100,unknown", names={"grpc": 9090})
    assert ranges == (PortRange(25, 25), PortRange(9090, 9090), PortRange(4000, 4100))
    assert 4050 in ranges[2]


@pytest.mark.parametrize("text", ["4100-4000", "80,abc!", "1-99999", "grpc"])
def test_bad_port_ranges(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_port_ranges("k", text)


def test_cidrs() -> None:
    assert parse_cidrs("k", "10.0.0.0/8, fd00::/8") == ("10.0.0.0/8", "fd00::/8")
    with pytest.raises(ConfigError, match="not a CIDR"):
        parse_cidrs("k", "10.1.2.3/8")
    with pytest.raises(ConfigError):
        parse_cidrs("k", "everything")


def test_bool_and_int() -> None:
    assert parse_bool("k", "Enabled") is True
    assert parse_bool("k", "false") is False
    with pytest.raises(ConfigError):
        parse_bool("k", "maybe")
    assert parse_int("k", "5", minimum=1) == 5
    with pytest.raises(ConfigError):
        parse_int("k", "0", minimum=1)
    with pytest.raises(ConfigError):
        parse_int("k", "five")
