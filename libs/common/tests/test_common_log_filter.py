"""Linkerd's log directive syntax (EnvFilter style) and its runtime application."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from gossamer_common.log_filter import OFF, TRACE, LogFilter, LogFilterError, linkerd_target
from gossamer_common.logging import configure_logging


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()
    logging.getLogger().setLevel(logging.WARNING)


def test_bare_level_and_linkerd_prefix() -> None:
    f = LogFilter.parse("warn,linkerd=debug")
    assert f.level_for("gossamer.proxy") == logging.DEBUG
    assert f.level_for("gossamer.proxy.outbound") == logging.DEBUG
    assert f.level_for("gossamer.admin") == logging.DEBUG
    assert f.level_for("grpclib.client") == logging.WARNING
    assert str(f) == "warn,linkerd=debug"


def test_longest_target_wins_whatever_the_order() -> None:
    f = LogFilter.parse("linkerd_app_outbound=trace,info,linkerd=error")
    assert f.level_for("gossamer.proxy.outbound") == TRACE
    assert f.level_for("gossamer.proxy.discovery") == TRACE  # linkerd_app_outbound::discover
    assert f.level_for("gossamer.proxy.policy") == logging.ERROR
    assert f.level_for("asyncio") == logging.INFO


def test_module_path_targets_and_our_own_names() -> None:
    f = LogFilter.parse("linkerd2_proxy::app=trace,gossamer.proxy.policy=debug")
    assert f.level_for("gossamer.proxy") == TRACE
    assert f.level_for("gossamer.proxy.pool") == TRACE  # linkerd2_proxy::app::pool
    assert f.level_for("gossamer.proxy.policy") == logging.DEBUG
    # No bare level: loggers no directive names are off, as in EnvFilter.
    assert f.level_for("gossamer.admin") == OFF
    assert f.level_for("grpclib") == OFF


def test_bare_target_means_trace_and_levels_ignore_case() -> None:
    f = LogFilter.parse(" WARN , linkerd_app_admin ")
    assert f.level_for("gossamer.admin") == TRACE
    assert f.level_for("gossamer.proxy") == logging.WARNING
    assert str(f) == "warn,linkerd_app_admin=trace"


def test_linkerds_default_filter_parses_and_its_span_directives_select_nothing() -> None:
    text = "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off"
    f = LogFilter.parse(text)
    assert str(f) == text
    assert f.level_for("gossamer.proxy") == logging.INFO
    assert f.level_for("grpclib") == logging.WARNING
    assert f.min_level == logging.INFO
    spans = LogFilter.parse("linkerd[inbound{port=8080,tls=true}]=trace,info")
    assert [str(d) for d in spans.directives] == [
        "linkerd[inbound{port=8080,tls=true}]=trace",
        "info",
    ]
    assert spans.level_for("gossamer.proxy") == logging.INFO


def test_linkerd_targets() -> None:
    assert linkerd_target("gossamer.proxy.identity") == "linkerd_proxy_identity_client"
    assert linkerd_target("gossamer.proxy.http1.server") == "linkerd2_proxy::app::http1::server"
    assert linkerd_target("gossamer.destination") == "linkerd::destination"
    assert linkerd_target("h2.connection") == "h2.connection"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("linkerd=loud", "invalid level 'loud'"),
        ("=debug", "empty target"),
        ("linkerd[span{x=1}=debug", "invalid span filter"),
        ("[{headers}]=loud", "invalid level 'loud'"),
        ("lin kerd=debug", "invalid target"),
        ("a=info," * 65, "more than 64 directives"),
        ("x" * 5000, "longer than 4096"),
    ],
)
def test_bad_filters_say_why(text: str, reason: str) -> None:
    with pytest.raises(LogFilterError, match=reason.replace("[", r"\[")):
        LogFilter.parse(text)


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_runtime_change_reaches_cached_structlog_and_stdlib_loggers() -> None:
    stream = io.StringIO()
    levels = configure_logging(
        component="proxy", stream=stream, log_filter=LogFilter.parse("warn,linkerd=info")
    )
    proxy_log = structlog.get_logger("gossamer.proxy.outbound")
    admin_log = structlog.get_logger("gossamer.admin")
    third_party = logging.getLogger("grpclib.client")
    proxy_log.debug("hidden_debug")
    proxy_log.info("shown_info")
    third_party.info("hidden_grpclib_info")
    assert [e["event"] for e in _events(stream)] == ["shown_info"]

    levels.set_from_text("info,linkerd_app_outbound=debug,linkerd_app_admin=off")
    proxy_log.debug("now_debug")
    admin_log.error("admin_silenced")
    third_party.info("grpclib_info")
    assert [e["event"] for e in _events(stream)] == ["shown_info", "now_debug", "grpclib_info"]
    assert str(levels.current) == "info,linkerd_app_outbound=debug,linkerd_app_admin=off"


def test_plain_format_is_linkerd_like_text() -> None:
    stream = io.StringIO()
    configure_logging(
        component="proxy", stream=stream, log_filter=LogFilter.parse("info"), log_format="plain"
    )
    structlog.get_logger("gossamer.proxy").info("listening", addr="127.0.0.1:4140", note="a b")
    line = stream.getvalue().strip()
    assert ' INFO linkerd2_proxy::app: listening addr=127.0.0.1:4140 note="a b"' in line
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging(component="x", log_format="xml")
