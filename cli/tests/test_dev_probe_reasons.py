"""Local-mode probes say why they failed; a new pod announces its (recycled) IP.

Probes run against real loopback listeners (refused, silent, 5xx, garbage, closed) and a
fake exec runner; the gratuitous-ARP frame is checked byte by byte, and (as root, in
network namespaces this test makes) shown to replace a neighbour's stale ARP entry.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from gossamer_cli.dev import garp, probes
from gossamer_common.netns import add_veth, network_namespace

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def no_exec(command: Sequence[str], limit: float) -> int:
    raise AssertionError("network probes do not exec")


def spec(kind: str, port: int = 0, **kw: object) -> probes.ProbeSpec:
    return probes.ProbeSpec(kind, port=port, path="/live", timeout=0.5, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answering(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        writer.close()

    return handler


async def test_http_probe_passes_on_2xx_and_3xx(serve: Callable[[Handler], Awaitable[int]]) -> None:
    for raw in (b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 302 Found\r\n\r\n"):
        port = await serve(answering(raw))
        result = await probes.check(spec("http", port), "127.0.0.1", no_exec)
        assert result.ok
        assert result.reason == ""


async def test_http_probe_reports_the_status(serve: Callable[[Handler], Awaitable[int]]) -> None:
    port = await serve(answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"))
    result = await probes.check(spec("http", port), "127.0.0.1", no_exec)
    assert not result
    assert result.reason == "HTTP probe failed with statuscode: 503"


async def test_http_probe_reports_garbage_and_early_close(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    port = await serve(answering(b"SSH-2.0-OpenSSH\r\n"))
    result = await probes.check(spec("http", port), "127.0.0.1", no_exec)
    assert result.reason == "malformed HTTP response: 'SSH-2.0-OpenSSH'"
    port = await serve(answering(b""))
    result = await probes.check(spec("http", port), "127.0.0.1", no_exec)
    assert result.reason == "connection closed before a response"


async def test_refused_probe_says_so() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connects are refused
        for kind in ("http", "tcp"):
            result = await probes.check(spec(kind, port), "127.0.0.1", no_exec)
            assert not result.ok
            assert result.reason == "connection refused"


async def test_silent_server_times_out_with_the_probe_timeout(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the probe gives up first

    port = await serve(silent)
    result = await probes.check(spec("http", port), "127.0.0.1", no_exec)
    assert result.reason == "timed out after 0.5s"
    assert (await probes.check(spec("tcp", port), "127.0.0.1", no_exec)).ok


async def test_exec_probe_reports_exit_code_timeout_and_spawn_error() -> None:
    def runner(code: int | None) -> Callable[[Sequence[str], float], Awaitable[int]]:
        async def run(command: Sequence[str], limit: float) -> int:
            assert list(command) == ["cat", "/tmp/healthy"]
            if code is None:
                raise FileNotFoundError(2, "No such file or directory")
            return code

        return run

    check = probes.ProbeSpec("exec", command=("cat", "/tmp/healthy"), timeout=2.0)
    assert (await probes.check(check, "", runner(0))).ok
    cases = {
        1: "exec exited with code 1",
        -1: "exec timed out after 2s",
        -9: "exec killed by signal 9",
        None: "exec failed: no such file or directory",
    }
    for code, reason in cases.items():
        assert (await probes.check(check, "", runner(code))).reason == reason


def test_probe_target_names_what_was_checked() -> None:
    assert probes.target(spec("http", 4191), "10.244.1.7") == "http://10.244.1.7:4191/live"
    assert probes.target(spec("tcp", 8080), "10.244.1.7") == "tcp 10.244.1.7:8080"
    exec_spec = probes.ProbeSpec("exec", command=("cat", "/ok"))
    assert probes.target(exec_spec, "10.244.1.7") == "exec cat /ok"


# -- gratuitous ARP ---------------------------------------------------------------------------


def test_arp_announcement_frame_layout() -> None:
    mac = bytes.fromhex("02a1b2c3d4e5")
    frame = garp.arp_announcement(mac, "10.244.1.9")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6  # broadcast
    assert frame[6:12] == mac
    assert frame[12:14] == b"\x08\x06"  # ARP
    arp = frame[14:]
    assert arp[:8] == bytes.fromhex("0001080006040001")  # Ethernet/IPv4, request
    assert arp[8:14] == mac
    assert arp[14:18] == bytes([10, 244, 1, 9])  # sender IP
    assert arp[18:24] == b"\x00" * 6
    assert arp[24:28] == bytes([10, 244, 1, 9])  # target IP == sender IP: an announcement


def test_arp_probe_asks_from_no_address_and_replies_reveal_other_owners() -> None:
    ours, theirs = bytes.fromhex("02a1b2c3d4e5"), bytes.fromhex("0211223344ff")
    probe = garp.arp_probe(ours, "10.244.1.9")
    assert probe[14 + 14 : 14 + 18] == b"\x00" * 4  # sender IP 0.0.0.0: caches stay as they are
    assert probe[14 + 24 : 14 + 28] == bytes([10, 244, 1, 9])
    # Another host's announcement (or reply) for the IP is a conflict; our own frames are not.
    assert garp.conflicting_sender(garp.arp_announcement(theirs, "10.244.1.9"), ours, "10.244.1.9")
    assert (
        garp.conflicting_sender(garp.arp_announcement(ours, "10.244.1.9"), ours, "10.244.1.9")
        is None
    )
    assert (
        garp.conflicting_sender(garp.arp_announcement(theirs, "10.244.1.8"), ours, "10.244.1.9")
        is None
    )
    assert garp.conflicting_sender(probe, theirs, "10.244.1.9") is None  # a probe claims nothing
    assert garp.conflicting_sender(b"\x00" * 20, ours, "10.244.1.9") is None  # runt frame
    ipv4 = garp.arp_announcement(theirs, "10.244.1.9")
    not_arp = ipv4[:12] + b"\x08\x00" + ipv4[14:]
    assert garp.conflicting_sender(not_arp, ours, "10.244.1.9") is None


def test_arp_announcement_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        garp.arp_announcement(b"\x02\x00", "10.0.0.1")
    with pytest.raises(ValueError, match="IPv4"):
        garp.arp_announcement(b"\x02" * 6, "fd00::1")
    with pytest.raises(ValueError, match="does not appear to be"):
        garp.arp_announcement(b"\x02" * 6, "not-an-ip")


@pytest.mark.netns
async def test_announcement_replaces_a_neighbours_stale_entry() -> None:
    """The recycled-IP case: the neighbour still maps the IP to the previous pod's MAC."""
    with network_namespace("gsm-garp-") as pod, network_namespace("gsm-garp-") as peer:
        add_veth(pod, peer, a_addresses=["10.79.0.5/24"], b_addresses=["10.79.0.1/24"])
        stale = "02:00:00:00:00:01"
        peer.ip("neigh", "replace", "10.79.0.5", "lladdr", stale, "dev", "eth0", "nud", "stale")
        await asyncio.sleep(1.1)  # past the neighbour's 1 s locktime, as a real stale entry is
        mac = pod.ip("-br", "link", "show", "eth0").split()[2]
        announced = await garp.announce(pod.name, "10.79.0.5", delays=(0.0, 0.1))
        assert announced == garp.Announcement(sent=2, conflict=None)
        entry = peer.ip("neigh", "show", "10.79.0.5", "dev", "eth0")
        assert f"lladdr {mac}" in entry, entry


@pytest.mark.netns
async def test_a_second_owner_of_the_ip_is_reported() -> None:
    """Two live namespaces with one IP (a leftover pod): the probe finds the other one."""
    with network_namespace("gsm-garp-") as pod, network_namespace("gsm-garp-") as leftover:
        add_veth(pod, leftover, a_addresses=["10.79.0.5/24"], b_addresses=["10.79.0.5/24"])
        other = leftover.ip("-br", "link", "show", "eth0").split()[2]
        announced = await garp.announce(pod.name, "10.79.0.5", delays=(0.0,))
        assert announced.conflict == other


@pytest.mark.netns
async def test_announce_in_a_missing_namespace_raises() -> None:
    with pytest.raises(FileNotFoundError, match="gsm-garp-missing-ns"):
        await garp.announce("gsm-garp-missing-ns", "10.79.0.5", delays=(0.0,))
