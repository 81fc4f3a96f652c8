"""Log filters in Linkerd's directive syntax (tracing-subscriber's ``EnvFilter``), sans-io.

``LINKERD2_PROXY_LOG`` and ``PUT /proxy-log-level`` take a comma-separated list of
directives, each one of:

- ``LEVEL``: the default for every logger no other directive names (``warn``);
- ``TARGET=LEVEL``: loggers whose target starts with ``TARGET`` (``linkerd=debug``);
- ``TARGET``: the same as ``TARGET=trace``.

Levels are ``off``, ``error``, ``warn``, ``info``, ``debug`` and ``trace`` (any case). As in
``EnvFilter``, a target matches by plain prefix, the longest matching target wins (the later
directive on a tie), and a logger that no directive matches is off unless a bare level is
given. Span and field directives (``target[span{field=value}]=debug``, as in Linkerd's default
``[{headers}]=off``) are accepted and kept, but select nothing: Gossamer's loggers have no
spans.

Linkerd's targets are Rust module paths. Each Gossamer logger has a Linkerd-equivalent
target (:data:`LINKERD_TARGETS`), and a directive matches a logger when it is a prefix of
either that target or the logger's own dotted name:

==============================  =====================================
Gossamer logger                 Linkerd target
==============================  =====================================
``gossamer.proxy``              ``linkerd2_proxy::app``
``gossamer.proxy.outbound``     ``linkerd_app_outbound``
``gossamer.proxy.discovery``    ``linkerd_app_outbound::discover``
``gossamer.proxy.policy``       ``linkerd_app_inbound::policy``
``gossamer.proxy.identity``     ``linkerd_proxy_identity_client``
``gossamer.proxy.<other>``      ``linkerd2_proxy::app::<other>``
``gossamer.admin``              ``linkerd_app_admin``
``gossamer.shutdown``           ``linkerd2_proxy::signal``
``gossamer.<other>``            ``linkerd::<other>``
anything else (``grpclib``, …)  its own name
==============================  =====================================

So ``warn,linkerd=debug`` makes every Gossamer logger debug and third-party loggers warn,
``linkerd_app_outbound=trace`` opens the outbound and discovery loggers, and
``gossamer.proxy.policy=debug`` works as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LEVELS",
    "LINKERD_TARGETS",
    "OFF",
    "TRACE",
    "Directive",
    "LogFilter",
    "LogFilterError",
    "linkerd_target",
]

#: Python has no TRACE; it sits just below DEBUG so that ``trace`` enables everything.
TRACE: Final = 5
#: Above CRITICAL: nothing passes.
OFF: Final = 100
LEVELS: Final[dict[str, int]] = {
    "off": OFF,
    "critical": 50,
    "error": 40,
    "warn": 30,
    "warning": 30,
    "info": 20,
    "debug": 10,
    "trace": TRACE,
}
_LEVEL_NAMES: Final = {
    OFF: "off",
    50: "critical",
    40: "error",
    30: "warn",
    20: "info",
    10: "debug",
    TRACE: "trace",
}

LINKERD_TARGETS: Final[dict[str, str]] = {
    "gossamer.proxy": "linkerd2_proxy::app",
    "gossamer.proxy.outbound": "linkerd_app_outbound",
    "gossamer.proxy.discovery": "linkerd_app_outbound::discover",
    "gossamer.proxy.policy": "linkerd_app_inbound::policy",
    "gossamer.proxy.identity": "linkerd_proxy_identity_client",
    "gossamer.admin": "linkerd_app_admin",
    "gossamer.shutdown": "linkerd2_proxy::signal",
}

_MAX_FILTER_CHARS: Final = 4096
_MAX_DIRECTIVES: Final = 64
_TARGET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:.\-]*\Z")
_SPAN = re.compile(r"\[[A-Za-z0-9_:.\-]*(\{[^{}\[\]]*\})?\]\Z")


class LogFilterError(ValueError):
    """The filter text is not valid; the message says why (it goes back to the client)."""


def linkerd_target(logger_name: str) -> str:
    """The Linkerd target that stands for one of our loggers (see the module table)."""
    known = LINKERD_TARGETS.get(logger_name)
    if known is not None:
        return known
    if logger_name.startswith("gossamer.proxy."):
        rest = logger_name[len("gossamer.proxy.") :]
        return "linkerd2_proxy::app::" + rest.replace(".", "::")
    if logger_name.startswith("gossamer."):
        return "linkerd::" + logger_name[len("gossamer.") :].replace(".", "::")
    return logger_name


@dataclass(frozen=True, slots=True)
class Directive:
    target: str | None  # None: the default for loggers no other directive names
    level: int
    #: ``[span{field}]``: selects events inside such spans (never ours: we have none).
    span: str | None = None

    def __str__(self) -> str:
        level = _LEVEL_NAMES[self.level]
        if self.span is not None:
            return f"{self.target or ''}{self.span}={level}"
        return level if self.target is None else f"{self.target}={level}"


def _parse_level(text: str, directive: str) -> int:
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise LogFilterError(
            f"invalid level {text.strip()!r} in directive {directive!r}; "
            "expected off, error, warn, info, debug or trace"
        )
    return level


def _parse_span_directive(text: str) -> Directive:
    start, end = text.find("["), text.rfind("]")
    target, span, rest = text[:start].strip(), text[start : end + 1], text[end + 1 :].strip()
    if end < start or not _SPAN.match(span):
        raise LogFilterError(f"invalid span filter in directive {text!r}")
    if target and not _TARGET.match(target):
        raise LogFilterError(f"invalid target {target!r} in directive {text!r}")
    if not rest:
        return Directive(target or None, TRACE, span)
    if not rest.startswith("="):
        raise LogFilterError(f"invalid directive {text!r}")
    return Directive(target or None, _parse_level(rest[1:], text), span)


def _split_directives(text: str) -> list[str]:
    """Split at commas outside ``[...]`` (a span filter's fields may hold commas)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(depth - 1, 0)
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_directive(text: str) -> Directive:
    if "[" in text or "]" in text or "{" in text:
        return _parse_span_directive(text)
    target, eq, level_text = text.partition("=")
    target = target.strip()
    if not eq:
        if target.lower() in LEVELS:
            return Directive(None, LEVELS[target.lower()])
        if not _TARGET.match(target):
            raise LogFilterError(f"invalid directive {text!r}")
        return Directive(target, TRACE)  # a bare target means everything from it
    if not target:
        raise LogFilterError(f"directive {text!r} has an empty target")
    if not _TARGET.match(target):
        raise LogFilterError(f"invalid target {target!r} in directive {text!r}")
    return Directive(target, _parse_level(level_text, text))


class LogFilter:
    """A parsed filter; :meth:`level_for` answers the least level a logger lets through."""

    __slots__ = ("_default", "directives")

    def __init__(self, directives: tuple[Directive, ...]) -> None:
        self.directives = directives
        default = OFF
        for d in directives:
            if d.target is None and d.span is None:
                default = d.level  # the last bare level wins, as in EnvFilter
        self._default = default

    @classmethod
    def parse(cls, text: str) -> LogFilter:
        if len(text) > _MAX_FILTER_CHARS:
            raise LogFilterError(f"filter is longer than {_MAX_FILTER_CHARS} characters")
        parts = _split_directives(text)
        if len(parts) > _MAX_DIRECTIVES:
            raise LogFilterError(f"filter has more than {_MAX_DIRECTIVES} directives")
        if not parts:
            raise LogFilterError("filter is empty; expected a level such as warn,linkerd=info")
        return cls(tuple(_parse_directive(p) for p in parts))

    @property
    def default_level(self) -> int:
        return self._default

    @property
    def min_level(self) -> int:
        """The lowest level any logger could let through (what the stdlib root needs)."""
        return min([self._default, *(d.level for d in self.directives if d.span is None)])

    def level_for(self, logger_name: str) -> int:
        """The least level ``logger_name`` lets through (:data:`OFF` when none)."""
        candidates = (logger_name, linkerd_target(logger_name))
        best: Directive | None = None
        for d in self.directives:
            if d.target is None or d.span is not None:
                continue
            if not any(c.startswith(d.target) for c in candidates):
                continue
            if best is None or len(d.target) >= len(best.target or ""):
                best = d
        return self._default if best is None else best.level

    def __str__(self) -> str:
        return ",".join(str(d) for d in self.directives)

    def __repr__(self) -> str:
        return f"LogFilter({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogFilter) and other.directives == self.directives

    def __hash__(self) -> int:
        return hash(self.directives)
