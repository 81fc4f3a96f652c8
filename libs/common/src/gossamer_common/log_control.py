"""Per-logger levels that change at runtime (``PUT /proxy-log-level``) at near-zero cost.

structlog's own filtering logger fixes one level for the process when it is built. Here
each structlog logger writes through a :class:`NamedWriter` that knows its name and
carries its current least level; the bound logger's methods compare against that one
integer before doing any work, so a disabled ``debug`` call costs an attribute read and
a comparison. :class:`LogLevels` owns the filter: setting a new one recomputes the level
of every live writer and of the stdlib loggers (grpclib, asyncio, …), whose records pass
a per-name check on the one handler.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from gossamer_common.log_filter import TRACE, LogFilter

__all__ = ["GatedBoundLogger", "LogLevels", "NamedWriter", "WriterFactory"]


class NamedWriter:
    """Writes rendered lines; knows the logger name and its current least level."""

    __slots__ = ("__weakref__", "_file", "_lock", "level", "name")

    def __init__(self, name: str, file: TextIO, level: int, lock: threading.Lock) -> None:
        self.name = name
        self.level = level
        self._file = file
        self._lock = lock

    def msg(self, message: str) -> None:
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class WriterFactory:
    """structlog logger factory: one :class:`NamedWriter` per ``get_logger(name)``."""

    def __init__(self, levels: LogLevels, file: TextIO) -> None:
        self._levels = levels
        self._file = file
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> NamedWriter:
        name = str(args[0]) if args and isinstance(args[0], str) else ""
        writer = NamedWriter(name, self._file, self._levels.level_for(name), self._lock)
        self._levels.track(writer)
        return writer


def _interpolate(event: Any, args: tuple[Any, ...]) -> Any:
    return event % args if args else event


class GatedBoundLogger(structlog.BoundLoggerBase):
    """A bound logger whose level methods return at once below the writer's level."""

    _logger: NamedWriter

    def trace(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > TRACE:
            return None
        return self._proxy_to_logger("debug", _interpolate(event, args), **kw)

    def debug(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > logging.DEBUG:
            return None
        return self._proxy_to_logger("debug", _interpolate(event, args), **kw)

    def info(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > logging.INFO:
            return None
        return self._proxy_to_logger("info", _interpolate(event, args), **kw)

    def warning(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > logging.WARNING:
            return None
        return self._proxy_to_logger("warning", _interpolate(event, args), **kw)

    warn = warning

    def error(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > logging.ERROR:
            return None
        return self._proxy_to_logger("error", _interpolate(event, args), **kw)

    def exception(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > logging.ERROR:
            return None
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", _interpolate(event, args), **kw)

    def critical(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        if self._logger.level > logging.CRITICAL:
            return None
        return self._proxy_to_logger("critical", _interpolate(event, args), **kw)

    fatal = critical

    def msg(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self.info(event, *args, **kw)

    def log(self, level: int, event: Any = None, *args: Any, **kw: Any) -> Any:
        if level < self._logger.level:
            return None
        name = logging.getLevelName(level).lower() if level >= logging.DEBUG else "debug"
        return self._proxy_to_logger(name, _interpolate(event, args), **kw)

    def is_enabled_for(self, level: int) -> bool:
        return level >= self._logger.level


class _StdlibGate(logging.Filter):
    """Lets a stdlib record through when the filter allows its logger at its level."""

    def __init__(self, levels: LogLevels) -> None:
        super().__init__()
        self._levels = levels

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self._levels.level_for(record.name)


class LogLevels:
    """The live filter: what ``GET /proxy-log-level`` shows and ``PUT`` replaces."""

    def __init__(self, log_filter: LogFilter) -> None:
        self._filter = log_filter
        self._cache: dict[str, int] = {}
        self._writers: weakref.WeakSet[NamedWriter] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[LogFilter], None]] = []

    @property
    def current(self) -> LogFilter:
        return self._filter

    def level_for(self, name: str) -> int:
        level = self._cache.get(name)
        if level is None:
            level = self._filter.level_for(name)
            if len(self._cache) < 4096:  # names come from code, but stay bounded anyway
                self._cache[name] = level
        return level

    def track(self, writer: NamedWriter) -> None:
        with self._lock:
            self._writers.add(writer)

    def stdlib_gate(self) -> logging.Filter:
        return _StdlibGate(self)

    def on_change(self, listener: Callable[[LogFilter], None]) -> None:
        self._listeners.append(listener)

    def set(self, log_filter: LogFilter) -> None:
        """Apply a new filter to every live logger (structlog and stdlib) at once."""
        with self._lock:
            self._filter = log_filter
            self._cache = {}
            for writer in list(self._writers):
                writer.level = self.level_for(writer.name)
        for listener in self._listeners:
            listener(log_filter)

    def set_from_text(self, text: str) -> LogFilter:
        """Parse and apply ``text``; raises :class:`~gossamer_common.log_filter.LogFilterError`."""
        log_filter = LogFilter.parse(text)
        self.set(log_filter)
        return log_filter
