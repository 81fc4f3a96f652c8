"""Regular expressions from configuration, matched in linear time (RE2).

Route matches (HTTPRoute path, header and query regexes; ServiceProfile ``pathRegex``) come
from cluster users and are matched against request data on the proxy's event loop. With a
backtracking engine, one pathological pattern (``(a+)+$``) and one crafted request stall
every connection the proxy serves. RE2 guarantees time linear in the input, and its syntax
is the one the Gateway API and Linkerd (Rust ``regex``) specify for these fields.

Patterns RE2 does not support (backreferences, lookaround, possessive quantifiers) or that
are invalid or too large raise :class:`RegexError` with RE2's reason: the control plane
rejects such a route, and the proxy keeps its previous policy instead of crashing. The
destination controller and the proxy both compile through here, so they accept exactly the
same patterns.

RE2 (with libstdc++) costs about 1.7 MB resident once loaded, so it is imported when the
first pattern is compiled: a sidecar whose routes use no regex never loads it.
"""

from __future__ import annotations

import functools
from typing import Any, AnyStr, Generic

__all__ = ["LinearRegex", "RegexError", "compile_linear"]

#: RE2's memory budget for one compiled pattern (its default); larger patterns are refused.
_MAX_MEM = 8 << 20


class RegexError(ValueError):
    """A pattern RE2 cannot compile: invalid, unsupported (needs backtracking) or too large."""


@functools.cache
def _re2() -> tuple[Any, Any]:
    """The ``re2`` module and the options every pattern is compiled with (loaded once)."""
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False  # errors are raised (and reported by the caller), not printed
    options.max_mem = _MAX_MEM
    return re2, options


class LinearRegex(Generic[AnyStr]):
    """A compiled RE2 pattern over ``str`` or ``bytes``; :meth:`fullmatch` as in :mod:`re`."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: AnyStr) -> None:
        self.pattern: AnyStr = pattern
        re2, options = _re2()
        try:
            self._compiled = re2.compile(pattern, options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise RegexError(f"{reason}") from None

    def fullmatch(self, text: AnyStr) -> object | None:
        """A match object if the whole of ``text`` matches, else ``None``."""
        return self._compiled.fullmatch(text)

    def search(self, text: AnyStr) -> object | None:
        return self._compiled.search(text)

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


def compile_linear(pattern: AnyStr) -> LinearRegex[AnyStr]:
    """Compile ``pattern`` with RE2; raises :class:`RegexError` if RE2 cannot run it."""
    return LinearRegex(pattern)
