"""The change between two endpoint sets, as the adds and removes of a ``Get`` stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gossamer_destination.endpoints import Addr, Endpoint


@dataclass(frozen=True, slots=True)
class EndpointDiff:
    """Endpoints to (re-)announce, and addresses to withdraw.

    An endpoint whose metadata changed (a pod became meshed, its labels moved) is announced
    again: an ``add`` for a known address replaces what the proxy held for it.
    """

    added: tuple[Endpoint, ...]
    removed: tuple[Addr, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def diff_endpoints(old: Mapping[Addr, Endpoint], new: Mapping[Addr, Endpoint]) -> EndpointDiff:
    added = tuple(e for a, e in new.items() if (o := old.get(a)) is not e and o != e)
    removed = tuple(a for a in old if a not in new)
    return EndpointDiff(added, removed)
