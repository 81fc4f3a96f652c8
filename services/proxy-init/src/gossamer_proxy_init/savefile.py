"""Reading ``iptables-save`` output.

proxy-init decides what to change from what is already there (so that a second run flushes
instead of duplicating, and cleanup deletes exactly the rules that exist), and tests compare
two dumps while ignoring the parts that change by themselves (timestamps, counters). Both
need the dump as data rather than text; this module is that parser. It is pure.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass, field

from gossamer_proxy_init.errors import FirewallError

_COUNTERS = re.compile(r"\s*\[\d+:\d+\]$")


@dataclass(frozen=True)
class SavedRule:
    """One ``-A CHAIN ...`` line; ``spec`` is the text after the chain name, as saved."""

    chain: str
    spec: str

    @property
    def tokens(self) -> list[str]:
        return shlex.split(self.spec)

    @property
    def target(self) -> str | None:
        """The ``-j`` target of the rule, if any."""
        tokens = self.tokens
        for flag, value in itertools.pairwise(tokens):
            if flag in ("-j", "--jump"):
                return value
        return None

    def line(self) -> str:
        return f"-A {self.chain} {self.spec}"


@dataclass(frozen=True)
class SavedTable:
    """One ``*table ... COMMIT`` block: chains, their policies (``-`` if user-defined), rules."""

    name: str
    chains: dict[str, str] = field(default_factory=dict)
    rules: tuple[SavedRule, ...] = ()

    def rules_in(self, chain: str) -> list[SavedRule]:
        return [rule for rule in self.rules if rule.chain == chain]

    def normalized(self) -> str:
        """The table without counters, for comparing two dumps."""
        lines = [f"*{self.name}"]
        lines += [f":{chain} {policy}" for chain, policy in self.chains.items()]
        lines += [rule.line() for rule in self.rules]
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"


def parse_save(text: str) -> dict[str, SavedTable]:
    """Parse ``iptables-save`` output into its tables, keyed by table name.

    Raises ``FirewallError`` on lines that ``iptables-save`` never writes, because acting on a
    dump we misread could delete or duplicate rules.
    """
    tables: dict[str, SavedTable] = {}
    current: str | None = None
    chains: dict[str, str] = {}
    rules: list[SavedRule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            if current is not None:
                raise FirewallError(
                    f"iptables-save output line {number}: table {line} inside *{current}"
                )
            current, chains, rules = line[1:], {}, []
        elif current is None:
            raise FirewallError(f"iptables-save output line {number}: {line!r} outside a table")
        elif line == "COMMIT":
            tables[current] = SavedTable(current, chains, tuple(rules))
            current = None
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            chains[name] = _COUNTERS.sub("", rest).strip() or "-"
        elif line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            rules.append(SavedRule(chain, spec.strip()))
        else:
            raise FirewallError(f"iptables-save output line {number}: unexpected {line!r}")
    if current is not None:
        raise FirewallError(f"iptables-save output ends inside *{current} (no COMMIT)")
    return tables


def nat_table(text: str) -> SavedTable:
    """The ``nat`` table of a dump, or an empty one if the dump has none (nft before first use)."""
    return parse_save(text).get("nat", SavedTable("nat"))
