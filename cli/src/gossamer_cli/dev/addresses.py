"""Pod IP addresses of the local node: the runtime hands them out, as a kubelet's CNI does (pure).

The runtime is the single source of truth for a pod's IP: it picks the address, puts it on the
pod's eth0, probes it, and reports it as ``status.podIP``. (kwok used to pick it, from a stage
that could play twice for one pod when its watch events raced its own status patch: the second
play handed the pod another, recycled, address while its namespace kept the first.)

Like host-local IPAM, addresses are handed out round-robin from the node's pod CIDR, so an
address a pod gave back is reused as late as possible: neighbours' ARP caches and connection
tracking have long forgotten its previous owner by then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class NoFreeAddressError(RuntimeError):
    """Every address of the node's pod CIDR is held by a pod."""


class PodAddresses:
    """Which pod (by uid) holds which address of ``cidr``; one address per pod."""

    def __init__(self, cidr: str, reserved: Iterable[str] = ()) -> None:
        network = ipaddress.ip_network(cidr)
        if network.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} is too small for pods")
        self.network = network
        self._reserved = {ipaddress.ip_address(a) for a in reserved}
        self._first = int(network.network_address) + 1
        self._last = int(network.broadcast_address) - 1
        self._next = self._first
        self._by_uid: dict[str, str] = {}
        self._holder: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_uid)

    def of(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def claim(self, uid: str, preferred: str = "") -> str:
        """The address of pod ``uid``: the one it holds, else ``preferred`` if that is free
        (a pod that already has a ``status.podIP``), else the next free one after the last
        handed out."""
        held = self._by_uid.get(uid)
        if held is not None:
            return held
        if preferred and self._usable(preferred) and preferred not in self._holder:
            return self._take(uid, preferred)
        size = self._last - self._first + 1
        for step in range(size):
            candidate = self._first + (self._next - self._first + step) % size
            address = str(ipaddress.ip_address(candidate))
            if address not in self._holder and not self._is_reserved(address):
                self._next = candidate + 1 if candidate < self._last else self._first
                return self._take(uid, address)
        raise NoFreeAddressError(f"no free address left in {self.network} for pod {uid}")

    def release(self, uid: str) -> None:
        """Pod ``uid`` is gone (its namespace removed): its address may go to another pod."""
        address = self._by_uid.pop(uid, None)
        if address is not None:
            del self._holder[address]

    def _take(self, uid: str, address: str) -> str:
        self._by_uid[uid] = address
        self._holder[address] = uid
        return address

    def _usable(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return (
            ip.version == self.network.version
            and self._first <= int(ip) <= self._last
            and not self._is_reserved(address)
        )

    def _is_reserved(self, address: str) -> bool:
        return ipaddress.ip_address(address) in self._reserved
