"""Shared fixtures for gossamer_tls tests: a fixed clock and a freshly generated CA."""

from __future__ import annotations

import datetime as dt

import pytest
from gossamer_tls import TrustMaterial, generate_trust_anchor_and_issuer

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


@pytest.fixture(scope="session")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
    )
