"""The nat-table rules proxy-init installs, built as data (pure; no processes, no I/O).

The rule set is Linkerd proxy-init's (see linkerd-wire.md §5.2): two chains,
``PROXY_INIT_REDIRECT`` (inbound, jumped to from ``PREROUTING``) and ``PROXY_INIT_OUTPUT``
(outbound, jumped to from ``OUTPUT``), every rule tagged ``-m comment --comment
proxy-init/<name>``. Rules are written in the exact form ``iptables-save`` prints them, so
an ``iptables-restore`` payload built here reads back byte-for-byte from a dump, which is how
the tests and the idempotency logic compare "what we wanted" with "what is there".

Applying goes through ``iptables-restore --noflush`` in one transaction per family:

* declaring ``:PROXY_INIT_* - [0:0]`` creates the chain, or flushes it if it exists, so a
  second run replaces the rules instead of duplicating them;
* the ``PREROUTING``/``OUTPUT`` jumps are appended only when the dump has none;
* if any line is rejected, the whole transaction is, so a failed run leaves the table as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gossamer_proxy_init.config import PortRange, ProxyInitConfig
from gossamer_proxy_init.savefile import SavedTable

REDIRECT_CHAIN = "PROXY_INIT_REDIRECT"
OUTPUT_CHAIN = "PROXY_INIT_OUTPUT"
OUR_CHAINS = (REDIRECT_CHAIN, OUTPUT_CHAIN)
PREROUTING = "PREROUTING"
OUTPUT = "OUTPUT"
COMMENT_PREFIX = "proxy-init/"
#: xt_multiport holds at most 15 ports per rule; a range takes two of them.
MAX_MULTIPORT_SLOTS = 15


@dataclass(frozen=True)
class Rule:
    """One ``-A`` rule: matches, then proxy-init's comment, then the target (save order)."""

    chain: str
    match: tuple[str, ...]
    target: tuple[str, ...]
    comment: str

    @property
    def full_comment(self) -> str:
        return COMMENT_PREFIX + self.comment

    @property
    def args(self) -> tuple[str, ...]:
        """The rule as an argument list, after ``iptables -t nat -A <chain>``."""
        return (*self.match, "-m", "comment", "--comment", self.full_comment, *self.target)

    @property
    def spec(self) -> str:
        """The rule text after the chain name, exactly as ``iptables-save`` prints it."""
        parts = [*self.match, "-m", "comment", "--comment", f'"{self.full_comment}"', *self.target]
        return " ".join(parts)

    def line(self) -> str:
        return f"-A {self.chain} {self.spec}"


@dataclass(frozen=True)
class RuleSet:
    """The rules for one IP family: the contents of our two chains, and the two jumps into them."""

    family: int
    chain_rules: tuple[Rule, ...]
    jumps: tuple[Rule, ...]

    def lines(self) -> list[str]:
        return [rule.line() for rule in (*self.chain_rules, *self.jumps)]


def multiport_groups(ports: Iterable[PortRange]) -> Iterator[list[PortRange]]:
    """Split ports into groups that each fit one multiport match, keeping the given order."""
    group: list[PortRange] = []
    used = 0
    for port in ports:
        if group and used + port.multiport_slots > MAX_MULTIPORT_SLOTS:
            yield group
            group, used = [], 0
        group.append(port)
        used += port.multiport_slots
    if group:
        yield group


def _ignore_ports(chain: str, ports: Iterable[PortRange]) -> list[Rule]:
    rules = []
    for group in multiport_groups(ports):
        tokens = ",".join(port.multiport_token for port in group)
        rules.append(
            Rule(
                chain,
                ("-p", "tcp", "-m", "multiport", "--dports", tokens),
                ("-j", "RETURN"),
                f"ignore-port-{tokens}",
            )
        )
    return rules


def inbound_rules(config: ProxyInitConfig, family: int) -> list[Rule]:
    """``PROXY_INIT_REDIRECT``: ignored ports, ignored source subnets, then the redirect."""
    rules = _ignore_ports(REDIRECT_CHAIN, config.inbound_ports_to_ignore)
    for subnet in config.subnets_to_ignore:
        if subnet.version != family:
            continue  # an IPv4 CIDR means nothing to ip6tables, and the reverse
        rules.append(
            Rule(
                REDIRECT_CHAIN,
                ("-s", str(subnet.network)),
                ("-j", "RETURN"),
                f"ignore-subnet-{subnet.text}",
            )
        )
    to_port = ("-j", "REDIRECT", "--to-ports", str(config.incoming_proxy_port))
    if config.ports_to_redirect:
        for port in config.ports_to_redirect:
            rules.append(
                Rule(
                    REDIRECT_CHAIN,
                    ("-p", "tcp", "-m", "tcp", "--dport", str(port)),
                    to_port,
                    f"redirect-port-{port}-to-proxy-port",
                )
            )
    else:
        rules.append(
            Rule(REDIRECT_CHAIN, ("-p", "tcp"), to_port, "redirect-all-incoming-to-proxy-port")
        )
    return rules


def outbound_rules(config: ProxyInitConfig) -> list[Rule]:
    """``PROXY_INIT_OUTPUT``: the proxy's own traffic, loopback, ignored ports, then the redirect.

    The owner rules must come before the loopback rule: the proxy talks to the app over
    loopback and to the world over the pod's interface, and neither may loop back into it.
    """
    rules = []
    if config.proxy_uid > 0:
        rules.append(
            Rule(
                OUTPUT_CHAIN,
                ("-m", "owner", "--uid-owner", str(config.proxy_uid)),
                ("-j", "RETURN"),
                "ignore-proxy-user-id",
            )
        )
    if config.proxy_gid > 0:
        rules.append(
            Rule(
                OUTPUT_CHAIN,
                ("-m", "owner", "--gid-owner", str(config.proxy_gid)),
                ("-j", "RETURN"),
                "ignore-proxy-group-id",
            )
        )
    rules.append(Rule(OUTPUT_CHAIN, ("-o", "lo"), ("-j", "RETURN"), "ignore-loopback"))
    rules += _ignore_ports(OUTPUT_CHAIN, config.outbound_ports_to_ignore)
    rules.append(
        Rule(
            OUTPUT_CHAIN,
            ("-p", "tcp"),
            ("-j", "REDIRECT", "--to-ports", str(config.outgoing_proxy_port)),
            "redirect-all-outgoing-to-proxy-port",
        )
    )
    return rules


PREROUTING_JUMP = Rule(PREROUTING, (), ("-j", REDIRECT_CHAIN), "install-proxy-init-prerouting")
OUTPUT_JUMP = Rule(OUTPUT, (), ("-j", OUTPUT_CHAIN), "install-proxy-init-output")


def build_rules(config: ProxyInitConfig, family: int) -> RuleSet:
    """All of proxy-init's rules for ``family`` (4 or 6)."""
    if family not in (4, 6):
        raise ValueError(f"IP family must be 4 or 6, got {family}")
    return RuleSet(
        family=family,
        chain_rules=(*inbound_rules(config, family), *outbound_rules(config)),
        jumps=(PREROUTING_JUMP, OUTPUT_JUMP),
    )


def _has_jump(table: SavedTable, chain: str, target: str) -> bool:
    return any(rule.target == target for rule in table.rules_in(chain))


def install_payload(rules: RuleSet, existing: SavedTable) -> str:
    """The ``iptables-restore --noflush`` input that brings ``existing`` to ``rules``."""
    lines = ["*nat"]
    lines += [f":{chain} - [0:0]" for chain in OUR_CHAINS]
    lines += [rule.line() for rule in rules.chain_rules]
    for jump in rules.jumps:
        if not _has_jump(existing, jump.chain, jump.target[-1]):
            lines.append(jump.line())
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def cleanup_payload(existing: SavedTable) -> str | None:
    """The ``iptables-restore --noflush`` input that removes every trace of proxy-init.

    Deletes each rule (in any chain) that jumps to one of our chains, then flushes and deletes
    the chains. Returns ``None`` when there is nothing to remove.
    """
    lines = []
    for rule in existing.rules:
        if rule.chain not in OUR_CHAINS and rule.target in OUR_CHAINS:
            lines.append(f"-D {rule.chain} {rule.spec}")
    present = [chain for chain in OUR_CHAINS if chain in existing.chains]
    lines += [f"-F {chain}" for chain in present]
    lines += [f"-X {chain}" for chain in present]
    if not lines:
        return None
    return "\n".join(["*nat", *lines, "COMMIT"]) + "\n"
