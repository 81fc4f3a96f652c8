"""Mesh settings from Linkerd's ``LINKERD2_PROXY_*`` environment (linkerd-wire.md §2, §4.3).

The injector writes these for every meshed pod; names and defaults follow the reference so
that a pod spec made for linkerd2-proxy works unchanged. Loading and error messages are
:mod:`gossamer_common.settings` (a bad value names the variable and the expected form).
"""

from __future__ import annotations

from collections.abc import Mapping

from gossamer_common.settings import (
    list_of,
    load,
    optional,
    parse_bool,
    parse_duration,
    parse_str,
    setting,
    settings_class,
)

__all__ = ["MeshSettings", "load_mesh_settings"]


@settings_class
class MeshSettings:
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
        parse=str,
        help='Workload JSON for WatchPort, e.g. {"ns":"emojivoto","pod":"web-0"}.',
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


def load_mesh_settings(environ: Mapping[str, str] | None = None) -> MeshSettings:
    """Load from ``environ`` (default: the process environment)."""
    return load(MeshSettings, argv=(), environ=environ)
