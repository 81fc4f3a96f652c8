"""One proxy-init run: install (or clean up, or simulate) for each IP family.

Order of work, chosen so that a failure changes as little as possible:

1. resolve the binaries of every family first, so a missing ``ip6tables`` is reported before
   IPv4 is touched;
2. per family: dump ``nat`` (logged), compute the payload from the dump, apply it in one
   ``iptables-restore --noflush`` transaction, dump again (logged);
3. the close-wait sysctl, last, as Linkerd does.

``--simulate`` touches nothing: it prints, per family, the payload that would be applied to an
empty table and the command that would receive it.
"""

from __future__ import annotations

import sys
from typing import TextIO

import structlog
from gossamer_common.netns import enter_netns

from gossamer_proxy_init.config import ProxyInitConfig
from gossamer_proxy_init.firewall import (
    CLOSE_WAIT_SYSCTL,
    Binaries,
    Firewall,
    resolve_binaries,
    set_close_wait_timeout,
)
from gossamer_proxy_init.rules import build_rules, cleanup_payload, install_payload
from gossamer_proxy_init.savefile import SavedTable, nat_table


def simulate(config: ProxyInitConfig, out: TextIO) -> None:
    """Print what a run would apply to a namespace whose nat table is empty."""
    for family in config.families:
        fw = Firewall(Binaries.named(config.iptables_mode, family), wait=config.use_wait_flag)
        out.write(f"# IPv{family}: {' '.join(fw.restore_argv())}\n")
        if config.cleanup:
            out.write("# (nothing to remove from an empty table)\n")
        else:
            out.write(install_payload(build_rules(config, family), SavedTable("nat")))
    if config.timeout_close_wait_secs > 0 and not config.cleanup:
        out.write(f"# would write {config.timeout_close_wait_secs} to {CLOSE_WAIT_SYSCTL}\n")


def run(
    config: ProxyInitConfig,
    log: structlog.typing.FilteringBoundLogger,
    out: TextIO | None = None,
) -> None:
    """Carry out ``config``; raises ``FirewallError`` (or ``NetnsError``) on failure."""
    for note in config.notes:
        log.warning(note)
    if config.simulate:
        log.info("simulate: printing rules instead of applying them")
        simulate(config, out or sys.stdout)
        return
    if config.netns:
        enter_netns(config.netns)
        log.info("entered network namespace", netns=config.netns)
    firewalls = [
        Firewall(resolve_binaries(config.iptables_mode, family), wait=config.use_wait_flag)
        for family in config.families
    ]
    for fw in firewalls:
        binaries = fw.binaries
        if binaries.mode is not config.iptables_mode:
            log.warning(
                "requested iptables mode not installed; falling back",
                requested=str(config.iptables_mode),
                using=str(binaries.mode),
                family=binaries.family,
            )
        before = fw.save()
        log.info("current nat table", command=" ".join(fw.save_argv()), output=before)
        existing = nat_table(before)
        if config.cleanup:
            payload = cleanup_payload(existing)
            if payload is None:
                log.info("no proxy-init rules to remove", family=binaries.family)
                continue
        else:
            payload = install_payload(build_rules(config, binaries.family), existing)
        log.info("applying", command=" ".join(fw.restore_argv()), payload=payload)
        fw.restore(payload)
        after = fw.save()
        log.info("resulting nat table", command=" ".join(fw.save_argv()), output=after)
    if config.timeout_close_wait_secs > 0 and not config.cleanup:
        set_close_wait_timeout(config.timeout_close_wait_secs)
        log.info("set close-wait timeout", seconds=config.timeout_close_wait_secs)
