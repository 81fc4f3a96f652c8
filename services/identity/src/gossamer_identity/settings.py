"""Settings of the identity service (Linkerd's ``identity`` flags, linkerd-wire.md §4).

Each field can be set with a ``GOSSAMER_IDENTITY_*`` environment variable or a flag;
flags win. ``python -m gossamer_identity --help`` lists them all.
"""

from __future__ import annotations

from pathlib import Path

from gossamer_common.settings import (
    SocketAddr,
    optional,
    parse_bool,
    parse_duration,
    parse_log_level,
    parse_path,
    parse_socket_addr,
    parse_str,
    setting,
    settings_class,
)

_ENV = "GOSSAMER_IDENTITY_"


@settings_class
class IdentitySettings:
    trust_anchors_path: Path = setting(
        env=_ENV + "TRUST_ANCHORS_PATH",
        flag="--trust-anchors-path",
        default="/var/run/gossamer/identity/trust-roots/ca-bundle.crt",
        parse=parse_path,
        help="PEM bundle of the mesh's trust anchors (roots).",
    )
    issuer_dir: Path = setting(
        env=_ENV + "ISSUER_DIR",
        flag="--issuer",
        default="/var/run/gossamer/identity/issuer",
        parse=parse_path,
        help="Directory of the mounted issuer Secret: crt.pem + key.pem (linkerd.io/tls) or "
        "tls.crt + tls.key (kubernetes.io/tls). Watched and reloaded on rotation.",
    )
    issuer_poll_interval: float = setting(
        env=_ENV + "ISSUER_POLL_INTERVAL",
        flag="--issuer-poll-interval",
        default="1s",
        parse=parse_duration,
        help="How often the issuer and trust-anchor files are checked for rotation.",
    )
    issuance_lifetime: float = setting(
        env=_ENV + "ISSUANCE_LIFETIME",
        flag="--issuance-lifetime",
        default="24h",
        parse=parse_duration,
        help="Lifetime of the certificates issued to proxies.",
    )
    clock_skew_allowance: float = setting(
        env=_ENV + "CLOCK_SKEW_ALLOWANCE",
        flag="--clock-skew-allowance",
        default="20s",
        parse=parse_duration,
        help="How far before now an issued certificate's notBefore is set.",
    )
    trust_domain: str = setting(
        env=_ENV + "TRUST_DOMAIN",
        flag="--identity-trust-domain",
        default="cluster.local",
        parse=parse_str,
        help="Trust domain of identity names.",
    )
    controller_namespace: str = setting(
        env=_ENV + "CONTROLLER_NAMESPACE",
        flag="--controller-namespace",
        default="gossamer",
        parse=parse_str,
        help="Namespace of the control plane (part of every identity name).",
    )
    grpc_addr: SocketAddr = setting(
        env=_ENV + "ADDR",
        flag="--addr",
        default="0.0.0.0:8080",
        parse=parse_socket_addr,
        help="Listen address of the Identity gRPC service.",
    )
    admin_addr: SocketAddr = setting(
        env=_ENV + "ADMIN_ADDR",
        flag="--admin-addr",
        default="0.0.0.0:9990",
        parse=parse_socket_addr,
        help="Listen address of the admin server (/metrics, /live, /ready).",
    )
    kubeconfig: Path | None = setting(
        env="KUBECONFIG",
        flag="--kubeconfig",
        default=None,
        parse=optional(parse_path),
        help="Kubeconfig to use; unset means the in-cluster service account.",
    )
    token_review_timeout: float = setting(
        env=_ENV + "TOKEN_REVIEW_TIMEOUT",
        flag="--token-review-timeout",
        default="10s",
        parse=parse_duration,
        help="Deadline of one TokenReview call to the apiserver.",
    )
    legacy_token_audience_fallback: bool = setting(
        env=_ENV + "LEGACY_TOKEN_AUDIENCE_FALLBACK",
        flag="--legacy-token-audience-fallback",
        default="false",
        parse=parse_bool,
        help="Retry a TokenReview without audiences when the token has other audiences "
        "(Linkerd's behaviour for clusters without token projection; weaker).",
    )
    check_token_review_permission: bool = setting(
        env=_ENV + "CHECK_TOKEN_REVIEW_PERMISSION",
        flag="--check-token-review-permission",
        default="true",
        parse=parse_bool,
        help="At start-up, refuse to run unless this service account may create TokenReviews.",
    )
    log_level: str = setting(
        env=_ENV + "LOG_LEVEL",
        flag="--log-level",
        default="info",
        parse=parse_log_level,
        help="Minimum level of the JSON log lines written to stderr.",
    )
    shutdown_grace_period: float = setting(
        env=_ENV + "SHUTDOWN_GRACE_PERIOD",
        flag="--shutdown-grace-period",
        default="30s",
        parse=parse_duration,
        help="How long in-flight requests may take to finish after SIGTERM.",
    )
