"""Logging for proxy-init: ``--log-format plain|json`` and logrus-style ``--log-level``.

proxy-init's main output is its log: the ``iptables-save`` dumps before and after, and the
payload it applied, which is what an operator reads in ``kubectl logs -c linkerd-init``.
JSON puts one event per line. Plain prints the multi-line dumps as readable blocks under the
event line instead of escaping their newlines.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from gossamer_common.logging import current_stderr

from gossamer_proxy_init.config import LogFormat

_LEVELS = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


def render_plain(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """``<time> <LEVEL> <event> k=v ...`` with multi-line values as indented blocks below."""
    head = [str(event.pop("timestamp", "")), str(event.pop("level", "")).upper()]
    head.append(str(event.pop("event", "")))
    blocks = []
    for key, value in event.items():
        text = str(value)
        if "\n" in text.rstrip("\n"):
            body = "\n".join(f"    {line}" for line in text.rstrip("\n").splitlines())
            blocks.append(f"  {key}:\n{body}")
        else:
            head.append(f"{key}={text.rstrip()!s}" if " " not in text else f"{key}={text!r}")
    return "\n".join([" ".join(part for part in head if part), *blocks])


def configure_logging(
    log_format: LogFormat, level: str, stream: TextIO | None = None
) -> structlog.typing.FilteringBoundLogger:
    """Configure structlog for this process and return proxy-init's logger."""
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format is LogFormat.JSON
        else render_plain
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or current_stderr()),
        cache_logger_on_first_use=False,
    )
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("proxy-init")
    return logger
