"""Gratuitous ARP for a pod's new address, so neighbours forget a recycled IP's old owner.

Pod IPs are reused: the runtime hands them out round-robin from the node's pod CIDR (see
``addresses``), so an address comes back once the CIDR has gone round. The node and every
other pod on the bridge may still hold a neighbour (ARP) entry for that IP with the *old*
pod's MAC address: the kernel keeps a stale entry and, when it is used
again, sends to the old MAC for ``delay_first_probe_time`` (5 s) plus three unicast probes
(1 s each) before it asks the whole bridge. Meanwhile every connect to the new pod times
out. During a rolling update that made client proxies fail requests with 504 for several
seconds, and it made kubelet probes from the node fail against a healthy proxy.

A Kubernetes bridge CNI plugin avoids this by announcing the new address: a gratuitous ARP
request (sender and target IP both the pod's) makes every Linux neighbour that has an entry
for the IP replace its MAC. :func:`announce` sends a few of them from inside the pod's
namespace, spaced out because the bridge may start forwarding on the new port only shortly
after the link comes up.

Before announcing, :func:`announce` asks once whether anyone else answers for the IP (an
RFC 5227 ARP probe). Nobody should: an answer means two live namespaces share the address
(a pod left behind by a failed teardown, or an IP handed out twice), and then probes and
connections to the pod reach whichever answered last. That is reported, not fixed here.

:func:`arp_announcement`, :func:`arp_probe` and :func:`conflicting_sender` build and read
frames (pure); :func:`announce` does the I/O in a short-lived thread that enters the
namespace (``setns`` moves only the calling thread, and that thread ends with its job, so
no other code ever runs in the wrong namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gossamer_common.netns import NETNS_RUN_DIR, enter_netns

__all__ = [
    "ANNOUNCE_DELAYS",
    "Announcement",
    "announce",
    "arp_announcement",
    "arp_probe",
    "conflicting_sender",
]

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
#: Seconds after the link came up at which an announcement is sent.
ANNOUNCE_DELAYS: tuple[float, ...] = (0.0, 0.3, 1.0, 2.5)
#: How long to listen for another owner's answer to the probe.
PROBE_WAIT = 0.2

_ARP_REQUEST = 1
_ARP_REPLY = 2
_NO_IP = b"\x00" * 4


@dataclass(frozen=True)
class Announcement:
    sent: int
    """Announcements sent."""
    conflict: str | None = None
    """The MAC address (``aa:bb:..``) of another host that answered for the IP, if any."""


def _ipv4(ip: str) -> bytes:
    address = ipaddress.ip_address(ip)
    if address.version != 4:
        raise ValueError(f"ARP announces IPv4 addresses only, got {ip}")
    return address.packed


def _arp_request(mac: bytes, sender_ip: bytes, target_ip: bytes) -> bytes:
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, got {len(mac)}")
    arp = (
        (1).to_bytes(2, "big")  # hardware: Ethernet
        + (0x0800).to_bytes(2, "big")  # protocol: IPv4
        + bytes([6, 4])
        + _ARP_REQUEST.to_bytes(2, "big")
        + mac
        + sender_ip
        + b"\x00" * 6
        + target_ip
    )
    return BROADCAST + mac + ETH_P_ARP.to_bytes(2, "big") + arp


def arp_announcement(mac: bytes, ip: str) -> bytes:
    """An Ethernet broadcast ARP request announcing that ``ip`` is at ``mac`` (RFC 5227)."""
    spa = _ipv4(ip)
    return _arp_request(mac, spa, spa)


def arp_probe(mac: bytes, ip: str) -> bytes:
    """An ARP probe: "who has ``ip``?" from no address, which only another owner answers."""
    return _arp_request(mac, _NO_IP, _ipv4(ip))


def conflicting_sender(frame: bytes, mac: bytes, ip: str) -> bytes | None:
    """The sender MAC if ``frame`` shows another host using ``ip`` (a reply or request
    whose sender address is ``ip``, from a MAC that is not ``mac``); else ``None``."""
    if len(frame) < 42 or frame[12:14] != ETH_P_ARP.to_bytes(2, "big"):
        return None
    arp = frame[14:42]
    if arp[:6] != bytes.fromhex("000108000604"):
        return None
    op = int.from_bytes(arp[6:8], "big")
    sender_mac, sender_ip = arp[8:14], arp[14:18]
    if op in (_ARP_REQUEST, _ARP_REPLY) and sender_ip == _ipv4(ip) and sender_mac != mac:
        return sender_mac
    return None


def _listen_for_conflict(sock: socket.socket, mac: bytes, ip: str, wait: float) -> bytes | None:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            return None
        found = conflicting_sender(frame, mac, ip)
        if found is not None:
            return found
    return None


def _send(netns: str, device: str, ip: str, delays: Sequence[float]) -> Announcement:
    """In the calling thread: enter ``netns``, probe for another owner, then announce."""
    enter_netns(f"{NETNS_RUN_DIR}/{netns}")
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((device, ETH_P_ARP))
        mac = bytes(sock.getsockname()[4])
        frame = arp_announcement(mac, ip)
        sock.send(arp_probe(mac, ip))
        conflict = _listen_for_conflict(sock, mac, ip, PROBE_WAIT)
        start = time.monotonic()
        sent = 0
        for delay in delays:
            pause = start + delay - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sock.send(frame)
            sent += 1
        return Announcement(sent, conflict.hex(":") if conflict is not None else None)


async def announce(
    netns: str, ip: str, *, device: str = "eth0", delays: Sequence[float] = ANNOUNCE_DELAYS
) -> Announcement:
    """Probe for, then announce, ``ip`` from ``device`` in ``netns``.

    Raises :class:`OSError` (or :class:`RuntimeError` from ``setns``) on failure.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Announcement] = loop.create_future()

    def report(result: Announcement | BaseException) -> None:
        if done.done():
            return
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def run() -> None:
        try:
            result: Announcement | BaseException = _send(netns, device, ip, delays)
        except (OSError, RuntimeError, ValueError) as exc:
            result = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(report, result)

    threading.Thread(target=run, name=f"garp {netns}", daemon=True).start()
    return await done
