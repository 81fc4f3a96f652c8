"""The budget of one tap call (pure): at most N events, until a deadline.

The merged stream asks :meth:`Budget.admit` before passing each event on, with the time as
a parameter; the first refusal names why the call ends.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Budget"]

EVENTS = "max-events"
TIME = "time-limit"


@dataclass
class Budget:
    max_events: int
    deadline: float
    sent: int = 0

    @classmethod
    def starting(cls, now: float, *, seconds: float, max_events: int) -> Budget:
        if max_events < 1 or seconds <= 0:
            raise ValueError("a tap needs room for one event and some time")
        return cls(max_events, now + seconds)

    def remaining(self, now: float) -> float:
        return max(self.deadline - now, 0.0)

    def exhausted(self, now: float) -> str | None:
        """Why the call is over (``max-events`` or ``time-limit``), or None."""
        if self.sent >= self.max_events:
            return EVENTS
        if now >= self.deadline:
            return TIME
        return None

    def admit(self, now: float) -> bool:
        """Count one more event if the budget has room for it."""
        if self.exhausted(now) is not None:
            return False
        self.sent += 1
        return True
