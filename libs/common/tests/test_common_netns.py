"""Namespace helpers: create/delete (even on failure), veth links, running code as another uid."""

from __future__ import annotations

import os
import socket

import pytest
from gossamer_common.netns import (
    NetnsCallError,
    NetnsError,
    add_veth,
    network_namespace,
)

pytestmark = pytest.mark.netns


def whoami() -> tuple[int, int, list[int]]:
    return os.getuid(), os.getgid(), os.getgroups()


def links() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def knock(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return str(exc)
    return "connected"


def boom() -> None:
    raise ValueError("no luck")


def test_namespace_is_deleted_even_when_the_body_fails() -> None:
    seen = []

    def body() -> None:
        with network_namespace("gsm-t-") as ns:
            seen.append(ns)
            assert ns.exists()
            raise RuntimeError("body failed")

    with pytest.raises(RuntimeError, match="body failed"):
        body()
    assert len(seen) == 1
    assert not seen[0].exists()


def test_veth_links_two_namespaces_without_touching_ours() -> None:
    ours = links()
    with network_namespace("gsm-t-") as a, network_namespace("gsm-t-") as b:
        add_veth(
            a, b,
            a_addresses=["10.78.0.1/24", "fd78::1/64"],
            b_addresses=["10.78.0.2/24", "fd78::2/64"],
        )  # fmt: skip
        assert links() == ours
        assert a.call(links) == ["eth0", "lo"]
        assert "10.78.0.2/24" in b.ip("-4", "addr", "show", "dev", "eth0")
        # A refusal (RST) can only come from the peer: the link carries traffic both ways.
        assert a.call(knock, "10.78.0.2", 9) == "refused"
        assert a.call(knock, "fd78::2", 9) == "refused"


def test_call_runs_as_another_user_and_returns_result() -> None:
    with network_namespace("gsm-t-") as ns:
        assert ns.call(whoami, uid=5000, gid=5001) == (5000, 5001, [])
        assert ns.call(whoami)[0] == 0


def test_call_reports_exceptions_and_timeouts() -> None:
    with network_namespace("gsm-t-") as ns:
        with pytest.raises(NetnsCallError, match="raised ValueError: no luck"):
            ns.call(boom)
        with pytest.raises(NetnsCallError, match="timed out"):
            ns.call(__import__("time").sleep, 30, timeout=0.5)


def test_bad_interface_name_and_failed_command_are_clear() -> None:
    with network_namespace("gsm-t-") as a, network_namespace("gsm-t-") as b:
        with pytest.raises(NetnsError, match="must be 1-15 bytes"):
            add_veth(a, b, a_ifname="an-interface-name-too-long")
        with pytest.raises(NetnsError, match="exited"):
            a.run(["ip", "link", "set", "nope0", "up"])
