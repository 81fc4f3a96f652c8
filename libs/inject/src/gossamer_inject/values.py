"""Parsers for the value syntaxes that appear in override annotations.

Kubernetes resource quantities, Go-style durations, port lists with ranges and CIDR lists are
validated here so that a typo in an annotation is rejected with a clear :class:`ConfigError`
instead of producing a pod the kubelet or the proxy refuses later.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gossamer_inject.errors import ConfigError

_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(key: str, text: str) -> Decimal:
    """Parse a Kubernetes resource quantity (``500m``, ``64Mi``, ``1e3``) into its value."""
    match = _QUANTITY.match(text.strip())
    if match is None or text.strip() != text:
        raise ConfigError(key, text, "not a Kubernetes quantity (e.g. 100m, 1, 64Mi)")
    number = Decimal(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    else:
        value = number * (Decimal(10) ** int(suffix[1:]))
    if value < 0:
        raise ConfigError(key, text, "must not be negative")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_SECONDS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}


def parse_duration(key: str, text: str) -> Decimal:
    """Parse a Go-style duration (``100ms``, ``1m30s``, ``2h``) into seconds.

    The proxy accepts the same suffixes plus ``d``; a bare number is refused because the
    proxy would refuse it too.
    """
    if not text:
        raise ConfigError(key, text, "empty duration")
    pos = 0
    total = Decimal(0)
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ConfigError(key, text, "not a duration (e.g. 100ms, 10s, 1m30s)")
        try:
            total += Decimal(match[1]) * _DURATION_SECONDS[match[2]]
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
            raise ConfigError(key, text, "not a duration") from exc
        pos = match.end()
    return total


def format_duration(seconds: Decimal) -> str:
    """Render seconds as the shortest exact ``ms``/``s`` duration the proxy understands."""
    millis = seconds * 1000
    if millis == millis.to_integral_value():
        if millis % 1000 == 0:
            return f"{int(millis // 1000)}s"
        return f"{int(millis)}ms"
    return f"{seconds.normalize():f}s"


def parse_port(key: str, text: str) -> int:
    """Parse one TCP port number (1-65535)."""
    stripped = text.strip()
    if not stripped.isdigit():
        raise ConfigError(key, text, "not a port number")
    port = int(stripped)
    if not 0 < port <= 65535:
        raise ConfigError(key, text, "port out of range 1-65535")
    return port


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive port range; a single port has ``low == high``."""

    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_port_ranges(
    key: str, text: str, *, names: dict[str, int] | None = None
) -> tuple[PortRange, ...]:
    """Parse ``"25,587,4000-4100"``; with ``names``, named container ports resolve to numbers."""
    ranges: list[PortRange] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "-" in item:
            low_text, _, high_text = item.partition("-")
            low, high = parse_port(key, low_text), parse_port(key, high_text)
            if low > high:
                raise ConfigError(key, text, f"range {item} runs backwards")
            ranges.append(PortRange(low, high))
        elif item.isdigit():
            port = parse_port(key, item)
            ranges.append(PortRange(port, port))
        elif names is not None and item in names:
            ranges.append(PortRange(names[item], names[item]))
        elif names is not None and _is_port_name(item):
            # A named port the pod does not declare matches nothing; Linkerd ignores it too.
            continue
        else:
            raise ConfigError(key, text, f"{item!r} is not a port or port range")
    return tuple(ranges)


_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


def _is_port_name(text: str) -> bool:
    return bool(_PORT_NAME.match(text)) and any(c.isalpha() for c in text)


def format_port_ranges(ranges: tuple[PortRange, ...]) -> str:
    return ",".join(str(r) for r in ranges)


def parse_cidrs(key: str, text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of CIDRs, normalised (``10.1.2.3/8`` is refused)."""
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError as exc:
            raise ConfigError(key, text, f"{item!r} is not a CIDR: {exc}") from exc
    return tuple(out)


_TRUE = frozenset({"true", "enabled", "1", "yes"})
_FALSE = frozenset({"false", "disabled", "0", "no"})


def parse_bool(key: str, text: str) -> bool:
    """Parse ``true``/``false``; ``enabled``/``disabled`` too, since Linkerd uses both."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(key, text, "expected true or false (or enabled/disabled)")


def parse_int(key: str, text: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    stripped = text.strip()
    if not (stripped.isdigit() or (stripped.startswith("-") and stripped[1:].isdigit())):
        raise ConfigError(key, text, "not an integer")
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise ConfigError(key, text, f"must be between {minimum} and {maximum}")
    return value
