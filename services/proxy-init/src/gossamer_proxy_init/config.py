"""Command-line flags of proxy-init, parsed and validated into a frozen ``ProxyInitConfig``.

The flag names, short forms and value syntax are Linkerd's proxy-init's, so that pod specs
written for Linkerd (and our injector, which imitates Linkerd's) work unchanged:

* list flags take comma-separated values and may be repeated (``--inbound-ports-to-ignore
  4190,4191 --inbound-ports-to-ignore 5000-5010``);
* boolean flags take an optional value (``--ipv6``, ``--ipv6=false``, ``--simulate=true``);
* ports are 1-65535 and ranges ``a-b`` are inclusive.

Every value is checked here, before anything touches the firewall, so a refused invocation
changes nothing.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from gossamer_proxy_init.errors import ConfigError

MAX_PORT = 65535
#: uids and gids are unsigned 32-bit; 2**32-1 is the kernel's "no id" marker.
MAX_ID = 2**32 - 2
#: Linkerd's "not set" value for --proxy-uid/--proxy-gid.
UNSET_ID = -1


class IptablesMode(enum.StrEnum):
    """The iptables backend: ``iptables-legacy``, ``iptables-nft`` or plain ``iptables``."""

    LEGACY = "legacy"
    NFT = "nft"
    PLAIN = "plain"


class LogFormat(enum.StrEnum):
    PLAIN = "plain"
    JSON = "json"


#: logrus level names (what Linkerd's proxy-init accepts).
LOG_LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")

#: --firewall-bin-path / --firewall-save-bin-path values and the mode each one selects.
_BIN_PATH_MODES = {
    "iptables-legacy": IptablesMode.LEGACY,
    "iptables-nft": IptablesMode.NFT,
    "iptables": IptablesMode.PLAIN,
}


def _check_port(value: int, what: str) -> None:
    if not 1 <= value <= MAX_PORT:
        raise ConfigError(f"{what} must be a valid TCP port number (1-{MAX_PORT}), got {value}")


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of TCP ports; a single port is a range with ``low == high``."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _check_port(self.low, "port")
        _check_port(self.high, "port")
        if self.low > self.high:
            raise ConfigError(f"port range {self.low}-{self.high} has its bounds reversed")

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """Parse ``"4191"`` or ``"5000-5010"``."""
        low_text, sep, high_text = text.strip().partition("-")
        try:
            low = int(low_text, 10)
            high = int(high_text, 10) if sep else low
        except ValueError:
            raise ConfigError(
                f"{text!r} is not a port or a port range (like 4191 or 5000-5010)"
            ) from None
        return cls(low, high)

    @property
    def multiport_slots(self) -> int:
        """How many of the 15 slots of one ``-m multiport`` match this entry uses."""
        return 1 if self.low == self.high else 2

    @property
    def multiport_token(self) -> str:
        """The entry as ``iptables -m multiport --dports`` spells it."""
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Subnet:
    """A CIDR to exempt from inbound redirection, keeping the operator's spelling for comments."""

    text: str
    network: IPNetwork

    @classmethod
    def parse(cls, text: str) -> Subnet:
        text = text.strip()
        if "/" not in text:
            raise ConfigError(f"{text!r} is not a CIDR: it needs a prefix length, like 10.0.0.0/8")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{text!r} is not a valid CIDR: {exc}") from None
        return cls(text, network)

    @property
    def version(self) -> int:
        return self.network.version


@dataclass(frozen=True)
class ProxyInitConfig:
    """Everything one proxy-init run needs; validated on construction."""

    incoming_proxy_port: int
    outgoing_proxy_port: int
    proxy_uid: int = UNSET_ID
    proxy_gid: int = UNSET_ID
    ports_to_redirect: tuple[int, ...] = ()
    inbound_ports_to_ignore: tuple[PortRange, ...] = ()
    outbound_ports_to_ignore: tuple[PortRange, ...] = ()
    subnets_to_ignore: tuple[Subnet, ...] = ()
    ipv6: bool = True
    iptables_mode: IptablesMode = IptablesMode.LEGACY
    simulate: bool = False
    cleanup: bool = False
    netns: str | None = None
    use_wait_flag: bool = False
    timeout_close_wait_secs: int = 0
    log_format: LogFormat = LogFormat.PLAIN
    log_level: str = "info"
    #: Warnings found while parsing (such as a deprecated flag); logged once logging is set up.
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_port(self.incoming_proxy_port, "--incoming-proxy-port")
        _check_port(self.outgoing_proxy_port, "--outgoing-proxy-port")
        for port in self.ports_to_redirect:
            _check_port(port, "--ports-to-redirect")
        for flag, value in (("--proxy-uid", self.proxy_uid), ("--proxy-gid", self.proxy_gid)):
            if not (value == UNSET_ID or 0 <= value <= MAX_ID):
                raise ConfigError(
                    f"{flag} must be -1 (unset) or between 0 and {MAX_ID}, got {value}"
                )
        if self.timeout_close_wait_secs < 0:
            raise ConfigError(
                f"--timeout-close-wait-secs must be 0 (unchanged) or positive, "
                f"got {self.timeout_close_wait_secs}"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions to configure: IPv4 always, IPv6 when ``--ipv6`` is on."""
        return (4, 6) if self.ipv6 else (4,)


# --- command line -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` instead of exiting, so callers own the exit path."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``, which is what ``--ipv6=false`` goes through in Linkerd."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true or false)")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _split(values: Iterable[str]) -> list[str]:
    """Flatten repeated, comma-separated list flags, dropping empty items (``--x ""`` = none)."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _port_ranges(values: Iterable[str], flag: str) -> tuple[PortRange, ...]:
    ranges = []
    for item in _split(values):
        try:
            ranges.append(PortRange.parse(item))
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    return tuple(ranges)


def _subnets(values: Iterable[str]) -> tuple[Subnet, ...]:
    subnets = []
    for item in _split(values):
        try:
            subnets.append(Subnet.parse(item))
        except ConfigError as exc:
            raise ConfigError(f"--subnets-to-ignore: {exc}") from None
    return tuple(subnets)


def _ports(values: Iterable[str], flag: str) -> tuple[int, ...]:
    ports = []
    for item in _split(values):
        try:
            port = int(item, 10)
        except ValueError:
            raise ConfigError(f"{flag}: {item!r} is not a port number") from None
        _check_port(port, flag)
        ports.append(port)
    return tuple(ports)


def _bin_path_mode(value: str, flag: str, suffix: str) -> IptablesMode:
    name = value.rsplit("/", 1)[-1]
    base = name.removesuffix(suffix) if suffix else name
    if (suffix and base == name) or base not in _BIN_PATH_MODES:
        accepted = ", ".join(f"{n}{suffix}" for n in _BIN_PATH_MODES)
        raise ConfigError(f"{flag} must be one of {accepted}, got {value!r}")
    return _BIN_PATH_MODES[base]


def _resolve_mode(
    mode: str | None, bin_path: str | None, save_bin_path: str | None
) -> tuple[IptablesMode, list[str]]:
    """Combine ``--iptables-mode`` with Linkerd's older ``--firewall-*-bin-path`` flags."""
    notes: list[str] = []
    chosen: IptablesMode | None = None
    if mode is not None:
        try:
            chosen = IptablesMode(mode)
        except ValueError:
            raise ConfigError(
                f"--iptables-mode must be one of {', '.join(m.value for m in IptablesMode)}, "
                f"got {mode!r}"
            ) from None
    implied: list[tuple[str, IptablesMode]] = []
    if bin_path:
        implied.append(("--firewall-bin-path", _bin_path_mode(bin_path, "--firewall-bin-path", "")))
    if save_bin_path:
        implied.append(
            (
                "--firewall-save-bin-path",
                _bin_path_mode(save_bin_path, "--firewall-save-bin-path", "-save"),
            )
        )
    for flag, implied_mode in implied:
        if chosen is None:
            chosen = implied_mode
            notes.append(f"{flag} is deprecated; it selects --iptables-mode={implied_mode}")
        elif implied_mode != chosen:
            raise ConfigError(
                f"{flag} selects iptables mode {implied_mode!s}, which conflicts with {chosen!s}"
            )
    return chosen or IptablesMode.LEGACY, notes


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gossamer-proxy-init",
        description=(
            "Install the nat-table rules that send a pod's TCP traffic through the Gossamer "
            "(Linkerd-compatible) proxy."
        ),
        allow_abbrev=False,
    )
    add = parser.add_argument
    add(
        "-p",
        "--incoming-proxy-port",
        type=_parse_int,
        help="port the proxy listens on for inbound traffic (4143)",
    )
    add(
        "-o",
        "--outgoing-proxy-port",
        type=_parse_int,
        help="port the proxy listens on for outbound traffic (4140)",
    )
    add(
        "-u",
        "--proxy-uid",
        type=_parse_int,
        default=UNSET_ID,
        help="uid the proxy runs as; its traffic is not redirected",
    )
    add(
        "-g",
        "--proxy-gid",
        type=_parse_int,
        default=UNSET_ID,
        help="gid the proxy runs as; its traffic is not redirected",
    )
    add(
        "-r",
        "--ports-to-redirect",
        action="append",
        default=[],
        help="inbound ports to redirect (default: all)",
    )
    add(
        "--inbound-ports-to-ignore",
        action="append",
        default=[],
        help="inbound ports or ranges (a-b) not redirected",
    )
    add(
        "--outbound-ports-to-ignore",
        action="append",
        default=[],
        help="outbound ports or ranges (a-b) not redirected",
    )
    add(
        "--subnets-to-ignore",
        action="append",
        default=[],
        help="source CIDRs whose inbound traffic is not redirected",
    )
    add(
        "--ipv6",
        type=parse_bool,
        nargs="?",
        const=True,
        default=True,
        help="also configure ip6tables (default true)",
    )
    add("--iptables-mode", default=None, help="legacy, nft or plain (default legacy)")
    add(
        "--firewall-bin-path",
        default=None,
        help="deprecated: iptables-legacy, iptables-nft or iptables",
    )
    add("--firewall-save-bin-path", default=None, help="deprecated: the matching *-save binary")
    add(
        "--simulate",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="print the rules instead of applying them",
    )
    add(
        "--cleanup",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="remove proxy-init's chains and jump rules",
    )
    add(
        "--netns",
        default=None,
        help="path of the network namespace to configure (default: the current one)",
    )
    add(
        "-w",
        "--use-wait-flag",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="pass -w (wait for the xtables lock)",
    )
    add(
        "--timeout-close-wait-secs",
        type=_parse_int,
        default=0,
        help="set nf_conntrack_tcp_timeout_close_wait (0: leave)",
    )
    add("--log-format", default="plain", help="plain or json")
    add("--log-level", default="info", help="panic, fatal, error, warn, info, debug or trace")
    return parser


def parse_args(argv: Sequence[str]) -> ProxyInitConfig:
    """Parse and validate proxy-init's arguments; raise ``ConfigError`` with a clear message."""
    ns = build_parser().parse_args(list(argv))
    mode, notes = _resolve_mode(ns.iptables_mode, ns.firewall_bin_path, ns.firewall_save_bin_path)
    try:
        log_format = LogFormat(ns.log_format)
    except ValueError:
        raise ConfigError(f"--log-format must be plain or json, got {ns.log_format!r}") from None
    if ns.cleanup:
        # Cleanup needs no ports; give the dataclass valid placeholders unless they were passed.
        incoming = ns.incoming_proxy_port if ns.incoming_proxy_port is not None else 4143
        outgoing = ns.outgoing_proxy_port if ns.outgoing_proxy_port is not None else 4140
    else:
        for flag, value in (
            ("--incoming-proxy-port", ns.incoming_proxy_port),
            ("--outgoing-proxy-port", ns.outgoing_proxy_port),
        ):
            if value is None:
                raise ConfigError(f"{flag} is required")
        incoming, outgoing = ns.incoming_proxy_port, ns.outgoing_proxy_port
    return ProxyInitConfig(
        incoming_proxy_port=incoming,
        outgoing_proxy_port=outgoing,
        proxy_uid=ns.proxy_uid,
        proxy_gid=ns.proxy_gid,
        ports_to_redirect=_ports(ns.ports_to_redirect, "--ports-to-redirect"),
        inbound_ports_to_ignore=_port_ranges(
            ns.inbound_ports_to_ignore, "--inbound-ports-to-ignore"
        ),
        outbound_ports_to_ignore=_port_ranges(
            ns.outbound_ports_to_ignore, "--outbound-ports-to-ignore"
        ),
        subnets_to_ignore=_subnets(ns.subnets_to_ignore),
        ipv6=ns.ipv6,
        iptables_mode=mode,
        simulate=ns.simulate,
        cleanup=ns.cleanup,
        netns=ns.netns,
        use_wait_flag=ns.use_wait_flag,
        timeout_close_wait_secs=ns.timeout_close_wait_secs,
        log_format=log_format,
        log_level=ns.log_level,
        notes=tuple(notes),
    )
