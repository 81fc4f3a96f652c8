"""When to give up on a quiet client connection (sans-io).

Connections are not timed per read: a one-second housekeeping tick asks each connection how
long it has been quiet and in which phase it is, and this function answers. That keeps the
hot path free of timer churn while still bounding idle keep-alive clients, clients that trickle
a request head (slowloris) and uploads that stop making progress.
"""

from __future__ import annotations

import enum

from .config import Http1Limits

__all__ = ["Phase", "Verdict", "verdict"]


class Phase(enum.Enum):
    IDLE = "idle"  # between requests on a keep-alive connection
    HEAD = "head"  # part of a request head has arrived
    BODY = "body"  # a request is in flight and its body is still arriving
    WAITING = "waiting"  # the whole request is in; the upstream owns the clock


class Verdict(enum.Enum):
    KEEP = "keep"
    CLOSE_IDLE = "close-idle"
    HEAD_TIMEOUT = "head-timeout"  # answer 408 and close
    BODY_STALLED = "body-stalled"  # abort the exchange


def verdict(phase: Phase, *, quiet_for: float, head_age: float, limits: Http1Limits) -> Verdict:
    """Decide from the phase, the seconds since the client last sent anything and the age of
    the pending request head."""
    if phase is Phase.IDLE:
        return Verdict.CLOSE_IDLE if quiet_for >= limits.idle_timeout else Verdict.KEEP
    if phase is Phase.HEAD:
        return Verdict.HEAD_TIMEOUT if head_age >= limits.head_timeout else Verdict.KEEP
    if phase is Phase.BODY:
        return Verdict.BODY_STALLED if quiet_for >= limits.body_stall_timeout else Verdict.KEEP
    return Verdict.KEEP
