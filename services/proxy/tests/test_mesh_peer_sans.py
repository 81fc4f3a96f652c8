"""A peer's identity is compared with SANs of its own kind only (URI for SPIFFE, DNS else)."""

from __future__ import annotations

import ssl
from typing import Any, cast

from gossamer_proxy.mesh.tls_contexts import (
    certificate_sans,
    peer_has_identity,
    peer_identity,
    peer_names,
)
from gossamer_proxy.tap.server import identity_of_cert

VM = "spiffe://cluster.local/vm/billing"
WEB = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


class _Verified:
    """What ``ssl`` hands out for a verified peer: ``getpeercert()``, ``session_reused``."""

    def __init__(self, sans: tuple[tuple[str, str], ...], *, reused: bool = False) -> None:
        self._certificate: dict[str, Any] = {
            "subjectAltName": sans,
            "notAfter": "Jan  1 00:00:00 2030 GMT",
        }
        self.session_reused = reused

    def getpeercert(self) -> dict[str, Any]:
        return self._certificate


def _peer(*sans: tuple[str, str], reused: bool = False) -> ssl.SSLObject:
    return cast(ssl.SSLObject, _Verified(sans, reused=reused))


def test_a_spiffe_identity_is_proved_by_a_uri_san_only() -> None:
    assert peer_has_identity(_peer(("URI", VM)), VM)
    # A DNS SAN spelling the SPIFFE ID proves nothing.
    assert not peer_has_identity(_peer(("DNS", VM)), VM)


def test_a_dns_like_identity_is_proved_by_a_dns_san_only() -> None:
    assert peer_has_identity(_peer(("DNS", WEB)), WEB)
    assert not peer_has_identity(_peer(("URI", WEB)), WEB)
    assert not peer_has_identity(_peer(("DNS", "other." + WEB)), WEB)


def test_an_expired_resumed_session_proves_no_identity() -> None:
    peer = _peer(("DNS", WEB), reused=True)
    assert peer_has_identity(peer, WEB, now=0.0)
    assert not peer_has_identity(peer, WEB, now=4_102_444_800.0)  # 2100
    assert peer_names(peer, now=4_102_444_800.0) == ()


def test_one_san_reader_for_names_identity_and_tap() -> None:
    sans = (("email", "a@b"), ("URI", VM), ("DNS", WEB), ("IP Address", "192.0.2.1"))
    certificate = {"subjectAltName": sans}
    assert certificate_sans(certificate) == (VM, WEB)
    assert certificate_sans(certificate, ("DNS",)) == (WEB,)
    assert certificate_sans(None) == ()
    assert peer_names(_peer(*sans)) == (VM, WEB)
    assert peer_identity(_peer(*sans)) == VM
    assert identity_of_cert(certificate) == VM
    assert identity_of_cert({}) is None
