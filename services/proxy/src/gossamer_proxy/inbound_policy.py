"""The inbound policy in force per port: the env default until the policy service answers.

Every port starts from ``LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`` (the opaque variant for
ports in ``…_PORTS_DISABLE_PROTOCOL_DETECTION``, the authenticated variant for ports in
``…_PORTS_REQUIRE_IDENTITY``; linkerd-wire.md §9 "Inbound default policy"). With a policy
service configured, a ``WatchPort`` stream per port replaces it with the controller's
``Server`` (pinned for ``LINKERD2_PROXY_INBOUND_PORTS`` and the admin port, evicted after
idling otherwise) and keeps the last one while the control plane is down. The data path
asks :meth:`InboundPolicies.policy` once per connection; the answer is a cached value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import ProxySettings
from .mesh.authz import ServerPolicy, default_policy
from .mesh.tls_contexts import Credentials

if TYPE_CHECKING:
    from grpclib.client import Channel

    from .mesh.policy_watch import InboundPolicyClient

__all__ = ["InboundPolicies"]


class InboundPolicies:
    def __init__(
        self,
        settings: ProxySettings,
        *,
        trust_anchors_pem: str | None,
        credentials: Callable[[], Credentials | None] | None = None,
    ) -> None:
        self._settings = settings
        #: The proxy's current certificate, presented to the policy service (mTLS).
        self._credentials = credentials
        names = settings.policy_cluster_networks
        name = settings.inbound_default_policy
        timeout = settings.inbound_detect_timeout
        # Validate the name now: a typo must stop the proxy at start, not at first request.
        self._detect = default_policy(name, cluster_networks=names, detect_timeout=timeout)
        self._opaque = default_policy(
            name, cluster_networks=names, opaque=True, detect_timeout=timeout
        )
        self._detect_id = default_policy(
            name, cluster_networks=names, require_identity=True, detect_timeout=timeout
        )
        self._opaque_id = default_policy(
            name, cluster_networks=names, opaque=True, require_identity=True, detect_timeout=timeout
        )
        self._trust = trust_anchors_pem
        self._channel: Channel | None = None
        self._client: InboundPolicyClient | None = None

    def default(self, port: int) -> ServerPolicy:
        s = self._settings
        opaque = port in s.inbound_opaque_ports
        if port in s.inbound_ports_require_identity:
            return self._opaque_id if opaque else self._detect_id
        return self._opaque if opaque else self._detect

    def start(self, pinned_ports: tuple[int, ...]) -> None:
        """Start watching (if a policy service is configured); call from the running loop."""
        s = self._settings
        if not s.policy_svc_addr or not s.policy_workload:
            return
        # Imported only with a policy service: a proxy without one keeps grpclib, h2 and
        # protobuf out of its memory.
        from .mesh.channels import control_channel
        from .mesh.control_stream import StreamConfig
        from .mesh.policy_watch import InboundPolicyClient

        self._channel = control_channel(
            s.policy_svc_addr,
            server_name=s.policy_svc_name,
            trust_anchors_pem=self._trust,
            credentials=self._credentials,
        )
        self._client = InboundPolicyClient(
            self._channel,
            workload=s.policy_workload,
            default=self.default,
            pinned_ports=(*s.inbound_ports, *pinned_ports),
            stream_config=StreamConfig(
                initial_timeout=s.control_stream_initial_timeout,
                idle_timeout=s.control_stream_idle_timeout,
                lifetime=s.control_stream_lifetime,
            ),
            idle_timeout=s.inbound_discovery_idle_timeout,
        )
        self._client.start()

    @property
    def watched(self) -> bool:
        """Policies come from the policy service and may change; else they are fixed."""
        return self._client is not None

    def policy(self, port: int) -> ServerPolicy:
        if self._client is not None:
            return self._client.policy(port)
        return self.default(port)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
