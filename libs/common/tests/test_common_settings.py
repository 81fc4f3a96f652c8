"""Settings: parsers, env/flag precedence, error messages and --help output."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from gossamer_common.settings import (
    REQUIRED,
    HelpRequested,
    LogFilter,
    SettingsError,
    SocketAddr,
    describe,
    format_help,
    list_of,
    load,
    load_or_exit,
    optional,
    parse_bool,
    parse_cidr,
    parse_duration,
    parse_existing_file,
    parse_int,
    parse_log_filter,
    parse_log_level,
    parse_path,
    parse_port,
    parse_socket_addr,
    parse_str,
    setting,
    settings_class,
)


@settings_class
class Example:
    admin_addr: SocketAddr = setting(
        env="LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
        flag="--admin-addr",
        default="0.0.0.0:4191",
        parse=parse_socket_addr,
        help="Admin listener.",
    )
    grace: float = setting(
        env="EX_GRACE", flag="--grace", default="2m", parse=parse_duration, help="Grace."
    )
    workers: int = setting(env="EX_WORKERS", default="4", parse=parse_int, help="Workers.")
    enabled: bool = setting(
        env="EX_ENABLED", flag="--enabled", default="false", parse=parse_bool, help="On."
    )
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        env="EX_NETWORKS",
        flag="--networks",
        default="10.0.0.0/8,fd00::/8",
        parse=list_of(parse_cidr),
        help="Networks.",
    )
    port: int = setting(flag="--port", default="8080", parse=parse_port, help="Port.")
    name: str = setting(env="EX_NAME", flag="--name", default=REQUIRED, parse=parse_str, help="N.")
    kubeconfig: Path | None = setting(
        env="KUBECONFIG", flag="--kubeconfig", default=None, parse=parse_path, help="Kubeconfig."
    )


def test_defaults_and_required() -> None:
    s = load(Example, ["--name", "x"], {})
    assert s.admin_addr == SocketAddr("0.0.0.0", 4191)
    assert s.grace == 120.0
    assert s.workers == 4
    assert s.enabled is False
    assert s.networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert s.kubeconfig is None
    assert describe(s)["admin_addr"] == "0.0.0.0:4191"


def test_flags_override_environment() -> None:
    env = {"EX_GRACE": "10s", "EX_NAME": "from-env", "EX_WORKERS": "8", "EX_ENABLED": "yes"}
    s = load(Example, ["--grace=500ms", "--name", "from-flag", "--no-enabled"], env)
    assert (s.grace, s.name, s.workers, s.enabled) == (0.5, "from-flag", 8, False)
    s = load(Example, ["--enabled"], env)
    assert s.enabled is True
    assert s.name == "from-env"


def test_all_errors_are_reported_with_names_and_forms() -> None:
    env = {"EX_WORKERS": "many", "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "nope"}
    with pytest.raises(SettingsError) as info:
        load(Example, ["--port", "0", "--grace=10 parsecs"], env)
    msg = str(info.value)
    assert "environment variable LINKERD2_PROXY_ADMIN_LISTEN_ADDR='nope' is invalid" in msg
    assert "expected a socket address host:port" in msg
    assert "environment variable EX_WORKERS='many' is invalid: expected an integer" in msg
    assert "flag --port='0' is invalid: expected a port number from 1 to 65535" in msg
    assert "flag --grace='10 parsecs' is invalid: expected a duration" in msg
    assert "EX_NAME or --name is required" in msg


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["positional"], "unexpected argument 'positional'"),
        (["--bogus=1"], "unknown flag --bogus"),
        (["--no-grace"], "unknown flag --no-grace"),
        (["--name"], "flag --name needs a value"),
    ],
)
def test_argv_errors(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(Example, argv, {"EX_NAME": "x"})


def test_help_lists_every_setting() -> None:
    with pytest.raises(HelpRequested):
        load(Example, ["--help"], {})
    text = format_help(Example, "example", "An example.")
    for needle in (
        "usage: example",
        "--admin-addr, $LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
        "Admin listener. (default: '0.0.0.0:4191';",
        "$EX_WORKERS",
        "(default: required;",
        "(default: unset;",
        "--port\n",
    ):
        assert needle in text


def test_load_or_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_or_exit(Example, prog="ex", argv=["-h"], environ={})
    assert info.value.code == 0
    assert "$EX_GRACE" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        load_or_exit(Example, prog="ex", argv=[], environ={"EX_WORKERS": "x"})
    assert info.value.code == 2
    assert "ex: invalid settings: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h30m", 5400.0),
     ("24h0m0s", 86400.0), ("1.5s", 1.5), ("100us", 1e-4), ("1d", 86400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "-1s", "1x", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - parsers signal bad input with a bare ValueError
        parse_duration(text)


def test_scalar_parsers() -> None:
    assert parse_int(" -3 ") == -3
    assert parse_port("65535") == 65535
    for bad in ("65536", "0", "x", "1.5"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_port(bad)
    assert parse_bool("ON") is True
    assert parse_bool("0") is False
    with pytest.raises(ValueError):  # noqa: PT011
        parse_bool("maybe")
    assert parse_socket_addr("[::1]:4191") == SocketAddr("::1", 4191)
    assert str(SocketAddr("::1", 4191)) == "[::1]:4191"
    assert parse_socket_addr("localhost:0") == SocketAddr("localhost", 0)
    for bad in ("4191", ":4191", "::1:4191", "[::1]4191", "[zz]:1", "a:70000", "a:b"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_socket_addr(bad)
    with pytest.raises(ValueError):  # noqa: PT011
        parse_cidr("10.0.0.1/8")  # host bits set
    assert parse_log_level("warn,linkerd=info") == "warn"
    linkerd_default = "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off"
    assert parse_log_filter(linkerd_default) == LogFilter(own="info", libraries="warn")
    assert parse_log_filter("debug") == LogFilter(own="debug", libraries="debug")
    assert parse_log_filter("linkerd=trace") == LogFilter(own="debug", libraries="warn")
    assert parse_log_filter("error,gossamer=WARNING") == LogFilter(own="warn", libraries="error")
    assert parse_log_filter("off") == LogFilter(own="critical", libraries="critical")
    for bad in ("loud", "hickory=error", ""):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_log_filter(bad)
    assert parse_log_level("WARNING") == "warn"
    with pytest.raises(ValueError):  # noqa: PT011
        parse_log_level("loud")
    assert list_of(parse_int)("") == ()
    assert list_of(parse_int)("1, 2,") == (1, 2)
    assert optional(parse_int)(" ") is None
    with pytest.raises(ValueError):  # noqa: PT011
        parse_path("")


def test_existing_file(tmp_path: Path) -> None:
    f = tmp_path / "ca.pem"
    f.write_text("x")
    assert parse_existing_file(str(f)) == f
    with pytest.raises(ValueError):  # noqa: PT011
        parse_existing_file(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError):  # noqa: PT011
        parse_existing_file(str(tmp_path))


def test_declaration_errors() -> None:
    with pytest.raises(ValueError, match="bad default 'soon' for X"):
        setting(env="X", default="soon", parse=parse_duration, help="x")
    with pytest.raises(ValueError, match="needs an env var"):
        setting(default="1", parse=parse_int, help="x")
    with pytest.raises(ValueError, match="flags must look like"):
        setting(flag="-x", default="1", parse=parse_int, help="x")

    @dataclass(frozen=True)
    class Plain:
        x: int = 1

    with pytest.raises(TypeError, match="not declared with setting"):
        load(Plain, [], {})

    class Undeclared:
        x: int = 1

    with pytest.raises(TypeError, match="not declared with setting"):
        settings_class(Undeclared)
