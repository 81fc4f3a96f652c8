"""The viz tap service: its API's pure parts, its authorization, and a whole call against fake
proxies (real mTLS on loopback, the proxies' own check of the tap identity)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.x509.oid import NameOID
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapBase
from gossamer_cli.viz.resources import Resource, parse_resource
from gossamer_cli.viz.tap_identity import TapCredentials, tap_identity
from gossamer_cli.viz.tap_query import TapFilters, TapTarget
from gossamer_cli.viz.tap_requests import TapRequests
from gossamer_cli.viz.tap_service import api, authz
from gossamer_cli.viz.tap_service.auth import Authenticator
from gossamer_cli.viz.tap_service.bounds import Budget
from gossamer_cli.viz.tap_service.server import TapService
from gossamer_kube.client import TokenReviewResult
from gossamer_tls import (
    Issuer,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)
from grpclib.server import Server, Stream

TapEvent = tap_pb2.TapEvent
PREFIX = "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/"

# -- paths and queries -----------------------------------------------------------------------


def test_paths_name_the_resource_as_linkerds_aggregated_api() -> None:
    found = api.parse_path(PREFIX + "demo/deployments/web/tap")
    assert (found.namespace, found.plural, found.name) == ("demo", "deployments", "web")
    assert found.resource == parse_resource("deploy/web")
    whole = api.parse_path(PREFIX + "demo/tap")
    assert (whole.plural, whole.name, whole.resource.kind.name) == (
        "namespaces",
        "demo",
        "namespace",
    )
    assert api.tap_path("demo", parse_resource("deploy").kind, "web") == (
        PREFIX + "demo/deployments/web/tap"
    )
    assert api.tap_path("demo", parse_resource("ns").kind, "demo") == PREFIX + "demo/tap"
    assert api.parse_path(api.tap_path("demo", parse_resource("svc").kind, "web")).plural == (
        "services"
    )


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (PREFIX + "demo/authoritys/web/tap", 404),  # not a tappable kind
        (PREFIX + "demo/deployments/web", 404),
        (PREFIX + "Demo/deployments/web/tap", 400),
        (PREFIX + "demo/deployments/we%22b/tap", 400),
        ("/api/v1/namespaces/demo/pods", 404),
        (PREFIX + "demo/deployments/web/tap/extra", 404),
    ],
)
def test_bad_paths_are_refused(path: str, status: int) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.parse_path(path)
    assert refused.value.status == status


def test_a_query_round_trips_and_takes_defaults() -> None:
    assert api.parse_query(b"", namespace="demo") == api.TapQuery(TapFilters(to_namespace="demo"))
    query = api.TapQuery(
        TapFilters(to=parse_resource("deploy/slow"), to_namespace="other", method="GET", path="/x"),
        max_rps=5,
        seconds=2,
        max_events=7,
        headers=True,
    )
    assert api.parse_query(query.body(), namespace="demo") == query


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[]", 400),
        (b"{", 400),
        (b'{"seconds": 601}', 400),  # beyond the bound on time
        (b'{"seconds": 0}', 400),
        (b'{"maxEvents": 100001}', 400),  # beyond the bound on events
        (b'{"maxEvents": true}', 400),
        (b'{"seconds": NaN}', 400),
        (b'{"maxRps": -1}', 400),
        (b'{"surprise": 1}', 400),
        (b'{"match": {"path": "no-slash"}}', 400),
        (b'{"match": {"to": "galaxy/far"}}', 400),
        (b'{"match": {"toNamespace": "Bad_NS"}}', 400),
        (b'{"match": {"method": ""}}', 400),
        (b" " * (api.MAX_BODY + 1), 413),
    ],
)
def test_bad_queries_are_refused(body: bytes, status: int) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.parse_query(body, namespace="demo")
    assert refused.value.status == status


def _event(stream: int, status: int | None = None) -> TapEvent:
    event = TapEvent(proxy_direction=TapEvent.INBOUND)
    event.source.CopyFrom(tcp_address_to_proto("10.0.0.5", 41000))
    event.destination.CopyFrom(tcp_address_to_proto("10.0.0.9", 8080))
    event.source_meta.labels["tls"] = "true"
    if status is None:
        init = event.http.request_init
        init.id.base, init.id.stream = 1, stream
        init.method.registered = 0  # GET
        init.authority, init.path = "web:8080", f"/item/{stream}"
    else:
        rsp = event.http.response_init
        rsp.id.base, rsp.id.stream = 1, stream
        rsp.http_status = status
        rsp.since_request_init.nanos = 1_500_000
    return event


def test_stream_lines_round_trip_and_malformed_lines_are_errors() -> None:
    event = _event(3)
    source, back = api.decode_line(api.encode_event("demo/web-1", event))  # type: ignore[misc]
    assert (source, back) == ("demo/web-1", event)
    end = api.decode_line(api.encode_end("time-limit", [("demo/web-2", "UNAVAILABLE")]))
    assert end == api.StreamEnd("time-limit", [("demo/web-2", "UNAVAILABLE")])
    for bad in (b"[1]", b'{"source": 1, "event": {}}', b'{"end": "x", "errors": [[1]]}'):
        with pytest.raises(ValueError, match=r"."):
            api.decode_line(bad)


# -- authentication and authorization --------------------------------------------------------


def _certificate(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Certificate:
    key = generate_private_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    name = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    from cryptography.hazmat.primitives import hashes

    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )


def test_a_client_certificate_is_a_user_and_its_groups() -> None:
    subject = authz.subject_from_certificate(_certificate("alice", ("dev", "ops")))
    assert subject == authz.Subject("alice", ("dev", "ops", "system:authenticated"))
    with pytest.raises(authz.AuthError) as refused:
        authz.subject_from_certificate(_certificate(""))
    assert refused.value.status == 401


def test_every_authenticated_user_is_in_system_authenticated_once() -> None:
    named = authz.Subject("alice", ("system:authenticated", "devs"))
    assert authz.with_authenticated_group(named) == named  # the aggregator's header has it
    assert authz.with_authenticated_group(authz.Subject("bob")).groups == ("system:authenticated",)
    anonymous = authz.Subject("system:anonymous", ("system:unauthenticated",))
    assert authz.with_authenticated_group(anonymous) == anonymous


def test_bearer_tokens_are_parsed_strictly() -> None:
    assert authz.bearer_token(None) is None
    assert authz.bearer_token("Bearer abc.def") == "abc.def"
    for bad in ("Basic abc", "Bearer", "Bearer a b", ""):
        with pytest.raises(authz.AuthError):
            authz.bearer_token(bad)


def test_the_review_asks_to_watch_the_resources_tap_subresource() -> None:
    target = api.parse_path(PREFIX + "demo/pods/web-1/tap")
    review = authz.access_review(authz.Subject("system:serviceaccount:x:y", ("g",), "u1"), target)
    assert review["spec"] == {
        "user": "system:serviceaccount:x:y",
        "groups": ["g"],
        "uid": "u1",
        "resourceAttributes": {
            "group": "tap.linkerd.io",
            "version": "v1alpha1",
            "resource": "pods",
            "subresource": "tap",
            "verb": "watch",
            "namespace": "demo",
            "name": "web-1",
        },
    }


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ({"allowed": True}, True),
        ({"allowed": True, "denied": True}, False),
        ({"allowed": False, "reason": "no"}, False),
        ({"allowed": "true"}, False),  # only a real true allows
        ({}, False),
        (None, False),
    ],
)
def test_only_an_explicit_allow_allows(status: dict[str, Any] | None, allowed: bool) -> None:
    assert authz.decision(status).allowed is allowed


# -- bounds ----------------------------------------------------------------------------------


def test_the_budget_ends_on_events_or_on_time() -> None:
    budget = Budget.starting(100.0, seconds=5, max_events=2)
    assert budget.admit(101.0)
    assert budget.admit(102.0)
    assert not budget.admit(102.5)
    assert budget.exhausted(102.5) == "max-events"
    timed = Budget.starting(100.0, seconds=5, max_events=10)
    assert timed.admit(104.9)
    assert timed.remaining(103.0) == 2.0
    assert not timed.admit(105.0)
    assert timed.exhausted(105.0) == "time-limit"
    with pytest.raises(ValueError, match="room"):
        Budget.starting(0.0, seconds=0, max_events=1)


def test_tap_events_fold_into_request_rows_newest_first() -> None:
    table = TapRequests()
    for event in (_event(1), _event(2), _event(1, status=200), _event(9, status=500)):
        table.add("demo/web-1", event)
    table.add("demo/web-2", _event(1, status=503))  # another proxy's stream 1: not this row
    rows = table.latest()
    assert [r.path for r in rows] == ["/item/2", "/item/1"]
    assert (rows[1].method, rows[1].status, rows[1].latency, rows[1].tls) == (
        "GET",
        200,
        "1ms",
        "true",
    )
    assert rows[0].status is None
    assert not rows[1].failed


# -- a whole call: fake proxies over mTLS ----------------------------------------------------

TRUST_DOMAIN = "cluster.local"


@dataclass
class Mesh:
    anchors_pem: bytes
    issuer: Issuer
    files: Path

    def leaf(self, identity: str) -> tuple[bytes, bytes]:
        key = generate_private_key()
        issued = self.issuer.sign_leaf(
            key.public_key(), identity, now=dt.datetime.now(dt.UTC), lifetime=dt.timedelta(hours=1)
        )
        chain = [issued.certificate] + [
            x509.load_der_x509_certificate(d) for d in issued.intermediates_der
        ]
        return certificates_to_pem(chain), private_key_to_pem(key)

    def credentials(self, identity: str) -> TapCredentials:
        chain, key = self.leaf(identity)
        return TapCredentials(identity, chain, key, self.anchors_pem)

    def server_context(self, identity: str) -> ssl.SSLContext:
        chain, key = self.leaf(identity)
        (self.files / f"{identity}.crt").write_bytes(chain)
        (self.files / f"{identity}.key").write_bytes(key)
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cadata=self.anchors_pem.decode()
        )
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.files / f"{identity}.crt", self.files / f"{identity}.key")
        context.set_alpn_protocols(["h2"])
        return context


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    material = generate_trust_anchor_and_issuer(
        trust_domain=TRUST_DOMAIN, control_plane_namespace="gossamer", now=dt.datetime.now(dt.UTC)
    )
    anchors = certificates_to_pem([material.trust_anchor.certificate])
    issuer = Issuer(material.issuer.certificate, material.issuer.private_key)
    return Mesh(anchors, issuer, tmp_path)


class FakeProxy(TapBase):
    """A proxy's tap server: only the tap identity may observe; streams numbered requests."""

    def __init__(self, tap_name: str, *, events: int | None) -> None:
        self.tap_name = tap_name
        self.events = events  # None: one event, then nothing until cancelled

    async def Observe(self, stream: Stream[tap_pb2.ObserveRequest, TapEvent]) -> None:
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        cert = stream.peer.cert() or {}
        names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
        if self.tap_name not in names:
            raise GRPCError(Status.PERMISSION_DENIED, "not the tap service")
        await stream.recv_message()
        if self.events is None:
            await stream.send_message(_event(1))
            await asyncio.Event().wait()
        for n in range(self.events):
            await stream.send_message(_event(n + 1))


@dataclass
class FakeKube:
    users: dict[str, str]
    allowed: set[str]
    reviews: list[dict[str, Any]] = field(default_factory=list)

    async def token_review(self, token: str) -> TokenReviewResult:
        user = self.users.get(token)
        return TokenReviewResult(authenticated=user is not None, username=user or "")

    async def subject_access_review(self, review: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(review)
        return {"allowed": review["spec"]["user"] in self.allowed}


@dataclass
class FakeCredentials:
    value: TapCredentials

    async def current(self) -> TapCredentials:
        return self.value


@pytest.fixture
async def proxies(mesh: Mesh) -> AsyncIterator[tuple[list[TapTarget], int]]:
    """Two fake proxies on 127.0.0.1 and 127.0.0.2 (one port), each with its pod's identity."""
    tap_name = tap_identity("gossamer", TRUST_DOMAIN)
    servers, targets, port = [], [], 0
    for n, (ip, events) in enumerate((("127.0.0.1", 1000), ("127.0.0.2", 1000))):
        identity = f"web.demo.serviceaccount.identity.gossamer.{TRUST_DOMAIN}"
        server = Server([FakeProxy(tap_name, events=events)])
        await server.start(ip, port, ssl=mesh.server_context(identity))
        if n == 0:
            port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        servers.append(server)
        targets.append(TapTarget("demo", f"web-{n}", ip, identity))
    yield targets, port
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def service_client() -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []

    async def make(service: TapService) -> TestClient[Any, Any]:
        client = TestClient(TestServer(service.app()))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def _service(
    mesh: Mesh, kube: FakeKube, targets: list[TapTarget], port: int, identity: str
) -> tuple[TapService, list[Resource]]:
    asked: list[Resource] = []

    async def resolve(resource: Resource, namespace: str) -> list[TapTarget]:
        asked.append(resource)
        return targets

    service = TapService(
        Authenticator(kube),  # type: ignore[arg-type]
        resolve,
        FakeCredentials(mesh.credentials(identity)),
        port=port,
    )
    return service, asked


def _lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


async def test_an_authorized_caller_gets_both_proxies_events_up_to_the_bound(
    mesh: Mesh, proxies: tuple[list[TapTarget], int], service_client: Any
) -> None:
    targets, port = proxies
    kube = FakeKube({"good": "alice"}, {"alice"})
    service, asked = _service(mesh, kube, targets, port, tap_identity("gossamer", TRUST_DOMAIN))
    client = await service_client(service)
    body = api.TapQuery(max_rps=0, seconds=30, max_events=50).body()
    response = await client.post(
        PREFIX + "demo/deployments/web/tap", data=body, headers={"Authorization": "Bearer good"}
    )
    assert response.status == 200
    lines = _lines(await response.text())
    events = lines[:-1]
    assert len(events) == 50
    assert lines[-1] == {"end": "max-events", "errors": []}
    assert {e["source"] for e in events} <= {"demo/web-0", "demo/web-1"}
    assert asked == [parse_resource("deploy/web")]
    assert kube.reviews[0]["spec"]["resourceAttributes"]["resource"] == "deployments"


async def test_the_call_ends_on_its_time_bound(mesh: Mesh, service_client: Any) -> None:
    tap_name = tap_identity("gossamer", TRUST_DOMAIN)
    identity = f"web.demo.serviceaccount.identity.gossamer.{TRUST_DOMAIN}"
    server = Server([FakeProxy(tap_name, events=None)])
    await server.start("127.0.0.1", 0, ssl=mesh.server_context(identity))
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        kube = FakeKube({"good": "alice"}, {"alice"})
        target = TapTarget("demo", "web-0", "127.0.0.1", identity)
        service, _ = _service(mesh, kube, [target], port, tap_name)
        client = await service_client(service)
        body = api.TapQuery(max_rps=0, seconds=0.5, max_events=100).body()
        response = await client.post(
            PREFIX + "demo/pods/web-0/tap", data=body, headers={"Authorization": "Bearer good"}
        )
        lines = _lines(await response.text())
        assert len(lines) == 2
        assert lines[-1] == {"end": "time-limit", "errors": []}
    finally:
        server.close()
        await server.wait_closed()


async def test_a_proxy_refuses_any_identity_but_the_tap_services(
    mesh: Mesh, proxies: tuple[list[TapTarget], int], service_client: Any
) -> None:
    targets, port = proxies
    kube = FakeKube({"good": "alice"}, {"alice"})
    impostor = "web.demo.serviceaccount.identity.gossamer.cluster.local"
    service, _ = _service(mesh, kube, targets, port, impostor)
    client = await service_client(service)
    body = api.TapQuery(max_rps=0, seconds=5, max_events=10).body()
    response = await client.post(
        PREFIX + "demo/deployments/web/tap", data=body, headers={"Authorization": "Bearer good"}
    )
    lines = _lines(await response.text())
    assert lines[-1]["end"] == "proxies-ended"
    assert sorted(pod for pod, _ in lines[-1]["errors"]) == ["demo/web-0", "demo/web-1"]
    assert all("PERMISSION_DENIED" in error for _, error in lines[-1]["errors"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),  # no credentials
        ({"Authorization": "Bearer forged"}, 401),  # the token review says no
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401),
        ({"Authorization": "Bearer weak"}, 403),  # a real user without the right
    ],
)
async def test_unauthenticated_and_unauthorized_callers_never_reach_a_proxy(
    mesh: Mesh, service_client: Any, headers: dict[str, str], status: int
) -> None:
    kube = FakeKube({"good": "alice", "weak": "mallory"}, {"alice"})
    service, asked = _service(mesh, kube, [], 1, tap_identity("gossamer", TRUST_DOMAIN))
    client = await service_client(service)
    response = await client.post(PREFIX + "demo/deployments/web/tap", data=b"{}", headers=headers)
    assert response.status == status
    assert asked == []  # nothing was even listed
    if status == 403:
        assert "mallory may not watch deployments/web/tap" in await response.text()


async def test_a_resource_without_pods_is_not_found(mesh: Mesh, service_client: Any) -> None:
    kube = FakeKube({"good": "alice"}, {"alice"})
    service, _ = _service(mesh, kube, [], 1, tap_identity("gossamer", TRUST_DOMAIN))
    client = await service_client(service)
    response = await client.post(
        PREFIX + "demo/deployments/none/tap", headers={"Authorization": "Bearer good"}
    )
    assert response.status == 404
    assert "no meshed, running pods" in await response.text()


# -- over HTTPS: the callers' client, the dashboard's tap page, client certificates ----------


def _client_ca_and_user(user: str) -> tuple[bytes, bytes, bytes]:
    """(CA PEM, client certificate PEM for ``user`` in group ``devs``, its key PEM)."""
    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.UTC)
    ca_key = generate_private_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-client-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = generate_private_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devs"),
            x509.NameAttribute(NameOID.COMMON_NAME, user),
        ]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificates_to_pem([ca]), certificates_to_pem([leaf]), private_key_to_pem(key)


@pytest.fixture
async def https_service(
    mesh: Mesh, proxies: tuple[list[TapTarget], int], tmp_path: Path
) -> AsyncIterator[tuple[Any, FakeKube, bytes, bytes]]:
    """The tap service over TLS: (endpoint, its kube, user cert PEM, user key PEM)."""
    from gossamer_cli.viz.tap_service.client import TapServiceEndpoint
    from gossamer_cli.viz.tap_service.server import server_context
    from gossamer_cli.viz.tap_service.serving import generate_serving

    targets, port = proxies
    kube = FakeKube({"good": "alice", "weak": "mallory"}, {"alice", "carol"})
    service, _ = _service(mesh, kube, targets, port, tap_identity("gossamer", TRUST_DOMAIN))
    serving = generate_serving(viz_namespace="gossamer-viz", now=dt.datetime.now(dt.UTC))
    (tmp_path / "tls.crt").write_bytes(serving.crt_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    client_ca, user_cert, user_key = _client_ca_and_user("carol")
    context = server_context(
        str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), client_ca.decode()
    )
    runner = web.AppRunner(service.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint = TapServiceEndpoint(f"https://127.0.0.1:{bound}", serving.ca_pem)
    yield endpoint, kube, user_cert, user_key
    await runner.cleanup()


async def test_the_dashboard_tap_page_shows_requests_through_the_service(
    https_service: tuple[Any, FakeKube, bytes, bytes],
) -> None:
    from gossamer_cli.viz.promapi import PrometheusClient
    from gossamer_cli.viz.web import pages
    from gossamer_cli.viz.web.data import DashboardData, TapAccess
    from gossamer_kube.config import KubeConfig

    endpoint, kube, _, _ = https_service
    config = KubeConfig(server="https://127.0.0.1:1", token="good")
    data = DashboardData(
        PrometheusClient("http://127.0.0.1:1"), None, tap=TapAccess(endpoint, config)
    )
    view = await data.tap("demo", "deployment", "web")
    assert view.error == ""
    assert view.requests
    page = pages.tap_page(view, now="now")
    row = page.split('id="tap"', 1)[1].split("</tr>", 2)[1]
    assert '<td class="method">GET</td>' in row
    assert '<td class="path">/item/' in row
    assert "<script" not in page
    assert kube.reviews[-1]["spec"]["user"] == "alice"


async def test_a_client_certificate_from_the_cluster_ca_authenticates(
    https_service: tuple[Any, FakeKube, bytes, bytes],
) -> None:
    from gossamer_cli.viz.tap_service.client import TapServiceCall
    from gossamer_kube.config import KubeConfig

    endpoint, kube, cert, key = https_service
    config = KubeConfig(server="https://127.0.0.1:1", client_cert_data=cert, client_key_data=key)
    query = api.TapQuery(max_rps=0, seconds=10, max_events=5)
    call = TapServiceCall(endpoint, config, "demo", parse_resource("deploy/web"), query)
    events = [item async for item in call.events()]
    assert len(events) == 5
    assert call.end == api.StreamEnd("max-events", [])
    assert kube.reviews[-1]["spec"]["user"] == "carol"
    assert kube.reviews[-1]["spec"]["groups"] == ["devs", "system:authenticated"]


async def test_the_client_reports_refusals_and_trusts_only_the_tap_ca(
    https_service: tuple[Any, FakeKube, bytes, bytes],
) -> None:
    from gossamer_cli.viz.tap_service.client import (
        TapServiceCall,
        TapServiceEndpoint,
        TapServiceError,
    )
    from gossamer_kube.config import KubeConfig

    endpoint, _, _, _ = https_service
    weak = KubeConfig(server="https://127.0.0.1:1", token="weak")
    call = TapServiceCall(endpoint, weak, "demo", parse_resource("deploy/web"), api.TapQuery())
    with pytest.raises(TapServiceError) as refused:
        [item async for item in call.events()]
    assert refused.value.status == 403
    other = TapServiceEndpoint(endpoint.url, endpoint.ca_pem, "tap.elsewhere.svc")
    good = KubeConfig(server="https://127.0.0.1:1", token="good")
    call = TapServiceCall(other, good, "demo", parse_resource("deploy/web"), api.TapQuery())
    with pytest.raises(OSError, match="certificate"):
        [item async for item in call.events()]


def _kubeconfig(path: Path, server: str) -> str:
    path.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def test_the_cli_finds_the_local_tap_service_or_taps_directly(tmp_path: Path) -> None:
    import click
    from gossamer_cli.viz.tap_cmd import _endpoint

    def no_apiserver(kubeconfig: str | None) -> None:
        return None

    local = _kubeconfig(tmp_path / "local.yaml", "https://127.0.0.1:6443")
    # No mesh running, no APIService: tap the proxies itself.
    assert _endpoint(tmp_path, None, None, local, no_apiserver) is None
    (tmp_path / "ready.json").write_text(json.dumps({"tap_url": None, "kubeconfig": local}))
    assert _endpoint(tmp_path, None, None, local, no_apiserver) is None  # no tap service
    (tmp_path / "ca.crt").write_bytes(b"CA")
    ready = {
        "tap_url": "https://127.0.0.1:8089",
        "tap_ca_file": str(tmp_path / "ca.crt"),
        "kubeconfig": local,
    }
    (tmp_path / "ready.json").write_text(json.dumps(ready))
    found = _endpoint(tmp_path, None, None, local, no_apiserver)
    assert (found.url, found.ca_pem, found.server_name) == (
        "https://127.0.0.1:8089",
        b"CA",
        "tap.gossamer-viz.svc",
    )
    explicit = _endpoint(tmp_path, "https://10.0.0.1:8089", tmp_path / "ca.crt")
    assert explicit.url == "https://10.0.0.1:8089"
    with pytest.raises(click.UsageError, match="--tap-ca-file"):
        _endpoint(tmp_path, "https://10.0.0.1:8089", None)
    with pytest.raises(click.BadParameter, match="HTTPS"):
        _endpoint(tmp_path, "http://10.0.0.1:8089", tmp_path / "ca.crt")


def test_the_cli_prefers_the_apiserver_and_shows_no_other_clusters_token_to_local_tap(
    tmp_path: Path,
) -> None:
    from gossamer_cli.viz.tap_cmd import _endpoint
    from gossamer_cli.viz.tap_service.client import TapServiceEndpoint
    from gossamer_kube.config import KubeConfig

    local = _kubeconfig(tmp_path / "local.yaml", "https://127.0.0.1:6443")
    remote = _kubeconfig(tmp_path / "remote.yaml", "https://prod.example:6443")
    (tmp_path / "ca.crt").write_bytes(b"CA")
    ready = {
        "tap_url": "https://127.0.0.1:8089",
        "tap_ca_file": str(tmp_path / "ca.crt"),
        "kubeconfig": local,
    }
    (tmp_path / "ready.json").write_text(json.dumps(ready))
    # A local mesh is running, but the kubeconfig is another cluster's: its token is never
    # sent to the local tap service.
    assert _endpoint(tmp_path, None, None, remote, lambda _: None) is None
    # The apiserver serves the tap API: it is preferred even with a local mesh running.
    apiserver = TapServiceEndpoint.apiserver(KubeConfig.load(remote))
    assert _endpoint(tmp_path, None, None, remote, lambda _: apiserver) is apiserver
    assert _endpoint(tmp_path, None, None, local, lambda _: apiserver) is apiserver
    # An explicit --tap-url is the caller's choice.
    explicit = _endpoint(tmp_path, "https://10.0.0.1:8089", tmp_path / "ca.crt", remote)
    assert not explicit.via_apiserver


async def test_a_query_sent_in_pieces_is_read_whole_and_a_huge_one_refused(
    mesh: Mesh, service_client: Any
) -> None:
    kube = FakeKube({"good": "alice"}, {"alice"})
    service, _ = _service(mesh, kube, [], 1, tap_identity("gossamer", TRUST_DOMAIN))
    client = await service_client(service)

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b'{"seconds": ', b"2, ", b'"maxEvents": 3}'):
            yield piece
            await asyncio.sleep(0)

    auth = {"Authorization": "Bearer good"}
    response = await client.post(PREFIX + "demo/pods/web-0/tap", data=pieces(), headers=auth)
    assert response.status == 404  # the query parsed; the fake resolver has no pods
    huge = b'{"match": {"path": "/' + b"a" * api.MAX_BODY + b'"}}'
    response = await client.post(PREFIX + "demo/pods/web-0/tap", data=huge, headers=auth)
    assert response.status == 413


# -- through the apiserver's aggregation layer: the front proxy, discovery --------------------


@dataclass
class _CA:
    pem: bytes
    key: Any
    name: x509.Name

    @classmethod
    def make(cls, common_name: str) -> _CA:
        from cryptography.hazmat.primitives import hashes

        now = dt.datetime.now(dt.UTC)
        key = generate_private_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(certificates_to_pem([cert]), key, name)

    def issue(self, common_name: str, tmp: Path) -> tuple[Path, Path]:
        from cryptography.hazmat.primitives import hashes

        now = dt.datetime.now(dt.UTC)
        key = generate_private_key()
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = tmp / f"{common_name}.crt", tmp / f"{common_name}.key"
        cert_file.write_bytes(certificates_to_pem([leaf]))
        key_file.write_bytes(private_key_to_pem(key))
        return cert_file, key_file


def _auth_config_map(front_ca: _CA, allowed: list[str]) -> dict[str, str]:
    return {
        "requestheader-client-ca-file": front_ca.pem.decode(),
        "requestheader-allowed-names": json.dumps(allowed),
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }


@dataclass
class Aggregated:
    url: str
    serving_ca: bytes
    kube: FakeKube
    files: Path
    user_ca: _CA
    front_ca: _CA

    async def post(
        self, client_cert: tuple[Path, Path] | None, headers: dict[str, str]
    ) -> tuple[int, str]:
        import aiohttp

        context = ssl.create_default_context(cadata=self.serving_ca.decode())
        if client_cert is not None:
            context.load_cert_chain(*client_cert)
        body = api.TapQuery(max_rps=0, seconds=10, max_events=3).body()
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
            http.post(
                self.url + PREFIX + "demo/deployments/web/tap",
                data=body,
                headers=headers,
                server_hostname="tap.gossamer-viz.svc",
            ) as response,
        ):
            return response.status, await response.text()


@pytest.fixture
async def aggregated(
    mesh: Mesh, proxies: tuple[list[TapTarget], int], tmp_path: Path
) -> AsyncIterator[Aggregated]:
    """The tap service over TLS trusting a user CA and a front-proxy CA (allowed name
    ``front-proxy-client``), as the cluster's extension-apiserver-authentication says."""
    from gossamer_cli.viz.tap_service.frontproxy import front_proxy_from_config_map
    from gossamer_cli.viz.tap_service.server import server_context
    from gossamer_cli.viz.tap_service.serving import generate_serving

    targets, port = proxies
    kube = FakeKube({"weak": "mallory"}, {"alice", "carol"})
    user_ca, front_ca = _CA.make("kubernetes-client-ca"), _CA.make("front-proxy-ca")
    front_proxy = front_proxy_from_config_map(_auth_config_map(front_ca, ["front-proxy-client"]))
    assert front_proxy is not None
    service = TapService(
        Authenticator(
            kube,  # type: ignore[arg-type]
            client_ca_pem=user_ca.pem.decode(),
            front_proxy=front_proxy,
        ),
        lambda resource, namespace: _targets(targets),
        FakeCredentials(mesh.credentials(tap_identity("gossamer", TRUST_DOMAIN))),
        port=port,
    )
    serving = generate_serving(viz_namespace="gossamer-viz", now=dt.datetime.now(dt.UTC))
    (tmp_path / "tls.crt").write_bytes(serving.crt_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    context = server_context(
        str(tmp_path / "tls.crt"),
        str(tmp_path / "tls.key"),
        user_ca.pem.decode(),
        front_proxy.ca_pem,
    )
    runner = web.AppRunner(service.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Aggregated(
        f"https://127.0.0.1:{bound}", serving.ca_pem, kube, tmp_path, user_ca, front_ca
    )
    await runner.cleanup()


async def _targets(targets: list[TapTarget]) -> list[TapTarget]:
    return targets


async def test_the_front_proxy_names_the_user_and_the_review_is_theirs(
    aggregated: Aggregated,
) -> None:
    proxy = aggregated.front_ca.issue("front-proxy-client", aggregated.files)
    headers = {"X-Remote-User": "alice", "X-Remote-Extra-Scopes%2fA": "x"}
    status, text = await aggregated.post(
        proxy, {**headers, "X-Remote-Group": "devs", "Authorization": "Bearer weak"}
    )
    assert status == 200, text
    assert len([line for line in _lines(text) if "event" in line]) == 3
    spec = aggregated.kube.reviews[-1]["spec"]
    assert (spec["user"], spec["groups"]) == ("alice", ["devs", "system:authenticated"])
    assert spec["extra"] == {"scopes/a": ["x"]}
    # An unauthorized user named by the proxy is refused.
    status, _ = await aggregated.post(proxy, {"X-Remote-User": "mallory"})
    assert status == 403
    # The proxy's certificate without a user is nobody (not the proxy's own name).
    status, _ = await aggregated.post(proxy, {})
    assert status == 401
    assert aggregated.kube.reviews[-1]["spec"]["user"] == "mallory"


async def test_remote_user_headers_are_ignored_from_anyone_but_the_front_proxy(
    aggregated: Aggregated,
) -> None:
    forged = {"X-Remote-User": "alice", "X-Remote-Group": "system:masters"}
    # No client certificate: the headers are not a user.
    status, _ = await aggregated.post(None, forged)
    assert status == 401
    status, _ = await aggregated.post(None, {**forged, "Authorization": "Bearer weak"})
    assert status == 403
    assert aggregated.kube.reviews[-1]["spec"]["user"] == "mallory"
    # A user's client certificate: the user is the certificate's, the headers are ignored.
    user = aggregated.user_ca.issue("carol", aggregated.files)
    status, text = await aggregated.post(user, forged)
    assert status == 200, text
    assert aggregated.kube.reviews[-1]["spec"]["user"] == "carol"
    assert aggregated.kube.reviews[-1]["spec"]["groups"] == ["system:authenticated"]
    # The front-proxy CA, but a name it does not allow: neither a proxy nor a user.
    other = aggregated.front_ca.issue("someone-else", aggregated.files)
    reviews = len(aggregated.kube.reviews)
    status, _ = await aggregated.post(other, forged)
    assert status == 401
    assert len(aggregated.kube.reviews) == reviews


async def test_discovery_and_health_are_served_as_an_aggregated_api_server_must(
    aggregated: Aggregated,
) -> None:
    import aiohttp

    context = ssl.create_default_context(cadata=aggregated.serving_ca.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:

        async def get(path: str) -> tuple[int, Any]:
            async with http.get(
                aggregated.url + path, server_hostname="tap.gossamer-viz.svc"
            ) as response:
                return response.status, await response.json(content_type=None)

        status, resources = await get("/apis/tap.linkerd.io/v1alpha1")
        assert status == 200
        assert resources["kind"] == "APIResourceList"
        assert resources["groupVersion"] == "tap.linkerd.io/v1alpha1"
        by_name = {r["name"]: r for r in resources["resources"]}
        assert by_name["deployments/tap"]["verbs"] == ["watch"]
        assert by_name["deployments/tap"]["namespaced"] is True
        assert by_name["namespaces/tap"]["namespaced"] is False
        status, group = await get("/apis/tap.linkerd.io")
        assert (status, group["preferredVersion"]["version"]) == (200, "v1alpha1")
        status, groups = await get("/apis")
        assert [g["name"] for g in groups["groups"]] == ["tap.linkerd.io"]
        async with http.get(
            aggregated.url + "/healthz", server_hostname="tap.gossamer-viz.svc"
        ) as response:
            assert (response.status, await response.text()) == (200, "ok")


def test_the_front_proxy_settings_come_from_the_clusters_config_map() -> None:
    from gossamer_cli.viz.tap_service.frontproxy import front_proxy_from_config_map

    front_ca = _CA.make("front-proxy-ca")
    assert front_proxy_from_config_map({"client-ca-file": front_ca.pem.decode()}) is None
    settings = front_proxy_from_config_map(_auth_config_map(front_ca, []))
    assert settings is not None
    assert settings.allowed_names == ()
    assert settings.username_headers == ("X-Remote-User",)
    bad = {**_auth_config_map(front_ca, []), "requestheader-allowed-names": "front-proxy"}
    with pytest.raises(ValueError, match="requestheader-allowed-names"):
        front_proxy_from_config_map(bad)
    no_users = {**_auth_config_map(front_ca, []), "requestheader-username-headers": "[]"}
    with pytest.raises(ValueError, match="username"):
        front_proxy_from_config_map(no_users)


async def test_the_cli_goes_through_the_apiserver_when_it_serves_the_tap_api(
    aggregated: Aggregated, tmp_path: Path
) -> None:
    """A stand-in apiserver that proxies as the aggregator does (front-proxy certificate,
    X-Remote-User for the token's user) and serves discovery only while "Available"."""
    import aiohttp
    from gossamer_cli.viz.tap_cmd import _endpoint
    from gossamer_cli.viz.tap_service.client import (
        TapServiceCall,
        TapServiceEndpoint,
        apiserver_serves_tap,
    )
    from gossamer_kube.config import KubeConfig

    proxy_cert = aggregated.front_ca.issue("front-proxy-client", aggregated.files)
    available = {"now": False}
    upstream = ssl.create_default_context(cadata=aggregated.serving_ca.decode())
    upstream.load_cert_chain(*proxy_cert)

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer token-of-alice":
            return web.Response(status=401)
        if not available["now"]:
            return web.Response(status=503, text="service unavailable")
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream)) as http,
            http.request(
                request.method,
                aggregated.url + request.path,
                data=await request.read(),
                headers={"X-Remote-User": "alice", "Content-Type": "application/json"},
                server_hostname="tap.gossamer-viz.svc",
            ) as answer,
        ):
            return web.Response(status=answer.status, body=await answer.read(),
                                content_type=answer.content_type)  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/apis/{tail:.*}", forward)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        server = str(client.make_url("")).rstrip("/")
        kube = KubeConfig(server=server, token="token-of-alice")
        assert await apiserver_serves_tap(kube) is False
        available["now"] = True
        assert await apiserver_serves_tap(kube) is True
        assert await apiserver_serves_tap(KubeConfig(server=server, token="wrong")) is False
        endpoint = TapServiceEndpoint.apiserver(kube)
        assert endpoint.via_apiserver
        assert endpoint.url == server
        found = _endpoint(tmp_path, None, None, "kubeconfig", lambda _: endpoint)
        assert found is endpoint
        query = api.TapQuery(max_rps=0, seconds=10, max_events=4)
        call = TapServiceCall(endpoint, kube, "demo", parse_resource("deploy/web"), query)
        events = [item async for item in call.events()]
        assert len(events) == 4
        assert aggregated.kube.reviews[-1]["spec"]["user"] == "alice"
    finally:
        await client.close()


def test_the_server_issues_no_session_tickets(tmp_path: Path) -> None:
    """A resumed TLS 1.3 session would stand for the first handshake's client certificate."""
    from gossamer_cli.viz.tap_service.server import server_context
    from gossamer_cli.viz.tap_service.serving import generate_serving

    serving = generate_serving(viz_namespace="gossamer-viz", now=dt.datetime.now(dt.UTC))
    (tmp_path / "tls.crt").write_bytes(serving.crt_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    ca = _CA.make("kubernetes-client-ca").pem.decode()
    for client_ca in (ca, None):
        context = server_context(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), client_ca)
        assert context.num_tickets == 0


class _StalledResponse:
    """A stream whose caller has stopped reading: writes never complete."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)
        await asyncio.Event().wait()

    async def write_eof(self) -> None:
        raise AssertionError("never reached")


class _Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


@dataclass
class _Request:
    transport: _Transport


async def test_a_caller_that_stops_reading_is_dropped_at_the_end_write_bound() -> None:
    from gossamer_cli.viz.tap_service.server import end_stream

    request, response = _Request(_Transport()), _StalledResponse()
    # A zero bound expires at the first wait: the end line is attempted, then dropped.
    await end_stream(request, response, b'{"end":"time-limit"}\n', 0)  # type: ignore[arg-type]
    assert response.written == [b'{"end":"time-limit"}\n']
    assert request.transport.aborted
