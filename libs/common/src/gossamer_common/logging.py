"""structlog JSON logging: one event per line on stderr, secrets never written.

Every component calls :func:`configure_logging` once from ``__main__``. Standard
library loggers (grpcio, aiohttp, asyncio) are routed through the same
processors so that the whole process speaks one format. :func:`redact_secrets`
runs on every event and replaces values whose key looks like a credential.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "current_stderr", "is_secret_key", "redact_secrets"]

REDACTED = "[REDACTED]"


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured.

    Loggers outlive the stream object they were configured with when the process swaps
    ``sys.stderr`` (a test runner capturing output, a daemon redirecting it); writing to
    the object at hand keeps them from failing on a closed file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def current_stderr() -> TextIO:
    """A stream that writes to the ``sys.stderr`` of the moment (see :class:`_CurrentStderr`)."""
    return cast(TextIO, _CurrentStderr())


_SECRET_WORDS = frozenset(
    {"token", "secret", "key", "password", "passwd", "credential", "credentials", "authorization"}
)
# A key such as ``issuer_key_path`` names *where* a secret lives, which is safe and useful to log.
_SAFE_SUFFIXES = frozenset({"path", "file", "dir", "name", "id"})
_WORD_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def is_secret_key(key: str) -> bool:
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if not words or words[-1] in _SAFE_SUFFIXES:
        return False
    return any(w in _SECRET_WORDS for w in words) or any(
        w.endswith(("token", "secret", "password")) for w in words
    )


def _redact(value: Any, depth: int) -> Any:
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else _redact(v, depth + 1)
            for k, v in value.items()
        }
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact secret-looking keys, including inside nested dicts."""
    for key in list(event_dict):
        if key != "event" and is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key], 0)
    return event_dict


def _shared_processors(component: str) -> list[Processor]:
    def add_component(_l: WrappedLogger, _m: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("component", component)
        return event_dict

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        add_component,
        redact_secrets,
    ]


def configure_logging(
    level: str = "info",
    *,
    component: str,
    stream: TextIO | None = None,
    library_level: str | None = None,
) -> None:
    """Configure structlog (and the stdlib root logger) to write JSON lines to ``stream``.

    ``level`` filters our own (structlog) events; ``library_level`` (default: ``level``) the
    standard library loggers of asyncio, grpclib and other libraries, as a Linkerd filter
    such as ``warn,linkerd=info`` keeps the proxy's own events at info and others at warn.
    """
    numeric = _numeric_level(level)
    library_numeric = numeric if library_level is None else _numeric_level(library_level)
    out = current_stderr() if stream is None else stream
    shared = _shared_processors(component)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(library_numeric)


def _numeric_level(level: str) -> int:
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        known = ", ".join(sorted(_LEVELS))
        raise ValueError(f"unknown log level {level!r}; expected one of {known}") from None
