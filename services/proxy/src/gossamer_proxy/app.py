"""The proxy process: listeners, admin server, housekeeping and graceful shutdown.

:class:`Proxy` wires the parts together. ``start()`` binds inbound, outbound(s) and admin;
``shutdown()`` stops accepting, tells every connection to drain (idle keep-alive connections
close at once, in-flight requests finish and answer with ``connection: close``; HTTP/2 clients
get GOAWAY) and waits until they are gone or the grace period ends.

The mesh parts are wired here too: the proxy's identity (:mod:`.local_identity`; ``/ready``
waits for its first certificate), the inbound policies and their authorization metrics
(:mod:`.inbound_policy`), the meshed inbound listener that terminates mTLS
(:mod:`.inbound_tls`), and, in static mode, the mTLS plan for the fixed outbound target.
With a destination service (``LINKERD2_PROXY_DESTINATION_SVC_ADDR``) the outbound listeners
resolve their targets through it (:mod:`.outbound.discovery`): profiles, balanced endpoints,
mTLS to each endpoint's identity. With a policy service (``LINKERD2_PROXY_POLICY_SVC_ADDR``)
they also watch each target's ``OutboundPolicies`` and route HTTP by its ``HTTPRoute`` rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
from typing import TYPE_CHECKING

import structlog
from gossamer_common.admin import AdminServer, add_debug_routes
from gossamer_common.log_control import LogLevels
from gossamer_common.process_metrics import process_age_seconds, register_process_metrics
from gossamer_common.shutdown import Shutdown

from .access_log import AccessLogObserver, access_log_from_setting
from .build_info import register_build_info
from .config import Endpoint, ProxySettings
from .connect import Connector, DirectResolver, Resolver, UpstreamTls
from .context import ListenerContext
from .inbound_policy import InboundPolicies
from .inbound_target import canonical_host
from .inbound_tls import InboundListener
from .local_identity import IdentityConfigError, LocalIdentity, identity_from_settings
from .mesh.authz_metrics import AuthzMetrics
from .mesh.control_address import split_host_port
from .mesh.endpoints import Endpoint as MeshEndpoint
from .mesh.policy_router import source_workload
from .mesh.tls_contexts import Credentials
from .mesh.tls_labels import outbound_tls_labels
from .mesh.transport import plan_connect
from .metrics import ProxyMetrics, tls_values
from .observe import ObserverHub, Observers
from .outbound.discovery import OutboundDiscovery, parse_networks
from .pool import Pool

if TYPE_CHECKING:
    from grpclib.client import Channel

    from .tap.server import TapServer
    from .tap.taps import Taps
    from .tracing.exporter import SpanExporter
    from .tracing.tracer import Tracer

__all__ = ["Proxy"]

_log = structlog.get_logger("gossamer.proxy")
_TICK = 1.0


def _metrics_sweep_interval(retain_idle: float) -> float:
    """How often idle series are looked for: a few times per retention, 1-60 s apart."""
    return min(max(retain_idle / 4, _TICK), 60.0)


class Proxy:
    def __init__(
        self,
        settings: ProxySettings,
        *,
        metrics: ProxyMetrics | None = None,
        resolver: Resolver | None = None,
        process_metrics: bool = True,
        log_levels: LogLevels | None = None,
        worker_identity: LocalIdentity | None = None,
        worker: bool = False,
        reuse_port: bool = False,
    ) -> None:
        """``worker``: a multi-core worker (:mod:`.multicore`): no admin server (the parent
        serves it), no build-info or identity metrics, and the identity its parent pushes
        (``worker_identity``). ``reuse_port``: listeners share their ports (``SO_REUSEPORT``)."""
        self.settings = settings
        self.worker = worker
        self.reuse_port = reuse_port or worker
        self.metrics = (
            metrics
            if metrics is not None
            else ProxyMetrics(
                retain_idle=settings.metrics_retain_idle,
                max_authorities=settings.metrics_max_authorities,
            )
        )
        self._metrics_swept = -math.inf
        if not worker:
            register_build_info(self.metrics.registry)
        if process_metrics:
            register_process_metrics(self.metrics.registry)
        self.resolver: Resolver = resolver if resolver is not None else DirectResolver()
        #: ``None`` when identity is disabled (raises IdentityConfigError on bad settings).
        self.identity: LocalIdentity | None = (
            worker_identity if worker else identity_from_settings(settings, self.metrics.registry)
        )
        if settings.outbound_fixed_identity and self.identity is None:
            raise IdentityConfigError(
                "GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY needs the proxy's own identity "
                "(LINKERD2_PROXY_IDENTITY_* or GOSSAMER_PROXY_IDENTITY_CERT_FILE/KEY_FILE)"
            )
        if settings.outbound_fixed_identity and settings.outbound_fixed_target is None:
            raise IdentityConfigError(
                "GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY needs GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET"
            )
        self.policies = InboundPolicies(
            settings,
            trust_anchors_pem=self.identity.trust_anchors_pem if self.identity else None,
            credentials=self._current_credentials,
        )
        self.authz_metrics = AuthzMetrics(self.metrics.registry)
        self._inbound_listener: InboundListener | None = None
        self.pool = Pool(
            idle_timeout=settings.pool_idle_timeout,
            max_idle_per_endpoint=settings.pool_max_idle_per_endpoint,
        )
        self.contexts: list[ListenerContext] = []
        self.servers: list[asyncio.Server] = []
        self.shutdown_control = Shutdown(settings.shutdown_grace_period)
        self.admin = AdminServer(
            registry=self.metrics.registry,
            ready=lambda: self.ready,
            on_shutdown=lambda: self.shutdown_control.request("admin /shutdown"),
            shutdown_enabled=settings.shutdown_endpoint_enabled,
        )
        #: ``None`` when the process's logging is not ours to change (``/proxy-log-level`` 404s).
        self.log_levels = log_levels
        self.access_log = access_log_from_setting(settings.access_log)
        #: Request observers of every listener (:mod:`.observe`): access log, tap, ...
        self.observers = ObserverHub()
        if self.access_log is not None:
            self.observers.add(AccessLogObserver(self.access_log), ("inbound",))
        add_debug_routes(self.admin, log_levels)
        #: Linkerd's tap API on the control port (``None``: no LINKERD2_PROXY_TAP_SVC_NAME).
        self.taps: Taps | None = None
        self.tap_server: TapServer | None = None
        # A multi-core worker serves no control port: it runs the taps of its parent's
        # calls (:mod:`.tap.relay`), so its requests are tapped too (see :mod:`.multicore`).
        if settings.tap_svc_name:
            if self.identity is None:
                _log.warning("tap_disabled_without_identity")
            else:
                # Imported only when on: a proxy that is never tapped loads nothing of it.
                from .tap.taps import Taps

                self.taps = Taps(self.observers)
                if not worker:
                    from .tap.server import TapServer

                    self.tap_server = TapServer(
                        self.identity, self.taps, settings.tap_svc_name, settings.control_listen
                    )
        self._ready = False
        self._tick: asyncio.TimerHandle | None = None
        self._destination_channel: Channel | None = None
        self._policy_channel: Channel | None = None
        #: Outbound discovery (``None`` without a destination service, or in static mode).
        self.discovery: OutboundDiscovery | None = None
        #: Spans for sampled requests (``None``: no trace collector; nothing of it imported).
        self.tracer: Tracer | None = None
        self._span_exporter: SpanExporter | None = None
        parse_networks(settings.destination_profile_networks)  # a typo must stop the start
        if settings.trace_collector_svc_addr:
            split_host_port(settings.trace_collector_svc_addr)  # ControlAddressError
            if settings.trace_collector_svc_name and self.identity is None:
                raise IdentityConfigError(
                    "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME needs the proxy's own identity "
                    "(spans go to the collector over mTLS)"
                )

    def _current_credentials(self) -> Credentials | None:
        """The proxy's certificate right now: control-plane channels present it (mTLS)."""
        return self.identity.credentials if self.identity is not None else None

    def _start_discovery(self) -> None:
        s = self.settings
        if not s.destination_svc_addr or s.outbound_fixed_identity:
            return
        # Imported only with a destination service: a proxy without a control plane keeps
        # grpclib, h2 and protobuf out of its memory.
        from .mesh.channels import control_channel
        from .mesh.control_stream import StreamConfig
        from .mesh.discovery import DestinationClient
        from .mesh.policy_watch import OutboundPolicyClient

        self._destination_channel = control_channel(
            s.destination_svc_addr,
            server_name=s.destination_svc_name,
            trust_anchors_pem=self.identity.trust_anchors_pem if self.identity else None,
            credentials=self._current_credentials,
        )
        stream_config = StreamConfig(
            initial_timeout=s.control_stream_initial_timeout,
            idle_timeout=s.control_stream_idle_timeout,
            lifetime=s.control_stream_lifetime,
        )
        client = DestinationClient(
            self._destination_channel,
            context_token=s.destination_context,
            stream_config=stream_config,
            idle_timeout=s.outbound_discovery_idle_timeout,
        )
        policies = None
        if s.policy_svc_addr:
            self._policy_channel = control_channel(
                s.policy_svc_addr,
                server_name=s.policy_svc_name,
                trust_anchors_pem=self.identity.trust_anchors_pem if self.identity else None,
                credentials=self._current_credentials,
            )
            policies = OutboundPolicyClient(
                self._policy_channel,
                workload=source_workload(s.policy_workload, s.destination_context),
                stream_config=stream_config,
            )
        self.discovery = OutboundDiscovery(
            client,
            networks=s.destination_profile_networks,
            mesh_identity=self.identity is not None,
            registry=self.metrics.registry,
            idle_timeout=s.outbound_discovery_idle_timeout,
            policies=policies,
        )

    def _start_tracing(self) -> None:
        s = self.settings
        if not s.trace_collector_svc_addr:
            return
        from .tracing.tracer import tracing_from_settings

        identity = self.identity
        self.tracer, self._span_exporter = tracing_from_settings(
            collector_addr=s.trace_collector_svc_addr,
            collector_name=s.trace_collector_svc_name,
            protocol=s.trace_protocol,
            service_name=s.trace_service_name,
            attributes_path=s.trace_attributes_path,
            extra_attributes=s.trace_extra_attributes,
            environ=os.environ,
            registry=self.metrics.registry,
            trust_anchors_pem=identity.trust_anchors_pem if identity else None,
            credentials=(lambda: identity.credentials) if identity else None,
            batch_delay=s.trace_batch_delay,
        )
        self._span_exporter.start()
        from .tracing.observer import TracingObserver

        self.observers.add(TracingObserver(self.tracer), ("inbound", "outbound"))

    @property
    def ready(self) -> bool:
        """Listening, and (with identity) holding a certificate."""
        return self._ready and (self.identity is None or self.identity.ready)

    def _outbound_connector(self) -> tuple[Connector, tuple[str, ...]]:
        """The outbound connector and the TLS label values for the fixed target."""
        s = self.settings
        connector = Connector(s.outbound_connect_timeout, self.identity)
        fixed, identity = s.outbound_fixed_target, s.outbound_fixed_identity
        if fixed is None or identity is None:
            return connector, ()
        endpoint = MeshEndpoint(
            ip=ipaddress.ip_address(fixed.host),
            port=fixed.port,
            identity=identity,
            opaque_transport_port=s.outbound_fixed_opaque_transport_port,
        )
        plan = plan_connect(endpoint, session_protocol=None)
        connector.tls_plans[fixed] = UpstreamTls.from_plan(plan)
        return connector, tls_values(outbound_tls_labels(server_id=identity))

    def _context(self, direction: str, listen: Endpoint) -> ListenerContext:
        s = self.settings
        inbound = direction == "inbound"
        outbound_tls: tuple[str, ...] = ()
        if inbound:
            connector = Connector(s.inbound_connect_timeout)
        else:
            connector, outbound_tls = self._outbound_connector()
        ctx = ListenerContext(
            direction=direction,
            listen=listen,
            detect_timeout=s.inbound_detect_timeout if inbound else s.outbound_detect_timeout,
            opaque_ports=s.inbound_opaque_ports if inbound else s.outbound_opaque_ports,
            limits=s.http1,
            pool=self.pool,
            connector=connector,
            resolver=self.resolver,
            metrics=self.metrics,
            fixed_target=s.inbound_fixed_target if inbound else s.outbound_fixed_target,
            ingress_mode=s.ingress_mode and not inbound,
            allowed_ips=frozenset(map(canonical_host, s.inbound_ips)) if inbound else frozenset(),
            splice=s.splice,
            identity=self.identity,
            policies=self.policies if inbound else None,
            authz_metrics=self.authz_metrics if inbound else None,
            gateway_suffixes=s.inbound_gateway_suffixes,
            outbound_tls=outbound_tls,
            discovery=None if inbound else self.discovery,
        )
        self._observe(ctx)
        return ctx

    def _observe(self, ctx: ListenerContext) -> None:
        """Keep ``ctx.observers`` compiled from the proxy's observers of its direction."""

        def setter(observers: Observers | None) -> None:
            ctx.observers = observers

        self.observers.attach(ctx.direction, setter)

    async def _listen(self, ctx: ListenerContext) -> Endpoint:
        from .accept import AcceptedConnection

        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: AcceptedConnection(ctx),
            ctx.listen.host,
            ctx.listen.port,
            reuse_address=True,
            reuse_port=self.reuse_port,
            backlog=4096,
        )
        self.servers.append(server)
        bound = server.sockets[0].getsockname()
        ctx.listen = Endpoint(str(bound[0]), int(bound[1]))
        self.contexts.append(ctx)
        return ctx.listen

    async def start(self) -> None:
        s = self.settings
        if self.identity is not None:
            self.identity.start()
        self.policies.start((s.admin_listen.port,))
        self._start_discovery()
        self._start_tracing()
        # Outbound and admin first: the inbound side must know every port the proxy itself
        # listens on before it accepts a connection (it never forwards to them).
        for addr in s.outbound_listeners:
            await self._listen(self._context("outbound", addr))
        if not self.worker:
            await self.admin.start(s.admin_listen.host, s.admin_listen.port)
        admin_port = s.admin_listen.port if self.worker else self.admin.port
        own_ports = {admin_port, *(c.listen.port for c in self.contexts)}
        if self.tap_server is not None:
            await self.tap_server.start()  # or, without a certificate yet, once it has one
            own_ports.add(self.tap_server.port or s.control_listen.port)
        elif self.worker and s.tap_svc_name:
            own_ports.add(s.control_listen.port)  # the parent's tap server
        inbound = self._context("inbound", s.inbound_listen)
        inbound.own_ports = frozenset(own_ports | {s.inbound_listen.port} - {0})
        if self.identity is not None:
            self._inbound_listener = InboundListener(
                inbound, self.identity, reuse_port=self.reuse_port
            )
            await self._inbound_listener.start()
            self.contexts.append(inbound)
        else:
            await self._listen(inbound)
        inbound.own_ports = frozenset(own_ports | {inbound.listen.port})
        self._ready = True
        loop = asyncio.get_running_loop()
        self._tick = loop.call_later(_TICK, self._housekeeping)
        _log.info(
            "proxy_worker_started" if self.worker else "proxy_started",
            inbound=str(self.inbound_addr),
            outbound=[str(c.listen) for c in self.contexts if not c.inbound],
            admin=f"{s.admin_listen.host}:{admin_port}",
            seconds_since_exec=_seconds_since_exec(),
        )

    @property
    def inbound_addr(self) -> Endpoint:
        return next(c.listen for c in self.contexts if c.inbound)

    @property
    def outbound_addr(self) -> Endpoint:
        return next(c.listen for c in self.contexts if not c.inbound)

    @property
    def admin_port(self) -> int:
        return self.admin.port

    def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for ctx in self.contexts:
            for conn in list(ctx.connections):
                conn.tick(now)
            ctx.h2_idle.sweep(now)
        self.pool.sweep(now)
        if self.tap_server is not None:
            self.tap_server.tick()
        if self.discovery is not None:
            self.discovery.housekeeping(now)
        if now - self._metrics_swept >= _metrics_sweep_interval(self.metrics.retain_idle):
            self._metrics_swept = now
            self.metrics.expire_idle(now)
        self._tick = loop.call_later(_TICK, self._housekeeping)

    def in_flight(self) -> int:
        return sum(len(c.connections) + len(c.opaque_relays) for c in self.contexts)

    async def shutdown(self) -> bool:
        """Drain and stop; returns True if everything finished within the grace period."""
        self._ready = False
        for server in self.servers:
            server.close()
        if self._inbound_listener is not None:
            self._inbound_listener.close()
        for ctx in self.contexts:
            ctx.draining = True
            for conn in list(ctx.connections):
                conn.drain()
        self.pool.close_all()
        for ctx in self.contexts:
            ctx.h2_idle.close_all()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_period
        while self.in_flight() and loop.time() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
        drained = not self.in_flight()
        for ctx in self.contexts:
            for relay in list(ctx.opaque_relays):
                relay.close(abort=True)
            for task in list(ctx.tasks):
                task.cancel()
        if self._tick is not None:
            self._tick.cancel()
        if not self.worker:
            with contextlib.suppress(Exception):
                await self.admin.close(grace=1.0)
        if self.tap_server is not None:
            await self.tap_server.close()
        if self.identity is not None:
            await self.identity.close()
        await self.policies.close()
        if self.discovery is not None:
            await self.discovery.close()
        if self._span_exporter is not None:
            await self._span_exporter.close()
        if self._destination_channel is not None:
            self._destination_channel.close()
            self._destination_channel = None
        if self._policy_channel is not None:
            self._policy_channel.close()
            self._policy_channel = None
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        _log.info("proxy_stopped", drained=drained)
        return drained

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT or admin /shutdown, then drain."""
        await self.start()
        self.shutdown_control.install_signal_handlers()
        await self.shutdown_control.wait()
        await self.shutdown()


def _seconds_since_exec() -> float | None:
    try:
        return round(process_age_seconds(), 2)
    except (OSError, ValueError, IndexError):
        return None
