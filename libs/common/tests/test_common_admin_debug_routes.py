"""/proxy-log-level and /env.json on the admin server (Linkerd's admin contract)."""

from __future__ import annotations

import json

from gossamer_common.admin import AdminRequest, AdminServer, add_debug_routes
from gossamer_common.log_control import LogLevels
from gossamer_common.log_filter import LogFilter


def _req(
    method: str,
    path: str,
    *,
    peer: str = "127.0.0.1",
    body: bytes = b"",
    query: str = "",
    headers: tuple[tuple[str, str], ...] = (),
) -> AdminRequest:
    return AdminRequest(method, path, query, headers, body, peer)


def _server(env: dict[str, str] | None = None) -> tuple[AdminServer, LogLevels]:
    server = AdminServer()
    levels = LogLevels(LogFilter.parse("warn,linkerd=info"))
    add_debug_routes(server, levels, environ=env or {})
    return server, levels


async def test_get_and_put_log_level() -> None:
    server, levels = _server()
    got = await server.dispatch(_req("GET", "/proxy-log-level"))
    assert (got.status, got.body) == (200, b"warn,linkerd=info")
    put = await server.dispatch(_req("PUT", "/proxy-log-level", body=b"warn,linkerd=debug\n"))
    assert (put.status, put.body) == (204, b"")
    assert str(levels.current) == "warn,linkerd=debug"
    got = await server.dispatch(_req("GET", "/proxy-log-level", peer="::1"))
    assert got.body == b"warn,linkerd=debug"


async def test_bad_directive_is_400_with_reason_and_keeps_the_old_filter() -> None:
    server, levels = _server()
    put = await server.dispatch(_req("PUT", "/proxy-log-level", body=b"linkerd=loud"))
    assert put.status == 400
    assert b"invalid level 'loud'" in put.body
    bad_utf8 = await server.dispatch(_req("PUT", "/proxy-log-level", body=b"\xff"))
    assert bad_utf8.status == 400
    assert str(levels.current) == "warn,linkerd=info"


async def test_log_level_is_loopback_only_for_both_methods() -> None:
    server, levels = _server()
    for method in ("GET", "PUT"):
        rsp = await server.dispatch(
            _req(method, "/proxy-log-level", peer="10.0.0.7", body=b"trace")
        )
        assert rsp.status == 403
    assert str(levels.current) == "warn,linkerd=info"
    rsp = await server.dispatch(_req("POST", "/proxy-log-level"))
    assert rsp.status == 405


async def test_no_levels_means_no_log_level_route() -> None:
    server = AdminServer()
    add_debug_routes(server, None, environ={})
    assert (await server.dispatch(_req("GET", "/proxy-log-level"))).status == 404


async def test_env_json_serves_proxy_settings_only_and_redacts_credentials() -> None:
    env = {
        "LINKERD2_PROXY_LOG": "warn",
        "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": "/var/run/token",
        "LINKERD2_PROXY_EXTRA_TOKEN": "s3cret",
        "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": "10.0.0.1:80",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "nope",
    }
    server, _ = _server(env)
    rsp = await server.dispatch(_req("GET", "/env.json", peer="10.0.0.7"))
    assert rsp.status == 200
    assert ("content-type", "application/json") in rsp.headers
    assert json.loads(rsp.body) == {
        "LINKERD2_PROXY_LOG": "warn",
        "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": "/var/run/token",
        "LINKERD2_PROXY_EXTRA_TOKEN": "[REDACTED]",
        "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": "10.0.0.1:80",
    }
    assert b"s3cret" not in rsp.body
    assert b"nope" not in rsp.body


async def test_env_json_query_accept_and_method() -> None:
    server, _ = _server({"LINKERD2_PROXY_LOG": "warn", "HOME": "/root"})
    some = await server.dispatch(
        _req("GET", "/env.json", query="LINKERD2_PROXY_LOG&LINKERD2_PROXY_UNSET&HOME")
    )
    assert json.loads(some.body) == {
        "LINKERD2_PROXY_LOG": "warn",
        "LINKERD2_PROXY_UNSET": None,
        "HOME": None,
    }
    kv = await server.dispatch(_req("GET", "/env.json", query="LINKERD2_PROXY_LOG=x"))
    assert kv.status == 400
    assert json.loads(kv.body)["status"] == 400
    html = await server.dispatch(_req("GET", "/env.json", headers=(("accept", "text/html"),)))
    assert (html.status, html.body) == (406, b"application/json")
    star = await server.dispatch(_req("GET", "/env.json", headers=(("accept", "*/*"),)))
    assert star.status == 200
    assert (await server.dispatch(_req("PUT", "/env.json"))).status == 405
