"""Proxy settings, read from Linkerd's ``LINKERD2_PROXY_*`` environment variables.

The injector writes the same variables for Gossamer's proxy as for linkerd2-proxy, so names
and defaults follow linkerd-wire.md §4.3 (the proxy's built-in defaults where the injector
sets nothing). Settings Linkerd has no name for (HTTP/1 limits, client idle timeouts, a fixed
forwarding target for tests and ingress without iptables) use ``GOSSAMER_PROXY_*`` names.
Loading and error reporting are :mod:`gossamer_common.settings`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gossamer_common.settings import (
    SocketAddr,
    list_of,
    load,
    optional,
    parse_bool,
    parse_duration,
    parse_int,
    parse_socket_addr,
    parse_str,
    setting,
    settings_class,
)

__all__ = [
    "DEFAULT_OPAQUE_PORTS",
    "Endpoint",
    "Http1Limits",
    "ProxySettings",
    "load_settings",
    "parse_ports",
]

#: An IP (or host) and port; the same type the settings loader produces.
Endpoint = SocketAddr

#: Server-speaks-first ports Linkerd's chart marks opaque by default (§4.3).
DEFAULT_OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211"


def parse_ports(text: str) -> frozenset[int]:
    """A comma-separated list of ports and inclusive ranges (``25,3306,9000-9010``)."""
    ports: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        low_text, sep, high_text = item.partition("-")
        low = int(low_text)
        high = int(high_text) if sep else low
        if not 0 < low <= high <= 65535:
            raise ValueError(item)
        ports.update(range(low, high + 1))
    return frozenset(ports)


parse_ports.expected = "a comma-separated list of ports or ranges, e.g. 25,3306,9000-9010"  # type: ignore[attr-defined]


def _positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.expected = "a positive integer"  # type: ignore[attr-defined]


def parse_dns_suffix(text: str) -> str:
    """A DNS suffix such as ``svc.cluster.local.``; one without any label is refused."""
    suffix = text.strip()
    if not suffix.strip("."):
        raise ValueError(text)
    return suffix


parse_dns_suffix.expected = "a DNS suffix with at least one label, e.g. svc.cluster.local."  # type: ignore[attr-defined]


#: The longest ``LINKERD2_PROXY_POLICY_WORKLOAD`` accepted: a namespace and a name are DNS
#: labels/subdomains, far shorter.
MAX_POLICY_WORKLOAD = 1024


def parse_policy_workload(text: str) -> str:
    """The workload the proxy names in inbound/outbound policy requests, sent as written.

    A pod's proxy is ``{"ns":"<ns>","pod":"<pod>"}`` (what the injector writes); the proxy of
    an ExternalWorkload (a VM) is ``{"ns":"<ns>","external_workload":"<name>"}``, as for
    Linkerd's proxy; the legacy ``<ns>:<pod>`` is still accepted. Anything else is refused
    here so that a typo fails at start-up rather than as a policy lookup error later.
    """
    value = text.strip()
    if not value:
        return ""
    if len(value) > MAX_POLICY_WORKLOAD:
        raise ValueError(text)
    if not value.startswith("{"):
        ns, sep, pod = value.partition(":")
        if not (sep and ns and pod):
            raise ValueError(text)
        return value
    doc = json.loads(value)  # ValueError on junk
    if not isinstance(doc, dict) or not _non_empty(doc.get("ns")):
        raise ValueError(text)
    kinds = [k for k in ("pod", "external_workload") if k in doc]
    if len(kinds) != 1 or not _non_empty(doc[kinds[0]]):
        raise ValueError(text)
    return value


def _non_empty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


parse_policy_workload.expected = (  # type: ignore[attr-defined]
    'workload JSON: {"ns":"<ns>","pod":"<pod>"} or {"ns":"<ns>","external_workload":"<name>"}'
)


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("plain", "json"):
        raise ValueError(text)
    return value


_log_format.expected = "plain or json"  # type: ignore[attr-defined]


def _access_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("apache", "json"):
        raise ValueError(text)
    return value


_access_log_format.expected = "apache or json"  # type: ignore[attr-defined]


def _trace_protocol(text: str) -> str:
    value = text.strip().lower()
    if value != "opentelemetry":
        raise ValueError(text)
    return value


_trace_protocol.expected = "opentelemetry"  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Http1Limits:
    """Size limits and timers for one HTTP/1 server side."""

    #: Largest request line plus header block, in bytes (431 beyond it, as hyper answers).
    #: Upstream, the largest response head counting its interim 1xx heads, and the most
    #: bytes of chunk framing or trailers between two pieces of body (502 beyond it).
    max_head_bytes: int = 64 * 1024
    #: Most header fields in one request's head or trailers (431 beyond it); the same for a
    #: response (502 beyond it).
    max_headers: int = 128
    #: A request head must arrive in full within this many seconds of its first byte (408).
    head_timeout: float = 10.0
    #: A keep-alive client connection with nothing in flight is closed after this.
    idle_timeout: float = 90.0
    #: A request body that makes no progress for this long aborts the exchange.
    body_stall_timeout: float = 60.0


@settings_class
class ProxySettings:
    inbound_listen: SocketAddr = setting(
        env="LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
        default="0.0.0.0:4143",
        parse=parse_socket_addr,
        help="Inbound listener (iptables redirects the pod's incoming TCP here).",
    )
    outbound_listen: tuple[SocketAddr, ...] = setting(
        env="LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
        default="127.0.0.1:4140",
        parse=list_of(parse_socket_addr),
        help="Outbound listeners (iptables redirects the app's outgoing TCP here).",
    )
    outbound_listen_single: SocketAddr | None = setting(
        env="LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
        default=None,
        parse=optional(parse_socket_addr),
        help="Older single-address form of LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS.",
    )
    admin_listen: SocketAddr = setting(
        env="LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
        default="127.0.0.1:4191",
        parse=parse_socket_addr,
        help="Admin listener: /metrics, /live, /ready, /shutdown.",
    )
    control_listen: SocketAddr = setting(
        env="LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
        default="0.0.0.0:4190",
        parse=parse_socket_addr,
        help="Control listener: the tap API over mTLS (only with LINKERD2_PROXY_TAP_SVC_NAME).",
    )
    tap_svc_name: str | None = setting(
        env="LINKERD2_PROXY_TAP_SVC_NAME",
        default=None,
        parse=optional(parse_str),
        help="The one client identity allowed to tap this proxy; unset = tap off. "
        "Needs the proxy's own identity.",
    )
    inbound_detect_timeout: float = setting(
        env="LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT",
        default="10s",
        parse=parse_duration,
        help="How long inbound protocol detection waits before treating a connection as opaque.",
    )
    outbound_detect_timeout: float = setting(
        env="LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT",
        default="10s",
        parse=parse_duration,
        help="How long outbound protocol detection waits before treating it as opaque.",
    )
    inbound_connect_timeout: float = setting(
        env="LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT",
        default="300ms",
        parse=parse_duration,
        help="Connect timeout towards the local app.",
    )
    outbound_connect_timeout: float = setting(
        env="LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
        default="1s",
        parse=parse_duration,
        help="Connect timeout towards outbound endpoints.",
    )
    inbound_opaque_ports: frozenset[int] = setting(
        env="LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
        default=DEFAULT_OPAQUE_PORTS,
        parse=parse_ports,
        help="Inbound ports forwarded as opaque TCP without protocol detection.",
    )
    outbound_opaque_ports: frozenset[int] = setting(
        env="GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
        default=DEFAULT_OPAQUE_PORTS,
        parse=parse_ports,
        help="Outbound ports forwarded as opaque TCP without detection (until discovery "
        "supplies opaque-ports).",
    )
    inbound_ips: tuple[str, ...] = setting(
        env="LINKERD2_PROXY_INBOUND_IPS",
        default="",
        parse=list_of(str),
        help="The pod's IPs; inbound connections to other addresses are refused.",
    )
    ingress_mode: bool = setting(
        env="LINKERD2_PROXY_INGRESS_MODE",
        default="false",
        parse=parse_bool,
        help="Ingress mode: route HTTP by l5d-dst-override instead of the original destination.",
    )
    shutdown_grace_period: float = setting(
        env="LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD",
        default="2m",
        parse=parse_duration,
        help="Longest time a graceful shutdown waits for in-flight work.",
    )
    shutdown_endpoint_enabled: bool = setting(
        env="LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
        default="false",
        parse=parse_bool,
        help="Enable the admin POST /shutdown endpoint (for Jobs).",
    )
    pool_idle_timeout: float = setting(
        env="LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
        default="3s",
        parse=parse_duration,
        help="Idle pooled HTTP/1 upstream connections are closed after this (kept below "
        "typical app keep-alive timeouts to avoid reuse races).",
    )
    pool_max_idle_per_endpoint: int = setting(
        env="LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_MAX_IDLE_PER_ENDPOINT",
        default="10000",
        parse=_positive_int,
        help="Most idle pooled HTTP/1 connections kept per endpoint.",
    )
    http1_max_head_bytes: int = setting(
        env="GOSSAMER_PROXY_HTTP1_MAX_HEAD_BYTES",
        default="65536",
        parse=_positive_int,
        help=(
            "Largest HTTP/1 head (start line + headers; for a response also its interim heads,"
            " and its chunk framing or trailers between two pieces of body); larger requests"
            " get 431, larger responses 502."
        ),
    )
    http1_max_headers: int = setting(
        env="GOSSAMER_PROXY_HTTP1_MAX_HEADERS",
        default="128",
        parse=_positive_int,
        help=(
            "Most header fields in an HTTP/1 head or trailer section; more get 431 (request)"
            " or 502 (response)."
        ),
    )
    http1_head_timeout: float = setting(
        env="GOSSAMER_PROXY_HTTP1_HEAD_TIMEOUT",
        default="10s",
        parse=parse_duration,
        help="A request head must arrive within this time of its first byte (else 408).",
    )
    client_idle_timeout: float = setting(
        env="GOSSAMER_PROXY_CLIENT_IDLE_TIMEOUT",
        default="90s",
        parse=parse_duration,
        help="Client connections with nothing in flight are closed after this.",
    )
    http1_body_stall_timeout: float = setting(
        env="GOSSAMER_PROXY_HTTP1_BODY_STALL_TIMEOUT",
        default="60s",
        parse=parse_duration,
        help="A request body that makes no progress for this long aborts the request.",
    )
    outbound_fixed_target: SocketAddr | None = setting(
        env="GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET",
        default=None,
        parse=optional(parse_socket_addr),
        help="Send every outbound connection here instead of its SO_ORIGINAL_DST (tests, "
        "ingress without iptables).",
    )
    inbound_fixed_target: SocketAddr | None = setting(
        env="GOSSAMER_PROXY_INBOUND_FIXED_TARGET",
        default=None,
        parse=optional(parse_socket_addr),
        help="Send every inbound connection here instead of its original destination (the "
        "pod address) or the port its transport header names (benchmarks, tests).",
    )
    splice: bool = setting(
        env="GOSSAMER_PROXY_SPLICE",
        default="true",
        parse=parse_bool,
        help="Copy plaintext opaque TCP with os.splice (zero-copy) where the kernel allows.",
    )
    identity_disabled: bool = setting(
        env="LINKERD2_PROXY_IDENTITY_DISABLED",
        default="false",
        parse=parse_bool,
        help="Run without mesh identity (no mTLS; /ready does not wait for a certificate).",
    )
    identity_local_name: str | None = setting(
        env="LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
        default=None,
        parse=optional(parse_str),
        help="This pod's identity, e.g. default.ns.serviceaccount.identity.gossamer.cluster.local.",
    )
    identity_server_id: str | None = setting(
        env="LINKERD2_PROXY_IDENTITY_SERVER_ID",
        default=None,
        parse=optional(parse_str),
        help="This proxy's identity when it is not the local name: a SPIFFE URI for a proxy "
        "outside Kubernetes (an ExternalWorkload's meshTLS.identity).",
    )
    identity_server_name: str | None = setting(
        env="LINKERD2_PROXY_IDENTITY_SERVER_NAME",
        default=None,
        parse=optional(parse_str),
        help="The TLS server name (SNI) inbound mTLS answers to; defaults to the identity "
        "(an ExternalWorkload's meshTLS.serverName).",
    )
    identity_trust_anchors: str | None = setting(
        env="LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
        default=None,
        parse=optional(parse_str),
        help="The trust anchors as PEM text (not a path).",
    )
    identity_token_file: str = setting(
        env="LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
        default="/var/run/secrets/tokens/linkerd-identity-token",
        parse=parse_str,
        help="Projected service-account token, re-read for every Certify call.",
    )
    identity_svc_addr: str | None = setting(
        env="LINKERD2_PROXY_IDENTITY_SVC_ADDR",
        default=None,
        parse=optional(parse_str),
        help="host:port of the identity service.",
    )
    identity_svc_name: str | None = setting(
        env="LINKERD2_PROXY_IDENTITY_SVC_NAME",
        default=None,
        parse=optional(parse_str),
        help="The identity service's mesh identity (TLS server name); unset = plaintext.",
    )
    identity_dir: str = setting(
        env="LINKERD2_PROXY_IDENTITY_DIR",
        default="/var/run/linkerd/identity/end-entity",
        parse=parse_str,
        help="Accepted for compatibility; the key never leaves memory, so nothing is written.",
    )
    identity_min_refresh: float = setting(
        env="LINKERD2_PROXY_IDENTITY_MIN_REFRESH",
        default="10s",
        parse=parse_duration,
        help="Shortest time between certificate refreshes, and the first retry delay.",
    )
    identity_max_refresh: float = setting(
        env="LINKERD2_PROXY_IDENTITY_MAX_REFRESH",
        default="24h",
        parse=parse_duration,
        help="Longest time between certificate refreshes.",
    )
    destination_svc_addr: str | None = setting(
        env="LINKERD2_PROXY_DESTINATION_SVC_ADDR",
        default=None,
        parse=optional(parse_str),
        help="host:port of the destination service.",
    )
    destination_svc_name: str | None = setting(
        env="LINKERD2_PROXY_DESTINATION_SVC_NAME",
        default=None,
        parse=optional(parse_str),
        help="The destination service's identity (TLS server name); unset = plaintext.",
    )
    destination_context: str = setting(
        env="LINKERD2_PROXY_DESTINATION_CONTEXT",
        default="",
        parse=str,
        help="Context token sent with every Get/GetProfile (JSON with ns, nodeName, pod).",
    )
    policy_svc_addr: str | None = setting(
        env="LINKERD2_PROXY_POLICY_SVC_ADDR",
        default=None,
        parse=optional(parse_str),
        help="host:port of the policy service.",
    )
    policy_svc_name: str | None = setting(
        env="LINKERD2_PROXY_POLICY_SVC_NAME",
        default=None,
        parse=optional(parse_str),
        help="The policy service's identity (TLS server name); unset = plaintext.",
    )
    policy_workload: str = setting(
        env="LINKERD2_PROXY_POLICY_WORKLOAD",
        default="",
        parse=parse_policy_workload,
        help='Workload JSON for WatchPort, e.g. {"ns":"emojivoto","pod":"web-0"}; the proxy '
        'of an ExternalWorkload: {"ns":"<ns>","external_workload":"<name>"}.',
    )
    policy_cluster_networks: tuple[str, ...] = setting(
        env="LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS",
        default="10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16",
        parse=list_of(parse_str),
        help="Networks the cluster-* default inbound policies admit.",
    )
    inbound_default_policy: str = setting(
        env="LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
        default="all-unauthenticated",
        parse=parse_str,
        help="Inbound policy until the policy service answers for a port.",
    )
    outbound_discovery_idle_timeout: float = setting(
        env="LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
        default="5s",
        parse=parse_duration,
        help="Unused outbound discovery watches are dropped after this.",
    )
    inbound_discovery_idle_timeout: float = setting(
        env="LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT",
        default="90s",
        parse=parse_duration,
        help="Unused inbound port policy watches are dropped after this.",
    )
    control_stream_initial_timeout: float = setting(
        env="LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT",
        default="3s",
        parse=parse_duration,
        help="A control-plane stream with no first message by then is restarted.",
    )
    control_stream_idle_timeout: float = setting(
        env="LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT",
        default="5m",
        parse=parse_duration,
        help="A control-plane stream silent this long is restarted.",
    )
    control_stream_lifetime: float = setting(
        env="LINKERD2_PROXY_CONTROL_STREAM_LIFETIME",
        default="1h",
        parse=parse_duration,
        help="Control-plane streams are re-opened after this long.",
    )
    identity_cert_file: str | None = setting(
        env="GOSSAMER_PROXY_IDENTITY_CERT_FILE",
        default=None,
        parse=optional(parse_str),
        help="Static identity: PEM certificate chain (leaf first), read at start and again "
        "when it changes (checked every LINKERD2_PROXY_IDENTITY_MIN_REFRESH) instead of "
        "calling Certify (an external workload's SVID; benchmarks and tests).",
    )
    identity_key_file: str | None = setting(
        env="GOSSAMER_PROXY_IDENTITY_KEY_FILE",
        default=None,
        parse=optional(parse_str),
        help="Static identity: the PEM private key for GOSSAMER_PROXY_IDENTITY_CERT_FILE.",
    )
    destination_profile_networks: tuple[str, ...] = setting(
        env="LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS",
        default="10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
        parse=list_of(parse_str),
        help="Original destinations inside these networks are looked up with the "
        "destination service; others are forwarded as they are.",
    )
    destination_profile_suffixes: tuple[str, ...] = setting(
        env="LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
        default="svc.cluster.local.",
        parse=list_of(parse_str),
        help="Host names under these suffixes are looked up with the destination service.",
    )
    inbound_ports: frozenset[int] = setting(
        env="LINKERD2_PROXY_INBOUND_PORTS",
        default="",
        parse=parse_ports,
        help="The pod's container ports: their inbound policies are watched from the start.",
    )
    inbound_ports_require_identity: frozenset[int] = setting(
        env="LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY",
        default="",
        parse=parse_ports,
        help="Inbound ports whose default policy requires a meshed (mTLS) client.",
    )
    inbound_gateway_suffixes: tuple[str, ...] = setting(
        env="LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
        default="",
        parse=list_of(parse_dns_suffix),
        help="Names a transport header may ask this proxy to forward to (gateway mode).",
    )
    outbound_fixed_identity: str | None = setting(
        env="GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY",
        default=None,
        parse=optional(parse_str),
        help="With GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET: connect with mTLS expecting this "
        "server identity (also the SNI), as if discovery had sent it as the TLS hint.",
    )
    outbound_fixed_opaque_transport_port: int | None = setting(
        env="GOSSAMER_PROXY_OUTBOUND_FIXED_OPAQUE_TRANSPORT_PORT",
        default=None,
        parse=optional(_positive_int),
        help="With a fixed identity: connect to this port of the fixed target's host (the "
        "peer proxy's inbound port) and name the real port in a transport header.",
    )
    metrics_retain_idle: float = setting(
        env="LINKERD2_PROXY_METRICS_RETAIN_IDLE",
        default="10m",
        parse=parse_duration,
        help="Metric series unchanged for this long (and unused) are dropped.",
    )
    metrics_max_authorities: int = setting(
        env="GOSSAMER_PROXY_METRICS_MAX_AUTHORITIES",
        default="256",
        parse=_positive_int,
        help="Most distinct authority label values at a time; further ones are counted "
        'under authority="_overflow" (clients choose Host freely).',
    )
    log_level: str = setting(
        env="LINKERD2_PROXY_LOG",
        default="warn",
        parse=str,
        help="Log filter in Linkerd's directive syntax (warn,linkerd=debug); "
        "see gossamer_common.log_filter. Changeable at runtime with PUT /proxy-log-level.",
    )
    log_format: str = setting(
        env="LINKERD2_PROXY_LOG_FORMAT",
        default="json",
        parse=_log_format,
        help="plain (Linkerd's text lines) or json (one JSON object per line).",
    )
    access_log: str | None = setting(
        env="LINKERD2_PROXY_ACCESS_LOG",
        default="",
        parse=optional(_access_log_format),
        help="Per-request access log of inbound HTTP requests on stderr: apache or json "
        "(empty: off).",
    )
    trace_collector_svc_addr: str | None = setting(
        env="LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR",
        default=None,
        parse=optional(parse_str),
        help="host:port of an OTLP/gRPC trace collector; unset: tracing off (nothing of it "
        "is loaded). Requests that arrive with a sampled W3C or B3 context get a span.",
    )
    trace_collector_svc_name: str | None = setting(
        env="LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME",
        default=None,
        parse=optional(parse_str),
        help="The collector's mesh identity: spans are sent over mTLS to it (unset: plaintext).",
    )
    trace_protocol: str = setting(
        env="LINKERD2_PROXY_TRACE_PROTOCOL",
        default="opentelemetry",
        parse=_trace_protocol,
        help="opentelemetry (OTLP over gRPC); Linkerd's legacy opencensus is not supported.",
    )
    trace_service_name: str | None = setting(
        env="LINKERD2_PROXY_TRACE_SERVICE_NAME",
        default=None,
        parse=optional(parse_str),
        help="The service.name of the proxy's spans (default gossamer-proxy).",
    )
    trace_attributes_path: str | None = setting(
        env="LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH",
        default=None,
        parse=optional(parse_str),
        help='A downward-API file of the pod\'s labels (key="value" lines), added to the '
        "spans' resource.",
    )
    trace_extra_attributes: str | None = setting(
        env="LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES",
        default=None,
        parse=optional(str),
        help="More resource attributes, one key=value per line.",
    )
    trace_batch_delay: float = setting(
        env="GOSSAMER_PROXY_TRACE_BATCH_DELAY",
        default="5s",
        parse=parse_duration,
        help="Spans wait at most this long before they are exported in a batch.",
    )

    @property
    def outbound_listeners(self) -> tuple[SocketAddr, ...]:
        if self.outbound_listen_single is not None:
            return (self.outbound_listen_single,)
        return self.outbound_listen

    @property
    def http1(self) -> Http1Limits:
        return Http1Limits(
            max_head_bytes=self.http1_max_head_bytes,
            max_headers=self.http1_max_headers,
            head_timeout=self.http1_head_timeout,
            idle_timeout=self.client_idle_timeout,
            body_stall_timeout=self.http1_body_stall_timeout,
        )


def load_settings(
    environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None
) -> ProxySettings:
    """Load from the environment (and flags); raises ``SettingsError`` naming bad variables."""
    return load(ProxySettings, argv=() if argv is None else argv, environ=environ)
