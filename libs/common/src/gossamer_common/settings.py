"""Typed settings: one frozen dataclass per component, loaded from env and argv.

Each field is declared with :func:`setting`, which records the environment
variable (any name: the proxy uses Linkerd's ``LINKERD2_PROXY_*``), the CLI
flag, a default written the way a user would write it, a parser and help text.
:func:`load` reads the environment first and lets flags override it, and every
bad value becomes a :class:`SettingsError` naming the variable or flag, the
value and the form that was expected, so a misconfigured pod says exactly what
is wrong in its first log line.

    @settings_class
    class IdentitySettings:
        issuance_lifetime: float = setting(
            env="GOSSAMER_IDENTITY_ISSUANCE_LIFETIME", flag="--issuance-lifetime",
            default="24h", parse=parse_duration, help="Lifetime of issued certificates.")

    settings = load_or_exit(IdentitySettings, prog="gossamer-identity")
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar, dataclass_transform

__all__ = [
    "REQUIRED",
    "HelpRequested",
    "LogFilter",
    "SettingsError",
    "SocketAddr",
    "describe",
    "expected_form",
    "format_help",
    "list_of",
    "load",
    "load_or_exit",
    "optional",
    "parse_bool",
    "parse_cidr",
    "parse_duration",
    "parse_existing_file",
    "parse_int",
    "parse_log_filter",
    "parse_log_level",
    "parse_path",
    "parse_port",
    "parse_socket_addr",
    "parse_str",
    "setting",
    "settings_class",
]

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting could not be loaded; the message names the source and the expected form."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Use as ``default=REQUIRED`` for a setting that has no sensible default."""


@dataclass(frozen=True, slots=True)
class _Spec:
    env: str | None
    flag: str | None
    default_text: str | None
    parse: Callable[[str], Any]
    help: str
    expected: str
    is_bool: bool


_META_KEY = "gossamer_setting"


# -- parsers ------------------------------------------------------------------------------------
# Each parser takes the raw text and returns the value or raises ValueError; its ``expected``
# attribute (set by _expects) is the human description used in error messages and --help.


def _expects(text: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    def mark(fn: Callable[[str], T]) -> Callable[[str], T]:
        fn.expected = text  # type: ignore[attr-defined]
        return fn

    return mark


def expected_form(parse: Callable[[str], Any]) -> str:
    return str(getattr(parse, "expected", "a valid value"))


@_expects("a string")
def parse_str(text: str) -> str:
    return text


@_expects("an integer")
def parse_int(text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError
    return int(text)


@_expects("a port number from 1 to 65535")
def parse_port(text: str) -> int:
    port = parse_int(text)
    if not 1 <= port <= 65535:
        raise ValueError
    return port


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@_expects("a boolean (true/false, yes/no, on/off, 1/0)")
def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


@_expects("a duration such as 500ms, 10s, 2m, 1h30m or 24h (units ns, us, ms, s, m, h, d)")
def parse_duration(text: str) -> float:
    """Parse a duration into seconds; Go-style compounds (``1m30s``) are accepted, ``0`` too."""
    text = text.strip()
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError
    return total


class SocketAddr(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@_expects("a socket address host:port (IPv6 as [::1]:port), port 0-65535")
def parse_socket_addr(text: str) -> SocketAddr:
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError
    return SocketAddr(host, int(port_text))


@_expects("a CIDR such as 10.0.0.0/8 or fd00::/8")
def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text.strip(), strict=True)


@_expects("a file system path")
def parse_path(text: str) -> Path:
    if not text or "\0" in text:
        raise ValueError
    return Path(text)


@_expects("the path of an existing, readable file")
def parse_existing_file(text: str) -> Path:
    path = parse_path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError
    return path


_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical")


@_expects("a log level: trace, debug, info, warn, error or critical")
def parse_log_level(text: str) -> str:
    """Accepts a Linkerd-style filter too (``warn,linkerd=info``): the first bare level wins."""
    for part in text.split(","):
        part = part.strip().lower()
        if part in _LEVELS:
            return {"warning": "warn", "trace": "debug"}.get(part, part)
    raise ValueError


#: Targets of a Linkerd log filter that name the proxy's own code (``linkerd=info``).
_OWN_TARGETS = frozenset({"linkerd", "linkerd2_proxy", "gossamer", "gossamer_proxy"})


@dataclass(frozen=True)
class LogFilter:
    """A Linkerd-style filter split in two: the proxy's own loggers, and everything else."""

    own: str
    libraries: str


def parse_log_filter(text: str) -> LogFilter:
    """``warn,linkerd=info,hickory=error``: the bare level is the default; ``linkerd=`` (or
    ``gossamer=``) sets the level of the proxy's own log events. Other targets name crates of
    Linkerd's and are ignored. Without a bare level the default is ``warn``, as Linkerd's."""
    default: str | None = None
    own: str | None = None
    for part in text.split(","):
        part = part.strip().lower()
        target, sep, level = part.rpartition("=")
        if not sep:
            target, level = "", part
        level = {"warning": "warn", "trace": "debug"}.get(level, level)
        if level not in _LEVELS and level != "off":
            if not target:
                raise ValueError(f"unknown log level {part!r}")
            continue  # a directive for some other target of Linkerd's
        if not target:
            default = level
        elif target in _OWN_TARGETS:
            own = level
    if default is None and own is None:
        raise ValueError(f"no log level in {text!r}")
    base = default or "warn"
    return LogFilter(own=_loggable(own or base), libraries=_loggable(base))


def _loggable(level: str) -> str:
    """``off`` as the levels :func:`configure_logging` knows: only critical events."""
    return "critical" if level == "off" else level


def list_of(item: Callable[[str], T], sep: str = ",") -> Callable[[str], tuple[T, ...]]:
    """A ``sep``-separated list (empty text means an empty list); each item parsed by ``item``."""

    @_expects(f"a {sep!r}-separated list of {expected_form(item)}")
    def parse(text: str) -> tuple[T, ...]:
        parts = [p.strip() for p in text.split(sep)]
        return tuple(item(p) for p in parts if p)

    return parse


def optional(item: Callable[[str], T]) -> Callable[[str], T | None]:
    """Empty text means None (unset); otherwise parsed by ``item``."""

    @_expects(f"{expected_form(item)} (or empty)")
    def parse(text: str) -> T | None:
        return None if not text.strip() else item(text)

    return parse


# -- declaring and loading ------------------------------------------------------------------------


def setting(
    *,
    default: str | None,
    parse: Callable[[str], Any],
    help: str,
    env: str | None = None,
    flag: str | None = None,
) -> Any:
    """Declare a settings field.

    ``default`` is text in the same form a user would type (``"10s"``) so that ``--help``
    shows exactly what to write; it is parsed once at class definition, so a bad default
    fails at import. ``None`` means "unset" (the field's value is None); ``REQUIRED``
    means the setting must be given.
    """
    if env is None and flag is None:
        raise ValueError("a setting needs an env var, a flag, or both")
    if flag is not None and not re.fullmatch(r"--[a-z0-9][a-z0-9-]*", flag):
        raise ValueError(f"flags must look like --lower-case-words: {flag!r}")
    is_bool = parse is parse_bool
    spec = _Spec(env, flag, default, parse, help, expected_form(parse), is_bool)
    metadata = {_META_KEY: spec}
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    if default is None:
        return dataclasses.field(default=None, metadata=metadata)
    try:
        value = parse(default)
    except ValueError as e:
        where = env or flag
        raise ValueError(f"bad default {default!r} for {where}: expected {spec.expected}") from e
    return dataclasses.field(default=value, metadata=metadata)


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(setting,))
def settings_class(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen settings dataclass whose fields are declared with :func:`setting`.

    Prefer this to a bare ``@dataclass(frozen=True)``: it says what the class is for, and
    linters then treat :func:`setting` as the field specifier it is.
    """
    made = dataclass(frozen=True, kw_only=True)(cls)
    _specs(made)  # fail at import if a field is not declared with setting()
    return made


def _specs(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], _Spec]]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META_KEY)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        out.append((f, spec))
    return out


class HelpRequested(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


def _parse_argv(argv: Sequence[str], by_flag: Mapping[str, _Spec]) -> dict[str, tuple[_Spec, str]]:
    given: dict[str, tuple[_Spec, str]] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            raise HelpRequested
        if not arg.startswith("--"):
            raise SettingsError(f"unexpected argument {arg!r} (settings are given as --flag=value)")
        name, eq, value = arg.partition("=")
        negated = False
        spec = by_flag.get(name)
        if spec is None and name.startswith("--no-") and not eq:
            positive = by_flag.get("--" + name[5:])
            if positive is not None and positive.is_bool:
                spec, negated = positive, True
        if spec is None:
            raise SettingsError(f"unknown flag {name} (see --help for the list of settings)")
        if negated:
            value = "false"
        elif not eq:
            if spec.is_bool:
                value = "true"
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                raise SettingsError(f"flag {name} needs a value: expected {spec.expected}")
        given[name if not negated else "--" + name[5:]] = (spec, value)
    return given


def load(
    cls: type[T],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Build ``cls`` from ``environ`` (default ``os.environ``) overridden by ``argv`` flags.

    Raises :class:`SettingsError` for bad values, unknown flags and missing required
    settings (all problems are reported together), :class:`HelpRequested` for ``--help``.
    """
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    specs = _specs(cls)
    by_flag = {s.flag: s for _, s in specs if s.flag is not None}
    given = _parse_argv(argv, by_flag)
    values: dict[str, Any] = {}
    errors: list[str] = []
    for f, spec in specs:
        source: str | None = None
        raw: str | None = None
        if spec.flag is not None and spec.flag in given:
            source, raw = f"flag {spec.flag}", given[spec.flag][1]
        elif spec.env is not None and spec.env in environ:
            source, raw = f"environment variable {spec.env}", environ[spec.env]
        if raw is None or source is None:
            if spec.default_text is REQUIRED:
                names = " or ".join(n for n in (spec.env, spec.flag) if n)
                errors.append(f"{names} is required: expected {spec.expected}")
            continue
        try:
            values[f.name] = spec.parse(raw)
        except ValueError:
            errors.append(f"{source}={raw!r} is invalid: expected {spec.expected}")
    if errors:
        raise SettingsError("; ".join(errors))
    return cls(**values)


def format_help(cls: type[Any], prog: str, description: str = "") -> str:
    """Every setting with its flag, env var, default and description."""
    lines = [f"usage: {prog} [--flag=value ...]", ""]
    if description:
        lines += [description, ""]
    lines.append("Settings (flags override environment variables):")
    for _, spec in _specs(cls):
        names = ", ".join(n for n in (spec.flag, spec.env and f"${spec.env}") if n)
        if spec.default_text is REQUIRED:
            default = "required"
        elif spec.default_text is None:
            default = "unset"
        else:
            default = repr(spec.default_text)
        lines.append(f"  {names}")
        lines.append(f"      {spec.help} (default: {default}; {spec.expected})")
    return "\n".join(lines) + "\n"


def load_or_exit(
    cls: type[T],
    *,
    prog: str,
    description: str = "",
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """:func:`load` for ``__main__``: prints help (exit 0) or the error (exit 2)."""
    try:
        return load(cls, argv, environ)
    except HelpRequested:
        sys.stdout.write(format_help(cls, prog, description))
        raise SystemExit(0) from None
    except SettingsError as e:
        _fail(prog, str(e))


def _fail(prog: str, message: str) -> NoReturn:
    sys.stderr.write(f"{prog}: invalid settings: {message}\n")
    raise SystemExit(2)


def describe(settings: Any) -> dict[str, str]:
    """Field name → display string, for a start-up log line (settings hold paths, not secrets)."""
    return {f.name: str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
