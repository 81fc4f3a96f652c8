"""The pure rule builder: golden payloads, multiport splitting, idempotency and cleanup logic.

Golden files live in tests/golden/. After an intended change, regenerate them with
``GOSSAMER_UPDATE_GOLDEN=1 uv run --frozen pytest services/proxy-init/tests -k golden`` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gossamer_proxy_init.config import PortRange, parse_args
from gossamer_proxy_init.rules import (
    MAX_MULTIPORT_SLOTS,
    build_rules,
    cleanup_payload,
    install_payload,
    multiport_groups,
)
from gossamer_proxy_init.savefile import SavedTable, nat_table

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GOSSAMER_UPDATE_GOLDEN") == "1"
EMPTY = SavedTable("nat")

CASES = {
    # linkerd-wire.md §4.3: what the injector passes by default.
    "linkerd-default": (
        "--firewall-bin-path iptables-nft --firewall-save-bin-path iptables-nft-save --ipv6=false "
        "--incoming-proxy-port 4143 --outgoing-proxy-port 4140 --proxy-uid 2102 "
        "--inbound-ports-to-ignore 4190,4191,4567,4568 --outbound-ports-to-ignore 4567,4568"
    ),
    "full": (
        "-p 4143 -o 4140 -u 2102 -g 2102 --inbound-ports-to-ignore 4190,4191,5000-5010 "
        "--outbound-ports-to-ignore 443,6443,30000-32767 "
        "--subnets-to-ignore 10.0.0.1/8,192.168.0.0/16,fd00::/8"
    ),
    "ports-to-redirect": "-p 4143 -o 4140 -u 2102 -r 8080,9090 --ipv6=false",
    "many-ports": (
        "-p 4143 -o 4140 -u 2102 --ipv6=false --inbound-ports-to-ignore "
        + ",".join(str(p) for p in range(1000, 1014))
        + ",2000-2010,3000"
    ),
    "no-proxy-user": "-p 4143 -o 4140 --ipv6=false",
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with GOSSAMER_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_install_payload(case: str) -> None:
    config = parse_args(CASES[case].split())
    for family in config.families:
        payload = install_payload(build_rules(config, family), EMPTY)
        check_golden(f"{case}.ipv{family}.rules", payload)


def test_multiport_groups_respect_slot_limit() -> None:
    ports = [PortRange(p, p) for p in range(1, 14)] + [PortRange(100, 200), PortRange(300, 300)]
    groups = list(multiport_groups(ports))
    assert [sum(p.multiport_slots for p in g) for g in groups] == [15, 1]
    assert all(sum(p.multiport_slots for p in g) <= MAX_MULTIPORT_SLOTS for g in groups)
    assert [p for g in groups for p in g] == ports  # order kept, nothing lost


def test_uid_rule_precedes_loopback_rule() -> None:
    rules = build_rules(parse_args(["-p", "4143", "-o", "4140", "-u", "2102", "-g", "2102"]), 4)
    comments = [r.comment for r in rules.chain_rules if r.chain == "PROXY_INIT_OUTPUT"]
    assert comments.index("ignore-proxy-user-id") < comments.index("ignore-loopback")
    assert comments.index("ignore-proxy-group-id") < comments.index("ignore-loopback")
    assert comments[-1] == "redirect-all-outgoing-to-proxy-port"


def test_subnets_only_on_inbound_chain_and_per_family() -> None:
    config = parse_args(["-p", "4143", "-o", "4140", "--subnets-to-ignore", "10.0.0.0/8,fd00::/8"])
    v4, v6 = build_rules(config, 4), build_rules(config, 6)
    v4_subnets = [r for r in v4.chain_rules if r.comment.startswith("ignore-subnet")]
    v6_subnets = [r for r in v6.chain_rules if r.comment.startswith("ignore-subnet")]
    assert [(r.chain, r.match) for r in v4_subnets] == [
        ("PROXY_INIT_REDIRECT", ("-s", "10.0.0.0/8"))
    ]
    assert [(r.chain, r.match) for r in v6_subnets] == [("PROXY_INIT_REDIRECT", ("-s", "fd00::/8"))]


def test_second_run_flushes_chains_and_skips_existing_jumps() -> None:
    config = parse_args(CASES["full"].split())
    rules = build_rules(config, 4)
    first = install_payload(rules, EMPTY)
    # What iptables-save shows after the first run (our lines are in save form already).
    dump = "*nat\n:PREROUTING ACCEPT [3:180]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    dump += ":POSTROUTING ACCEPT [0:0]\n:PROXY_INIT_OUTPUT - [0:0]\n:PROXY_INIT_REDIRECT - [0:0]\n"
    dump += "\n".join(rules.lines()) + "\nCOMMIT\n"
    second = install_payload(rules, nat_table(dump))
    assert "-A PREROUTING" in first
    assert "-A OUTPUT" in first
    assert "-A PREROUTING" not in second
    assert "-A OUTPUT " not in second
    # Chain declarations are what flush them under --noflush.
    assert ":PROXY_INIT_REDIRECT - [0:0]" in second
    assert ":PROXY_INIT_OUTPUT - [0:0]" in second
    assert second.count("-A PROXY_INIT_") == len(rules.chain_rules)


def test_cleanup_payload_removes_every_jump_and_both_chains() -> None:
    dump = (GOLDEN / "installed-twice-by-hand.save").read_text()
    payload = cleanup_payload(nat_table(dump))
    assert payload is not None
    check_golden("cleanup.rules", payload)


def test_cleanup_payload_is_none_when_nothing_installed() -> None:
    dump = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    dump += "-A OUTPUT -d 10.9.9.9/32 -j ACCEPT\nCOMMIT\n"
    assert cleanup_payload(nat_table(dump)) is None
    assert cleanup_payload(EMPTY) is None


def test_build_rules_rejects_unknown_family() -> None:
    with pytest.raises(ValueError, match="IP family must be 4 or 6"):
        build_rules(parse_args(["-p", "4143", "-o", "4140"]), 5)
