"""Mesh TLS contexts: anchors only, TLS 1.3 session resumption, and what a resumed session proves.

Handshakes run between two in-memory TLS objects (memory BIOs pumped by hand), so nothing
here touches the network or a clock: "now" is passed in where it matters.
"""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography import x509
from gossamer_proxy.config import Endpoint
from gossamer_proxy.connect import TlsSessions
from gossamer_proxy.mesh.tls_contexts import (
    Credentials,
    ResumingContext,
    client_context,
    peer_identity,
    server_context,
)
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

CLIENT = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
SERVER = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"
START = dt.datetime.now(dt.UTC)
LIFETIME = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=START
    )


def anchors(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


def credentials(trust: TrustMaterial, name: str) -> Credentials:
    key = generate_private_key()
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    issued = issuer.sign_leaf(key.public_key(), name, now=START, lifetime=LIFETIME)
    chain = certificates_to_pem(
        x509.load_der_x509_certificate(der) for der in (issued.leaf_der, *issued.intermediates_der)
    )
    return Credentials(
        identity=name,
        key_pem=private_key_to_pem(key),
        chain_pem=chain,
        leaf_der=issued.leaf_der,
        not_before=START.timestamp(),
        not_after=(START + LIFETIME).timestamp(),
    )


class Pair:
    """One client and one server TLS object talking through memory BIOs."""

    def __init__(self, client: ssl.SSLContext, server: ssl.SSLContext) -> None:
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.client = client.wrap_bio(self.c_in, self.c_out, server_hostname=SERVER)
        self.server = server.wrap_bio(self.s_in, self.s_out, server_side=True)

    def _pump(self) -> None:
        self.s_in.write(self.c_out.read())
        self.c_in.write(self.s_out.read())

    def handshake(self, *, take_ticket: bool = True) -> None:
        done = {"client": False, "server": False}
        for _ in range(10):
            for side, obj in (("client", self.client), ("server", self.server)):
                if not done[side]:
                    try:
                        obj.do_handshake()
                        done[side] = True
                    except ssl.SSLWantReadError:
                        pass
                self._pump()
            if all(done.values()):
                break
        assert all(done.values()), "handshake did not finish"
        if not take_ticket:
            return
        # The server's NewSessionTicket comes after the handshake; a read takes it in.
        self.server.write(b"x")
        self._pump()
        assert self.client.read(1) == b"x"


@pytest.fixture(scope="module")
def contexts(trust: TrustMaterial) -> tuple[ResumingContext, ssl.SSLContext]:
    client = client_context(credentials(trust, CLIENT), anchors(trust))
    server = server_context(credentials(trust, SERVER), anchors(trust), alpn_protocols=())
    return client, server


def test_contexts_trust_the_mesh_anchors_and_nothing_else(trust: TrustMaterial) -> None:
    # ssl.create_default_context() would add the system CA store to a client context:
    # any public CA could then vouch for a mesh identity under a public trust domain.
    client = client_context(credentials(trust, CLIENT), anchors(trust))
    server = server_context(credentials(trust, SERVER), anchors(trust))
    assert client.cert_store_stats()["x509_ca"] == 1
    assert server.cert_store_stats()["x509_ca"] == 1
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname
    assert client.keylog_filename is None


def test_second_connection_resumes_and_still_names_both_peers(
    contexts: tuple[ResumingContext, ssl.SSLContext],
) -> None:
    client, server = contexts
    first = Pair(client, server)
    first.handshake()
    assert not first.client.session_reused
    session = first.client.session
    assert session is not None
    assert session.has_ticket

    client.offer(SERVER, session)
    second = Pair(client, server)
    second.handshake()
    assert second.client.session_reused
    assert second.server.session_reused
    now = START.timestamp() + 60
    assert peer_identity(second.server, now) == CLIENT
    assert peer_identity(second.client, now) == SERVER


def test_a_resumed_session_proves_nothing_once_its_certificate_expired(
    contexts: tuple[ResumingContext, ssl.SSLContext],
) -> None:
    client, server = contexts
    first = Pair(client, server)
    first.handshake()
    client.offer(SERVER, first.client.session)
    resumed = Pair(client, server)
    resumed.handshake()
    assert resumed.server.session_reused
    after = (START + 2 * LIFETIME).timestamp()  # past NotAfter, clock skew included
    assert peer_identity(resumed.server, after) is None
    assert peer_identity(resumed.client, after) is None
    # A full handshake was verified just now, by OpenSSL: the clock is not consulted.
    assert peer_identity(first.server, after) == CLIENT


def test_offers_are_taken_in_order_per_server_name(
    contexts: tuple[ResumingContext, ssl.SSLContext],
) -> None:
    client, server = contexts
    first = Pair(client, server)
    first.handshake()
    client.offer(SERVER, None)  # this one's connection has nothing to resume
    client.offer(SERVER, first.client.session)
    fresh = Pair(client, server)
    fresh.handshake()
    resumed = Pair(client, server)
    resumed.handshake()
    assert not fresh.client.session_reused
    assert resumed.client.session_reused
    # Nothing left queued: the next handshake is a full one.
    after = Pair(client, server)
    after.handshake()
    assert not after.client.session_reused


def test_sessions_are_remembered_per_peer_and_only_from_the_same_context(
    trust: TrustMaterial, contexts: tuple[ResumingContext, ssl.SSLContext]
) -> None:
    client, server = contexts
    pair = Pair(client, server)
    pair.handshake()
    sessions = TlsSessions(limit=2)
    key = (Endpoint("10.0.0.1", 4143), SERVER, ())
    sessions.remember(key, pair.client)
    found = sessions.resumable(key, client)
    assert found is not None
    assert found.has_ticket
    assert sessions.resumable((Endpoint("10.0.0.2", 4143), SERVER, ()), client) is None
    # A renewed certificate means new contexts: the old session is dropped, not offered.
    renewed = client_context(credentials(trust, CLIENT), anchors(trust))
    assert sessions.resumable(key, renewed) is None
    assert len(sessions) == 0
    # Bounded: the oldest peer goes first.
    for i in range(3):
        sessions.remember((Endpoint(f"10.0.1.{i}", 4143), SERVER, ()), pair.client)
    assert len(sessions) == 2
    assert sessions.resumable((Endpoint("10.0.1.0", 4143), SERVER, ()), client) is None
    sessions.forget((Endpoint("10.0.1.2", 4143), SERVER, ()))
    assert len(sessions) == 1


def test_a_newer_connection_without_its_ticket_yet_keeps_the_older_session_offered(
    contexts: tuple[ResumingContext, ssl.SSLContext],
) -> None:
    """A burst: the second connection is up but has not read its ticket when the third starts."""
    client, server = contexts
    sessions = TlsSessions()
    key = (Endpoint("10.0.0.1", 4143), SERVER, ())
    first = Pair(client, server)
    first.handshake()
    sessions.remember(key, first.client)
    assert sessions.resumable(key, client) is not None
    second = Pair(client, server)
    second.handshake(take_ticket=False)
    assert second.client.session is None or not second.client.session.has_ticket
    sessions.remember(key, second.client)
    offered = sessions.resumable(key, client)
    assert offered is not None
    assert offered.has_ticket
    assert offered.id == first.client.session.id  # type: ignore[union-attr]
    # Once the newer connection has its ticket, that one is offered.
    second.server.write(b"x")
    second._pump()
    assert second.client.read(1) == b"x"
    newer = sessions.resumable(key, client)
    assert newer is not None
    assert newer.id == second.client.session.id  # type: ignore[union-attr]
