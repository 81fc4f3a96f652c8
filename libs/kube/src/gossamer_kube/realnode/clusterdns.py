"""Cluster DNS for the real test node: answers as kube-dns does, from the apiserver's objects.

Records (the Kubernetes DNS specification, A and SRV over UDP and TCP):

- ``<svc>.<ns>.svc.<domain>``: the ClusterIP, or for a headless Service its ready endpoints;
- ``<hostname>.<svc>.<ns>.svc.<domain>``: a headless Service's endpoint with that hostname;
- ``<a-b-c-d>.<ns>.pod.<domain>``: that IP (kube-dns's "pods insecure" mode);
- ``_<port>._<proto>.<svc>.<ns>.svc.<domain>`` SRV: the named port of the Service.

A name in the zone that does not exist is NXDOMAIN; an existing name asked for another type
gets an empty NOERROR answer (so resolvers asking AAAA do not wait); names outside the zone
are REFUSED, since the node has no upstream. The codec and the resolver are pure (bytes in,
bytes out over a :class:`Zone` snapshot); the server polls the apiserver for the snapshot.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeError
from gossamer_kube.testing.admin import AdminHTTP

__all__ = ["DNSFormatError", "Zone", "answer", "build_query", "parse_question", "query_a"]

TYPE_A = 1
TYPE_SRV = 33
TYPE_AAAA = 28
CLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP, RCODE_REFUSED = 0, 1, 3, 4, 5
TTL = 5
MAX_MESSAGE = 4096
MAX_LABELS = 64


class DNSFormatError(ValueError):
    """A query that is not a well-formed single-question DNS query."""


@dataclass(frozen=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    raw: bytes  # the question section as received


def parse_question(message: bytes) -> Question:
    if len(message) < 12 or len(message) > MAX_MESSAGE:
        raise DNSFormatError("bad length")
    ident, flags, qdcount = struct.unpack("!HHH", message[:6])
    if flags & 0x8000:
        raise DNSFormatError("not a query")
    if qdcount != 1:
        raise DNSFormatError("exactly one question expected")
    labels: list[str] = []
    pos = 12
    while True:
        if pos >= len(message):
            raise DNSFormatError("truncated name")
        length = message[pos]
        if length & 0xC0:
            raise DNSFormatError("compressed or extended label in a question")
        pos += 1
        if length == 0:
            break
        if pos + length > len(message) or len(labels) >= MAX_LABELS:
            raise DNSFormatError("bad label")
        labels.append(message[pos : pos + length].decode("ascii", "replace").lower())
        pos += length
    if pos + 4 > len(message):
        raise DNSFormatError("truncated question")
    qtype, qclass = struct.unpack("!HH", message[pos : pos + 4])
    return Question(ident, flags, ".".join(labels), qtype, qclass, message[12 : pos + 4])


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        if label:
            data = label.encode("ascii")
            out += bytes([len(data)]) + data
    return out + b"\0"


def build_query(ident: int, name: str, qtype: int = TYPE_A) -> bytes:
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + _encode_name(name)
        + struct.pack("!HH", qtype, CLASS_IN)
    )


@dataclass(frozen=True)
class SrvTarget:
    port: int
    target: str


@dataclass
class Zone:
    """What the apiserver says, reduced to names: A records and SRV records."""

    domain: str = "cluster.local"
    a: dict[str, list[str]] = field(default_factory=dict)
    srv: dict[str, list[SrvTarget]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)

    def exists(self, name: str) -> bool:
        return name in self.a or name in self.srv

    def lookup_a(self, name: str) -> list[str] | None:
        if name in self.a:
            return self.a[name]
        pod_suffix = f".pod.{self.domain}"
        if name.endswith(pod_suffix):
            head = name[: -len(pod_suffix)]
            dashed, _, namespace = head.rpartition(".")
            if dashed and namespace in self.namespaces:
                try:
                    ip = ipaddress.IPv4Address(dashed.replace("-", "."))
                except ValueError:
                    return None
                return [str(ip)]
        return None

    @classmethod
    def from_objects(
        cls,
        domain: str,
        namespaces: list[Mapping[str, Any]],
        services: list[Mapping[str, Any]],
        slices: list[Mapping[str, Any]],
    ) -> Zone:
        zone = cls(domain=domain)
        zone.namespaces = {str(n["metadata"]["name"]) for n in namespaces}
        by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for sl in slices:
            meta = sl.get("metadata", {})
            svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
            if svc and sl.get("addressType") == "IPv4":
                by_service.setdefault((meta.get("namespace", ""), svc), []).append(sl)
        for svc in services:
            meta, spec = svc.get("metadata", {}), svc.get("spec", {})
            name, namespace = meta.get("name", ""), meta.get("namespace", "")
            fqdn = f"{name}.{namespace}.svc.{domain}"
            cluster_ip = spec.get("clusterIP")
            if spec.get("type") == "ExternalName":
                continue
            if cluster_ip and cluster_ip != "None":
                zone.a[fqdn] = [cluster_ip]
            else:
                ips: list[str] = []
                for sl in by_service.get((namespace, name), []):
                    for ep in sl.get("endpoints") or []:
                        if (ep.get("conditions") or {}).get("ready") is False:
                            continue
                        addresses = [str(a) for a in ep.get("addresses") or []]
                        ips += addresses
                        if ep.get("hostname") and addresses:
                            zone.a[f"{ep['hostname']}.{fqdn}"] = addresses[:1]
                zone.a[fqdn] = sorted(set(ips))
            for port in spec.get("ports") or []:
                if port.get("name"):
                    proto = str(port.get("protocol", "TCP")).lower()
                    srv_name = f"_{port['name']}._{proto}.{fqdn}"
                    zone.srv[srv_name] = [SrvTarget(int(port["port"]), fqdn)]
        return zone


def _header(q: Question, rcode: int, ancount: int) -> bytes:
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | rcode  # QR, AA, RD echoed
    return struct.pack("!HHHHHH", q.id, flags, 1, ancount, 0, 0)


def answer(zone: Zone, message: bytes) -> bytes | None:
    """The response to one query message; None for something not worth answering."""
    try:
        q = parse_question(message)
    except DNSFormatError:
        if len(message) >= 12:
            ident = struct.unpack("!H", message[:2])[0]
            return struct.pack("!HHHHHH", ident, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
        return None
    if q.qclass != CLASS_IN or (q.flags >> 11) & 0xF != 0:
        return _header(q, RCODE_NOTIMP, 0) + q.raw
    domain = zone.domain
    if q.name != domain and not q.name.endswith("." + domain):
        return _header(q, RCODE_REFUSED, 0) + q.raw
    records: list[bytes] = []
    pointer = b"\xc0\x0c"
    if q.qtype == TYPE_A:
        for ip in zone.lookup_a(q.name) or []:
            rdata = ipaddress.IPv4Address(ip).packed
            records.append(pointer + struct.pack("!HHIH", TYPE_A, CLASS_IN, TTL, 4) + rdata)
    elif q.qtype == TYPE_SRV:
        for target in zone.srv.get(q.name, []):
            rdata = struct.pack("!HHH", 0, 100, target.port) + _encode_name(target.target)
            records.append(
                pointer + struct.pack("!HHIH", TYPE_SRV, CLASS_IN, TTL, len(rdata)) + rdata
            )
    known = zone.exists(q.name) or zone.lookup_a(q.name) is not None or _is_parent(zone, q.name)
    rcode = RCODE_OK if known else RCODE_NXDOMAIN
    return _header(q, rcode, len(records)) + q.raw + b"".join(records)


def _is_parent(zone: Zone, name: str) -> bool:
    """Interior names (``svc.cluster.local``, ``ns.svc.cluster.local``) exist without data."""
    suffix = "." + name
    return name == zone.domain or any(n.endswith(suffix) for n in zone.a)


# -- the server -------------------------------------------------------------------------------


class ZoneHolder:
    def __init__(self, domain: str) -> None:
        self.zone = Zone(domain=domain)


def poll_zone(holder: ZoneHolder, admin: AdminHTTP, interval: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            namespaces = admin.request("GET", "/api/v1/namespaces").get("items", [])
            services = admin.request("GET", "/api/v1/services").get("items", [])
            slices = admin.request("GET", "/apis/discovery.k8s.io/v1/endpointslices").get(
                "items", []
            )
        except (KubeError, OSError):
            stop.wait(interval)
            continue
        holder.zone = Zone.from_objects(holder.zone.domain, namespaces, services, slices)
        stop.wait(interval)


def serve(listen: str, kubeconfig: Path, domain: str, interval: float = 0.5) -> None:
    host, _, port = listen.rpartition(":")
    holder = ZoneHolder(domain)
    admin = AdminHTTP(KubeConfig.from_kubeconfig(kubeconfig))
    stop = threading.Event()
    threading.Thread(target=poll_zone, args=(holder, admin, interval, stop), daemon=True).start()

    class UDPHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            reply = answer(holder.zone, data)
            if reply is not None:
                if len(reply) > 512:  # no EDNS: an empty truncated reply, retried over TCP
                    q = parse_question(data)
                    flags = struct.unpack("!H", reply[2:4])[0] | 0x0200
                    reply = struct.pack("!HHHHHH", q.id, flags, 1, 0, 0, 0) + q.raw
                sock.sendto(reply, self.client_address)

    class TCPHandler(socketserver.StreamRequestHandler):
        timeout = 10

        def handle(self) -> None:
            while True:
                head = self.rfile.read(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = self.rfile.read(length)
                if len(data) < length:
                    return
                reply = answer(holder.zone, data)
                if reply is None:
                    return
                self.wfile.write(struct.pack("!H", len(reply)) + reply)

    class UDPServer(socketserver.ThreadingUDPServer):
        allow_reuse_address = True
        daemon_threads = True

    class TCPServer(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    udp = UDPServer((host, int(port)), UDPHandler)
    tcp = TCPServer((host, int(port)), TCPHandler)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    udp.serve_forever()


def query_a(server: str, name: str, timeout: float = 1.0) -> list[str]:
    """Ask ``server`` (UDP 53) for the A records of ``name`` (used to wait for the server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(build_query(0x4753, name), (server, 53))
        data, _ = sock.recvfrom(MAX_MESSAGE)
    ident, flags, _qd, ancount = struct.unpack("!HHHH", data[:8])
    if ident != 0x4753 or flags & 0xF != RCODE_OK:
        return []
    q = parse_question(build_query(0, name))
    pos = 12 + len(q.raw)
    ips = []
    for _ in range(ancount):
        rtype, _cls, _ttl, rdlength = struct.unpack("!HHIH", data[pos + 2 : pos + 12])
        rdata = data[pos + 12 : pos + 12 + rdlength]
        if rtype == TYPE_A and rdlength == 4:
            ips.append(str(ipaddress.IPv4Address(rdata)))
        pos += 12 + rdlength
    return ips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gossamer_kube.realnode.clusterdns")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT for UDP and TCP")
    parser.add_argument("--domain", default="cluster.local")
    args = parser.parse_args(argv)
    while True:
        try:
            serve(args.listen, args.kubeconfig, args.domain)
        except OSError as exc:  # the address may not be up yet
            print(f"cluster-dns: {exc}; retrying", flush=True)
            time.sleep(1.0)


if __name__ == "__main__":
    raise SystemExit(main())
