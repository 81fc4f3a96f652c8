"""Reference counting with idle expiry for discovery watches (sans-io).

Linkerd keeps a discovery watch while anything uses it and drops it once it has been
unused for an idle timeout (outbound discovery 5 s, inbound port policies 90 s;
linkerd-wire.md §4.3, §9). Some keys (the pod's declared inbound ports) are *pinned*:
watched from start-up and never evicted.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["IdleTracker"]

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Entry:
    users: int = 0
    last_used: float = 0.0
    pinned: bool = False


class IdleTracker(Generic[K]):
    def __init__(self, idle_timeout: float) -> None:
        if idle_timeout < 0:
            raise ValueError(f"idle_timeout must not be negative, got {idle_timeout}")
        self.idle_timeout = idle_timeout
        self._entries: dict[K, _Entry] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def pin(self, key: K, now: float) -> None:
        entry = self._entries.setdefault(key, _Entry(last_used=now))
        entry.pinned = True

    def acquire(self, key: K, now: float) -> bool:
        """Count one more user; returns whether the key is new (a watch must be started)."""
        entry = self._entries.get(key)
        created = entry is None
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        entry.last_used = now
        return created

    def release(self, key: K, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.users == 0:
            raise KeyError(f"release of {key!r} without a matching acquire")
        entry.users -= 1
        entry.last_used = now

    def touch(self, key: K, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_used = now

    def expired(self, now: float) -> list[K]:
        """Keys unused for longer than the idle timeout; they are forgotten."""
        gone = [
            key
            for key, e in self._entries.items()
            if not e.pinned and e.users == 0 and now - e.last_used >= self.idle_timeout
        ]
        for key in gone:
            del self._entries[key]
        return gone

    def next_expiry(self) -> float | None:
        """When the earliest unused key will expire (for the evictor's sleep)."""
        times = [
            e.last_used + self.idle_timeout
            for e in self._entries.values()
            if not e.pinned and e.users == 0
        ]
        return min(times) if times else None
