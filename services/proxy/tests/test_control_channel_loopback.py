"""Control-plane channels: ``localhost`` is plaintext, as in Linkerd (NoClientTls::Loopback).

The control-plane pods' proxies reach the service next to them at ``localhost.:8080`` (identity)
or ``localhost.:8086`` (destination), which serves no TLS; the chart still sets the service
names. Before, the identity pod's proxy tried TLS there and never got a certificate.
"""

from __future__ import annotations

import pytest
from gossamer_proxy.mesh.channels import control_channel, is_loopback_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost.", True),
        ("LocalHost.", True),
        ("127.0.0.1", False),  # IP literals keep TLS (the tests' TLS control planes)
        ("gossamer-identity.gossamer.svc.cluster.local.", False),
        ("10.239.0.5", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


async def test_loopback_address_is_plaintext_despite_a_server_name() -> None:
    channel = control_channel(
        "localhost.:8080", server_name="identity.gossamer.cluster.local", trust_anchors_pem=None
    )
    try:
        assert channel._ssl is None
    finally:
        channel.close()


async def test_remote_address_with_a_server_name_uses_tls() -> None:
    with pytest.raises(ValueError, match="needs trust anchors"):
        control_channel(
            "gossamer-identity.gossamer.svc.cluster.local.:8080",
            server_name="identity.gossamer.cluster.local",
            trust_anchors_pem=None,
        )
