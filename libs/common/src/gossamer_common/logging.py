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

from gossamer_common.log_control import GatedBoundLogger, LogLevels, WriterFactory
from gossamer_common.log_filter import LogFilter, linkerd_target

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


def _render_plain(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """Linkerd's plain format: ``TIMESTAMP LEVEL target: message key=value ...``."""
    ts = event_dict.pop("ts", "")
    level = str(event_dict.pop("level", method)).upper()
    event = event_dict.pop("event", "")
    event_dict.pop("component", None)
    name = getattr(logger, "name", "") or ""
    target = linkerd_target(name) if name else "-"
    fields = " ".join(f"{k}={_plain_value(v)}" for k, v in event_dict.items())
    line = f"{ts} {level:>5} {target}: {event}"
    return f"{line} {fields}" if fields else line


def _plain_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def configure_logging(
    level: str = "info",
    *,
    component: str,
    stream: TextIO | None = None,
    library_level: str | None = None,
    log_filter: LogFilter | None = None,
    log_format: str = "json",
) -> LogLevels:
    """Configure structlog (and the stdlib loggers) to write one line per event to ``stream``.

    ``level`` is one bare level for our own (structlog) events and ``library_level``
    (default: ``level``) the one for the standard library loggers of asyncio, grpclib and
    other libraries; ``log_filter`` (Linkerd's directive syntax, per logger, see
    :mod:`gossamer_common.log_filter`) replaces both when given. ``log_format`` is ``json``
    (structlog JSON lines) or ``plain`` (Linkerd's plain text). The returned
    :class:`~gossamer_common.log_control.LogLevels` changes the filter at runtime.
    """
    if log_filter is None:
        own = _bare_level(level)
        libraries = own if library_level is None else _bare_level(library_level)
        log_filter = LogFilter.parse(f"{libraries},gossamer={own}")
    fmt = log_format.strip().lower()
    if fmt not in ("json", "plain"):
        raise ValueError(f"unknown log format {log_format!r}; expected plain or json")
    out = current_stderr() if stream is None else stream
    levels = LogLevels(log_filter)
    shared = _shared_processors(component)
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False) if fmt == "json" else _render_plain
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=GatedBoundLogger,
        logger_factory=WriterFactory(levels, out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.addFilter(levels.stdlib_gate())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer() if fmt == "json" else _render_plain,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(log_filter.min_level, 1))

    def widen_root(new: LogFilter) -> None:
        root.setLevel(max(new.min_level, 1))

    levels.on_change(widen_root)
    return levels


def _bare_level(level: str) -> str:
    if level.lower() not in _LEVELS:
        known = ", ".join(sorted(_LEVELS))
        raise ValueError(f"unknown log level {level!r}; expected one of {known}")
    return level.lower()
