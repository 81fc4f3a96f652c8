"""The gRPC method paths of the Linkerd proxy API.

Real Linkerd proxies call these exact paths, so servers, clients, metrics labels and
authorization rules all key on them. They are written out (rather than derived at
import time) so that a mistaken ``package`` or ``service`` line in a ``.proto`` file
shows up as a failing test instead of silently moving the path.
"""

from __future__ import annotations

from typing import Final

DESTINATION_SERVICE: Final = "io.linkerd.proxy.destination.Destination"
DESTINATION_GET: Final = "/io.linkerd.proxy.destination.Destination/Get"
DESTINATION_GET_PROFILE: Final = "/io.linkerd.proxy.destination.Destination/GetProfile"

IDENTITY_SERVICE: Final = "io.linkerd.proxy.identity.Identity"
IDENTITY_CERTIFY: Final = "/io.linkerd.proxy.identity.Identity/Certify"

INBOUND_SERVICE: Final = "io.linkerd.proxy.inbound.InboundServerPolicies"
INBOUND_GET_PORT: Final = "/io.linkerd.proxy.inbound.InboundServerPolicies/GetPort"
INBOUND_WATCH_PORT: Final = "/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort"

OUTBOUND_SERVICE: Final = "io.linkerd.proxy.outbound.OutboundPolicies"
OUTBOUND_GET: Final = "/io.linkerd.proxy.outbound.OutboundPolicies/Get"
OUTBOUND_WATCH: Final = "/io.linkerd.proxy.outbound.OutboundPolicies/Watch"

TAP_SERVICE: Final = "io.linkerd.proxy.tap.Tap"
TAP_OBSERVE: Final = "/io.linkerd.proxy.tap.Tap/Observe"

ALL_METHOD_PATHS: Final = frozenset(
    {
        DESTINATION_GET,
        DESTINATION_GET_PROFILE,
        IDENTITY_CERTIFY,
        INBOUND_GET_PORT,
        INBOUND_WATCH_PORT,
        OUTBOUND_GET,
        OUTBOUND_WATCH,
        TAP_OBSERVE,
    }
)
