"""The proxy's control-plane clients on grpclib, against real grpcio servers on 127.0.0.1.

* The sidecar never loads grpcio: not on import, and not in a real ``python -m
  gossamer_proxy`` process that has certified and opened destination and policy watches
  over TLS (checked in that process's ``sys.modules`` and in its memory maps).
* :func:`control_channel` TLS: the server identity is verified (a wrong name or another CA
  is refused), the proxy's certificate is presented where the server asks for one, and a
  server that negotiates no ALPN (Linkerd's control plane, linkerd-wire.md §10 item 10) is
  still reached.
* Every failure shape becomes an :class:`RpcError` with a status: refused connections,
  deadlines, peers that are not HTTP/2, bad addresses; server streams end cleanly, report
  the status they end with, and are reset (the server sees the cancel) when left early.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from gossamer_api.proxy import (
    destination_grpc,
    destination_pb2,
    destination_pb2_grpc,
    identity_grpc,
    identity_pb2,
    identity_pb2_grpc,
    inbound_pb2_grpc,
    outbound_pb2_grpc,
)
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.channels import ControlAddressError, control_channel, split_host_port
from gossamer_proxy.mesh.control_stream import StreamConfig, StreamWatch
from gossamer_proxy.mesh.identity import IdentityClient, IdentityConfig, IdentityConfigError
from gossamer_proxy.mesh.rpc import RpcError, ServerStream, Status, unary_call
from gossamer_proxy.mesh.tls_contexts import Credentials
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    build_csr,
    certificates_to_pem,
    check_csr,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    load_csr,
    private_key_to_pem,
)
from grpclib.server import Server as GrpclibServer
from grpclib.server import Stream as GrpclibStream

TD = "cluster.local"
IDENTITY_SVC = "gossamer-identity.gossamer.serviceaccount.identity.gossamer.cluster.local"
DESTINATION_SVC = "gossamer-destination.gossamer.serviceaccount.identity.gossamer.cluster.local"
WEB = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
TOKEN = b"projected-token"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def wait_until(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll ``predicate`` (bounded in count and time) until it holds."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


# --- fake control plane (grpcio, like the real services) ---------------------------------------


@dataclass
class Identity(identity_pb2_grpc.IdentityServicer):
    issuer: Issuer
    delay: float = 0.0
    issued: list[str] = field(default_factory=list)
    peers: list[bool] = field(default_factory=list)  # whether the caller sent a certificate

    async def Certify(
        self, request: identity_pb2.CertifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> identity_pb2.CertifyResponse:
        self.peers.append(bool(context.auth_context().get("x509_pem_cert")))
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.token != TOKEN:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        checked = check_csr(
            load_csr(request.certificate_signing_request, allow_pem=False), request.identity
        )
        issued = self.issuer.sign_leaf(checked.public_key, request.identity, now=now())
        self.issued.append(request.identity)
        return identity_pb2.CertifyResponse(
            leaf_certificate=issued.leaf_der,
            intermediate_certificates=list(issued.intermediates_der),
        )


@dataclass
class Watches:
    """Records every watch request; each stream sends ``first`` then stays open until cancelled."""

    requests: list[tuple[str, Any]] = field(default_factory=list)
    open: dict[str, int] = field(default_factory=dict)
    script: dict[str, list[Any]] = field(default_factory=dict)

    async def stream(
        self, kind: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        self.requests.append((kind, request))
        self.open[kind] = self.open.get(kind, 0) + 1
        try:
            for item in self.script.get(kind, []):
                if isinstance(item, tuple):
                    await context.abort(item[0], item[1])
                if item is None:
                    return
                yield item
            await asyncio.Event().wait()  # only a cancelled call ends here
        finally:
            self.open[kind] -= 1


class Destination(destination_pb2_grpc.DestinationServicer):
    def __init__(self, watches: Watches) -> None:
        self.watches = watches

    async def Get(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in self.watches.stream("get", request, context):
            yield item

    async def GetProfile(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in self.watches.stream("profile", request, context):
            yield item


class Inbound(inbound_pb2_grpc.InboundServerPoliciesServicer):
    def __init__(self, watches: Watches) -> None:
        self.watches = watches

    async def GetPort(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the proxy uses WatchPort")

    async def WatchPort(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in self.watches.stream("inbound", request, context):
            yield item


class Outbound(outbound_pb2_grpc.OutboundPoliciesServicer):
    def __init__(self, watches: Watches) -> None:
        self.watches = watches

    async def Get(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the proxy uses Watch")

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in self.watches.stream("outbound", request, context):
            yield item


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain=TD, control_plane_namespace="gossamer", now=now()
    )


@pytest.fixture
def issuer(trust: TrustMaterial) -> Issuer:
    return Issuer(trust.issuer.certificate, trust.issuer.private_key)


@pytest.fixture
def anchors_pem(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


def leaf_for(issuer: Issuer, name: str) -> Credentials:
    key = generate_private_key()
    issued = issuer.sign_leaf(key.public_key(), name, now=now())
    return Credentials(
        identity=name,
        key_pem=private_key_to_pem(key),
        chain_pem=certificates_to_pem([issued.certificate, issuer.certificate]),
        leaf_der=issued.leaf_der,
        not_before=issued.certificate.not_valid_before_utc.timestamp(),
        not_after=issued.certificate.not_valid_after_utc.timestamp(),
    )


def server_credentials(
    issuer: Issuer, name: str, *, anchors_pem: str | None = None
) -> grpc.ServerCredentials:
    """TLS for a grpcio server as ``name``; ``anchors_pem`` makes client certificates required."""
    leaf = leaf_for(issuer, name)
    chain = leaf.chain_pem
    return grpc.ssl_server_credentials(
        [(leaf.key_pem, chain)],
        root_certificates=anchors_pem.encode() if anchors_pem else None,
        require_client_auth=anchors_pem is not None,
    )


@contextlib.asynccontextmanager
async def grpcio_server(
    register: Callable[[grpc.aio.Server], None], credentials: grpc.ServerCredentials | None = None
) -> AsyncIterator[str]:
    server = grpc.aio.server()
    register(server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def certify_request(name: str = WEB) -> identity_pb2.CertifyRequest:
    return identity_pb2.CertifyRequest(
        identity=name,
        token=TOKEN,
        certificate_signing_request=build_csr(generate_private_key(), name),
    )


# --- no grpcio in the sidecar --------------------------------------------------------------------


def test_importing_the_proxy_does_not_load_grpcio() -> None:
    code = (
        "import sys, gossamer_proxy.app, gossamer_proxy.__main__\n"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


async def test_a_running_proxy_talks_to_its_control_plane_without_grpcio(
    issuer: Issuer, anchors_pem: str, tmp_path: Path
) -> None:
    identity = Identity(issuer)
    watches = Watches(
        script={"profile": [destination_pb2.DestinationProfile(fully_qualified_name="")]}
    )
    token = tmp_path / "token"
    token.write_bytes(TOKEN)
    backend = socket.create_server(("127.0.0.1", 0))

    def control(server: grpc.aio.Server) -> None:
        destination_pb2_grpc.add_DestinationServicer_to_server(Destination(watches), server)
        inbound_pb2_grpc.add_InboundServerPoliciesServicer_to_server(Inbound(watches), server)
        outbound_pb2_grpc.add_OutboundPoliciesServicer_to_server(Outbound(watches), server)

    async with (
        grpcio_server(
            lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(identity, s),
            server_credentials(issuer, IDENTITY_SVC),
        ) as identity_addr,
        grpcio_server(control, server_credentials(issuer, DESTINATION_SVC)) as control_addr,
    ):
        env = {
            **os.environ,
            "LINKERD2_PROXY_LOG": "info",
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "2s",
            "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": f"127.0.0.1:{backend.getsockname()[1]}",
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": WEB,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": str(token),
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR": identity_addr,
            "LINKERD2_PROXY_IDENTITY_SVC_NAME": IDENTITY_SVC,
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": control_addr,
            "LINKERD2_PROXY_DESTINATION_SVC_NAME": DESTINATION_SVC,
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": "127.0.0.0/8",
            "LINKERD2_PROXY_POLICY_SVC_ADDR": control_addr,
            "LINKERD2_PROXY_POLICY_SVC_NAME": DESTINATION_SVC,
            "LINKERD2_PROXY_POLICY_WORKLOAD": '{"ns":"emojivoto","pod":"web-0"}',
        }
        # The real entry point, with an exit hook that reports the modules it ended with.
        code = (
            "import atexit, json, runpy, sys\n"
            "atexit.register(lambda: print(json.dumps(sorted(m for m in sys.modules "
            "if m == 'grpc' or m.startswith('grpc.'))), flush=True))\n"
            "runpy.run_module('gossamer_proxy', run_name='__main__', alter_sys=True)\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        logs: list[dict[str, Any]] = []
        reading = asyncio.create_task(_read_logs(proc.stderr, logs))
        try:
            await wait_until(lambda: any(e.get("event") == "proxy_started" for e in logs))
            started = next(e for e in logs if e.get("event") == "proxy_started")
            await wait_until(
                lambda: bool(identity.issued) and any(k == "inbound" for k, _ in watches.requests)
            )
            # Outbound traffic makes the proxy open destination (and policy) watches.
            host, port = split_host_port(started["outbound"][0])
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
            await writer.drain()
            await wait_until(lambda: any(k == "profile" for k, _ in watches.requests))
            writer.close()
            maps = await asyncio.to_thread(Path(f"/proc/{proc.pid}/maps").read_text)
            assert "cygrpc" not in maps, "grpcio's C core is mapped into the proxy"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            assert proc.stdout is not None
            stdout = await asyncio.wait_for(proc.stdout.read(), 30)
            await asyncio.wait_for(proc.wait(), 30)
            await reading
            backend.close()
    assert proc.returncode == 0, logs[-5:]
    assert identity.issued == [WEB]
    inbound = [r for k, r in watches.requests if k == "inbound"]
    assert inbound
    assert inbound[0].workload == '{"ns":"emojivoto","pod":"web-0"}'
    assert json.loads(stdout.decode().strip().splitlines()[-1]) == []


async def _read_logs(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    """Collect the proxy's JSON log lines (and keep its stderr pipe drained)."""
    async for line in stream:
        with contextlib.suppress(ValueError):
            into.append(json.loads(line))


# --- TLS to the control plane --------------------------------------------------------------------


async def test_tls_verifies_the_server_identity_and_refuses_a_wrong_one(
    issuer: Issuer, anchors_pem: str
) -> None:
    identity = Identity(issuer)
    other = generate_trust_anchor_and_issuer(
        trust_domain=TD, control_plane_namespace="gossamer", now=now()
    )
    other_pem = certificates_to_pem([other.trust_anchor.certificate]).decode()
    async with grpcio_server(
        lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(identity, s),
        server_credentials(issuer, IDENTITY_SVC),
    ) as addr:
        good = control_channel(addr, server_name=IDENTITY_SVC, trust_anchors_pem=anchors_pem)
        wrong_name = control_channel(addr, server_name=WEB, trust_anchors_pem=anchors_pem)
        wrong_ca = control_channel(addr, server_name=IDENTITY_SVC, trust_anchors_pem=other_pem)
        plaintext = control_channel(addr, server_name=None, trust_anchors_pem=None)
        try:
            response = await unary_call(
                identity_grpc.IdentityStub(good).Certify, certify_request(), deadline=10
            )
            assert response.leaf_certificate
            for channel in (wrong_name, wrong_ca):
                with pytest.raises(RpcError) as info:
                    await unary_call(
                        identity_grpc.IdentityStub(channel).Certify, certify_request(), deadline=10
                    )
                assert info.value.status is Status.UNAVAILABLE
                assert "TLS handshake failed" in info.value.details
            with pytest.raises(RpcError) as plain:
                await unary_call(
                    identity_grpc.IdentityStub(plaintext).Certify, certify_request(), deadline=10
                )
            assert plain.value.status in (Status.UNAVAILABLE, Status.INTERNAL)
        finally:
            for channel in (good, wrong_name, wrong_ca, plaintext):
                channel.close()
    assert identity.issued == [WEB]  # only the verified channel got through


async def test_the_proxy_certificate_is_presented_when_the_server_requires_one(
    issuer: Issuer, anchors_pem: str
) -> None:
    identity = Identity(issuer)
    mine = leaf_for(issuer, WEB)
    async with grpcio_server(
        lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(identity, s),
        server_credentials(issuer, IDENTITY_SVC, anchors_pem=anchors_pem),
    ) as addr:
        with_cert = control_channel(
            addr, server_name=IDENTITY_SVC, trust_anchors_pem=anchors_pem, credentials=mine
        )
        without = control_channel(addr, server_name=IDENTITY_SVC, trust_anchors_pem=anchors_pem)
        try:
            await unary_call(
                identity_grpc.IdentityStub(with_cert).Certify, certify_request(), deadline=10
            )
            with pytest.raises(RpcError) as info:
                await unary_call(
                    identity_grpc.IdentityStub(without).Certify, certify_request(), deadline=10
                )
            assert info.value.status is Status.UNAVAILABLE
        finally:
            with_cert.close()
            without.close()
    assert identity.peers == [True]


async def test_a_channel_opened_before_certification_presents_the_certificate_it_gets_later(
    issuer: Issuer, anchors_pem: str
) -> None:
    """Discovery and policy channels open with the proxy, before its first certificate; the
    control plane must still see the proxy's identity once it has one (``client_id``)."""
    identity = Identity(issuer)
    current: list[Credentials | None] = [None]
    async with grpcio_server(
        lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(identity, s),
        server_credentials(issuer, IDENTITY_SVC, anchors_pem=anchors_pem),
    ) as addr:
        channel = control_channel(
            addr,
            server_name=IDENTITY_SVC,
            trust_anchors_pem=anchors_pem,
            credentials=lambda: current[0],
        )
        try:
            stub = identity_grpc.IdentityStub(channel)
            with pytest.raises(RpcError):  # no certificate yet: this server requires one
                await unary_call(stub.Certify, certify_request(), deadline=10)
            current[0] = leaf_for(issuer, WEB)
            await unary_call(stub.Certify, certify_request(), deadline=10)
        finally:
            channel.close()
    assert identity.peers == [True]


class GrpclibIdentity(identity_grpc.IdentityBase):
    """A grpclib server, so the test controls TLS and ALPN itself."""

    def __init__(self, issuer: Issuer) -> None:
        self.inner = Identity(issuer)

    async def Certify(
        self,
        stream: GrpclibStream[identity_pb2.CertifyRequest, identity_pb2.CertifyResponse],
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        checked = check_csr(
            load_csr(request.certificate_signing_request, allow_pem=False), request.identity
        )
        issued = self.inner.issuer.sign_leaf(checked.public_key, request.identity, now=now())
        await stream.send_message(
            identity_pb2.CertifyResponse(
                leaf_certificate=issued.leaf_der,
                intermediate_certificates=list(issued.intermediates_der),
            )
        )


async def test_a_control_plane_without_alpn_is_still_reached_over_http2(
    issuer: Issuer, anchors_pem: str
) -> None:
    leaf = leaf_for(issuer, IDENTITY_SVC)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    chain = leaf.chain_pem
    key_fd = os.memfd_create("key")
    chain_fd = os.memfd_create("chain")
    try:
        os.write(key_fd, leaf.key_pem)
        os.write(chain_fd, chain)
        context.load_cert_chain(f"/proc/self/fd/{chain_fd}", f"/proc/self/fd/{key_fd}")
    finally:
        os.close(key_fd)
        os.close(chain_fd)
    # No set_alpn_protocols: the server selects no protocol, like Linkerd's control plane.
    server = GrpclibServer([GrpclibIdentity(issuer)])
    await server.start("127.0.0.1", 0, ssl=context)
    assert isinstance(server._server, asyncio.Server)
    port = server._server.sockets[0].getsockname()[1]
    channel = control_channel(
        f"127.0.0.1:{port}", server_name=IDENTITY_SVC, trust_anchors_pem=anchors_pem
    )
    try:
        response = await unary_call(
            identity_grpc.IdentityStub(channel).Certify, certify_request(), deadline=10
        )
        assert response.leaf_certificate
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


# --- errors ---------------------------------------------------------------------------------------


async def test_a_refused_connection_is_unavailable() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = control_channel(f"127.0.0.1:{port}", server_name=None, trust_anchors_pem=None)
    try:
        with pytest.raises(RpcError) as info:
            await unary_call(
                identity_grpc.IdentityStub(channel).Certify, certify_request(), deadline=5
            )
        assert info.value.status is Status.UNAVAILABLE
        assert "connection failed" in info.value.details
    finally:
        channel.close()


async def test_a_slow_server_is_deadline_exceeded(issuer: Issuer) -> None:
    identity = Identity(issuer, delay=5.0)
    async with grpcio_server(
        lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(identity, s)
    ) as addr:
        channel = control_channel(addr, server_name=None, trust_anchors_pem=None)
        try:
            with pytest.raises(RpcError) as info:
                await unary_call(
                    identity_grpc.IdentityStub(channel).Certify, certify_request(), deadline=0.2
                )
            assert info.value.status is Status.DEADLINE_EXCEEDED
        finally:
            channel.close()


async def test_a_server_status_is_kept(issuer: Issuer) -> None:
    identity = Identity(issuer)
    async with grpcio_server(
        lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(identity, s)
    ) as addr:
        channel = control_channel(addr, server_name=None, trust_anchors_pem=None)
        request = certify_request()
        request.token = b"wrong"
        try:
            with pytest.raises(RpcError) as info:
                await unary_call(identity_grpc.IdentityStub(channel).Certify, request, deadline=5)
            assert info.value.status is Status.UNAUTHENTICATED
            assert info.value.details == "bad token"
            assert str(info.value) == "UNAUTHENTICATED: bad token"
        finally:
            channel.close()


async def test_a_peer_that_is_not_http2_is_a_clear_error() -> None:
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(http1, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = control_channel(f"127.0.0.1:{port}", server_name=None, trust_anchors_pem=None)
    try:
        with pytest.raises(RpcError) as info:
            await unary_call(
                identity_grpc.IdentityStub(channel).Certify, certify_request(), deadline=5
            )
        assert info.value.status in (Status.UNAVAILABLE, Status.INTERNAL)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:8086", ("127.0.0.1", 8086)),
        ("[::1]:8090", ("::1", 8090)),
        ("dst.gossamer.svc.cluster.local.:8086", ("dst.gossamer.svc.cluster.local", 8086)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_control_addresses_are_split(addr: str, expected: tuple[str, int]) -> None:
    assert split_host_port(addr) == expected


@pytest.mark.parametrize(
    "addr", ["", "8086", "host", ":8086", "host:", "host:x", "h:70000", "::1:80"]
)
def test_bad_control_addresses_are_refused(addr: str) -> None:
    with pytest.raises(ControlAddressError, match="control-plane address"):
        split_host_port(addr)


def test_a_bad_identity_address_stops_the_start(anchors_pem: str, tmp_path: Path) -> None:
    config = IdentityConfig(WEB, anchors_pem, tmp_path / "token", "identity.gossamer.svc")
    with pytest.raises(IdentityConfigError, match="LINKERD2_PROXY_IDENTITY_SVC_ADDR"):
        IdentityClient(config)


def test_tls_without_trust_anchors_is_refused() -> None:
    with pytest.raises(ValueError, match="needs trust anchors"):
        control_channel("127.0.0.1:1", server_name=IDENTITY_SVC, trust_anchors_pem=None)


# --- server streams ----------------------------------------------------------------------------


async def test_server_stream_ends_cleanly_reports_status_and_resets_when_left() -> None:
    update = destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=True))
    watches = Watches(
        script={
            "get": [update, None],  # one message, then a clean end
            "profile": [
                destination_pb2.DestinationProfile(fully_qualified_name="web"),
                (grpc.StatusCode.FAILED_PRECONDITION, "not a service"),
            ],
        }
    )
    async with grpcio_server(
        lambda s: destination_pb2_grpc.add_DestinationServicer_to_server(Destination(watches), s)
    ) as addr:
        channel = control_channel(addr, server_name=None, trust_anchors_pem=None)
        stub = destination_grpc.DestinationStub(channel)
        request = destination_pb2.GetDestination(path="web:80")
        try:
            async with ServerStream(stub.Get, request) as call:
                assert await call.next() == update
                assert await call.next() is None
            async with ServerStream(stub.GetProfile, request) as call:
                first = await call.next()
                assert first is not None
                assert first.fully_qualified_name == "web"
                with pytest.raises(RpcError) as info:
                    await call.next()
                assert info.value.status is Status.FAILED_PRECONDITION
                assert info.value.details == "not a service"
            watches.script["get"] = [update]  # then stays open
            async with ServerStream(stub.Get, request) as call:
                assert await call.next() == update
                assert watches.open["get"] == 1
            # Leaving early resets the stream: the server sees the call cancelled.
            await wait_until(lambda: watches.open["get"] == 0)
        finally:
            channel.close()


async def test_server_stream_to_a_dead_address_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = control_channel(f"127.0.0.1:{port}", server_name=None, trust_anchors_pem=None)
    stub = destination_grpc.DestinationStub(channel)
    try:
        with pytest.raises(RpcError) as info:
            async with ServerStream(stub.Get, destination_pb2.GetDestination(path="x:1")):
                pass
        assert info.value.status is Status.UNAVAILABLE
    finally:
        channel.close()


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.finals: list[tuple[Status, str]] = []

    def on_message(self, message: Any) -> None:
        self.messages.append(message)

    def on_reconnect(self) -> None:
        pass

    def on_final(self, code: Status, details: str) -> None:
        self.finals.append((code, details))


async def test_a_control_plane_that_never_finishes_the_handshake_is_retried(
    anchors_pem: str,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never answer the TLS hello

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = control_channel(
        f"127.0.0.1:{port}", server_name=DESTINATION_SVC, trust_anchors_pem=anchors_pem
    )
    stub = destination_grpc.DestinationStub(channel)
    request = destination_pb2.GetDestination(path="web:80")
    watch: StreamWatch[destination_pb2.Update] = StreamWatch(
        "get:web:80",
        lambda: ServerStream(stub.Get, request),
        _Recorder(),
        config=StreamConfig(initial_timeout=0.2, backoff=Backoff(0.01, 0.02)),
    )
    task = asyncio.create_task(watch.run())
    try:
        # The initial timeout covers the handshake: the watch gives up on it and reconnects.
        await wait_until(lambda: len(accepted) >= 3)
        assert watch.streams_opened >= 3
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        channel.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_final_status_stops_the_watch_with_the_grpclib_status() -> None:
    watches = Watches(script={"profile": [(grpc.StatusCode.INVALID_ARGUMENT, "no profile")]})
    async with grpcio_server(
        lambda s: destination_pb2_grpc.add_DestinationServicer_to_server(Destination(watches), s)
    ) as addr:
        channel = control_channel(addr, server_name=None, trust_anchors_pem=None)
        stub = destination_grpc.DestinationStub(channel)
        recorder = _Recorder()
        watch: StreamWatch[destination_pb2.DestinationProfile] = StreamWatch(
            "profile:bad:80",
            lambda: ServerStream(stub.GetProfile, destination_pb2.GetDestination(path="bad:80")),
            recorder,
            config=StreamConfig(initial_timeout=5.0, backoff=Backoff(0.01, 0.02)),
            final_codes=(Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION),
        )
        try:
            await asyncio.wait_for(watch.run(), 20)  # returns: the status is final
        finally:
            channel.close()
    assert recorder.finals == [(Status.INVALID_ARGUMENT, "no profile")]
    assert watch.streams_opened == 1
