"""Shared, observable state of one discovery watch.

Many connections may use one target's watch; each reads :attr:`WatchState.value` (the last
known state, kept across control-plane outages) and may wait for the next change with
:meth:`WatchState.wait_changed`.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["WatchState"]

S = TypeVar("S")


class WatchState(Generic[S]):
    def __init__(self, target: str, initial: S) -> None:
        self.target = target
        self.value = initial
        #: Bumped on every change; pass it to :meth:`wait_changed`.
        self.version = 0
        #: Set when the control plane said this target cannot be served (watch stopped).
        self.final: str | None = None
        #: The last message that could not be applied (the previous state was kept).
        self.last_error: str | None = None
        self._event = asyncio.Event()

    def set(self, value: S) -> None:
        self.value = value
        self.changed()

    def changed(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait_changed(self, after: int) -> int:
        """Wait until :attr:`version` exceeds ``after``; returns the new version."""
        while self.version <= after:
            await self._event.wait()
        return self.version
