from __future__ import annotations

import pytest
from gossamer_tls import (
    IdentityName,
    IdentityNameError,
    identity_for_username,
    identity_name,
    issuer_name,
    parse_identity_name,
)


def test_identity_name_format() -> None:
    name = identity_name(
        "default", "emojivoto", control_plane_namespace="linkerd", trust_domain="cluster.local"
    )
    assert name == "default.emojivoto.serviceaccount.identity.linkerd.cluster.local"


def test_parse_round_trip_with_multi_label_trust_domain() -> None:
    parsed = parse_identity_name("web.shop.serviceaccount.identity.gossamer.prod.example.com")
    assert parsed == IdentityName(
        name="web",
        namespace="shop",
        kind="serviceaccount",
        control_plane_namespace="gossamer",
        trust_domain="prod.example.com",
    )
    assert str(parsed) == "web.shop.serviceaccount.identity.gossamer.prod.example.com"
    assert parsed.service_account_username == "system:serviceaccount:shop:web"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "web.shop.serviceaccount.notidentity.gossamer.cluster.local",
        "web.shop.serviceaccount.identity.gossamer",
        "Web.shop.serviceaccount.identity.gossamer.cluster.local",
        "web_x.shop.serviceaccount.identity.gossamer.cluster.local",
        "web..serviceaccount.identity.gossamer.cluster.local",
        "web.shop.serviceaccount.identity.gossamer.cluster..local",
        "-web.shop.serviceaccount.identity.gossamer.cluster.local",
        ("a" * 64) + ".shop.serviceaccount.identity.gossamer.cluster.local",
        "web.shop.serviceaccount.identity.gossamer." + ".".join(["abcdefghij"] * 23),
    ],
)
def test_parse_rejects_malformed_names(bad: str) -> None:
    with pytest.raises(IdentityNameError):
        parse_identity_name(bad)


def test_identity_for_username() -> None:
    identity = identity_for_username(
        "system:serviceaccount:emojivoto:web",
        control_plane_namespace="gossamer",
        trust_domain="cluster.local",
    )
    assert str(identity) == "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


@pytest.mark.parametrize(
    "username",
    [
        "admin",
        "system:serviceaccount:emojivoto",
        "system:serviceaccount:emojivoto:web:extra",
        "user:serviceaccount:emojivoto:web",
        "system:serviceaccount:Emoji:web",
        "system:serviceaccount:emojivoto:web.dotted",
        "system:serviceaccount::web",
    ],
)
def test_identity_for_username_rejects(username: str) -> None:
    with pytest.raises(IdentityNameError):
        identity_for_username(
            username, control_plane_namespace="gossamer", trust_domain="cluster.local"
        )


def test_issuer_name() -> None:
    assert issuer_name(control_plane_namespace="gossamer", trust_domain="cluster.local") == (
        "identity.gossamer.cluster.local"
    )
    with pytest.raises(IdentityNameError):
        issuer_name(control_plane_namespace="Gossamer", trust_domain="cluster.local")
