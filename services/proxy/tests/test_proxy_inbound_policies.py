"""Which inbound policies can change while a connection is open (and so are looked up again)."""

from __future__ import annotations

from gossamer_proxy.config import load_settings
from gossamer_proxy.inbound_policy import InboundPolicies


def test_fixed_policies_are_not_watched_and_match_the_default() -> None:
    settings = load_settings(
        {
            "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY": "8443",
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": "3306",
        }
    )
    policies = InboundPolicies(settings, trust_anchors_pem=None)
    policies.start(())  # no policy service configured: nothing starts
    # The data path skips the per-request lookup then, which is right only because a fixed
    # policy is the same answer every time.
    assert not policies.watched
    for port in (80, 8443, 3306):
        assert policies.policy(port) is policies.policy(port) is policies.default(port)
    assert policies.policy(8443) is not policies.policy(80)
    assert policies.policy(3306).protocol == "opaque"
