"""Quiet-connection verdicts (idle keep-alive, slowloris heads, stalled bodies)."""

from __future__ import annotations

from gossamer_proxy.config import Http1Limits
from gossamer_proxy.timeouts import Phase, Verdict, verdict

LIMITS = Http1Limits(head_timeout=10.0, idle_timeout=90.0, body_stall_timeout=60.0)


def test_idle_keepalive_connection_closes_after_idle_timeout() -> None:
    assert verdict(Phase.IDLE, quiet_for=89.0, head_age=0, limits=LIMITS) is Verdict.KEEP
    assert verdict(Phase.IDLE, quiet_for=90.0, head_age=0, limits=LIMITS) is Verdict.CLOSE_IDLE


def test_slowloris_head_times_out_even_while_trickling() -> None:
    # The client keeps sending a byte a second (never quiet) but the head is 10s old.
    assert verdict(Phase.HEAD, quiet_for=0.0, head_age=9.9, limits=LIMITS) is Verdict.KEEP
    assert verdict(Phase.HEAD, quiet_for=0.0, head_age=10.0, limits=LIMITS) is Verdict.HEAD_TIMEOUT


def test_stalled_body_aborts() -> None:
    assert verdict(Phase.BODY, quiet_for=59.0, head_age=100, limits=LIMITS) is Verdict.KEEP
    assert verdict(Phase.BODY, quiet_for=60.0, head_age=100, limits=LIMITS) is Verdict.BODY_STALLED


def test_waiting_for_upstream_is_not_the_clients_fault() -> None:
    assert verdict(Phase.WAITING, quiet_for=1e6, head_age=1e6, limits=LIMITS) is Verdict.KEEP
