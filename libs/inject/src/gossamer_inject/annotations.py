"""Every annotation, label, container and volume name the injector reads or writes.

These names are part of Linkerd's cluster-visible contract (users, dashboards and the real
``linkerd2-proxy`` rely on them), so they keep Linkerd's spelling even in Gossamer. Keeping
them in one module means a typo is a NameError, not a silently ignored annotation.
"""

from __future__ import annotations

from typing import Final

# --- the opt-in annotation and its values ----------------------------------------------------
INJECT: Final = "linkerd.io/inject"
INJECT_ENABLED: Final = "enabled"
INJECT_DISABLED: Final = "disabled"
INJECT_INGRESS: Final = "ingress"
INJECT_VALUES: Final = frozenset({INJECT_ENABLED, INJECT_DISABLED, INJECT_INGRESS})

# --- annotations the injector writes ---------------------------------------------------------
CREATED_BY: Final = "linkerd.io/created-by"
PROXY_VERSION: Final = "linkerd.io/proxy-version"
TRUST_ROOT_SHA256: Final = "linkerd.io/trust-root-sha256"

# --- labels the injector writes --------------------------------------------------------------
CONTROL_PLANE_NS_LABEL: Final = "linkerd.io/control-plane-ns"
WORKLOAD_NS_LABEL: Final = "linkerd.io/workload-ns"
PROXY_OWNER_LABEL_PREFIX: Final = "linkerd.io/proxy-"
#: Workload kinds that get a ``linkerd.io/proxy-<kind>: <name>`` label on their pods.
OWNER_LABEL_KINDS: Final = (
    "deployment",
    "replicaset",
    "replicationcontroller",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
)

# --- labels that keep objects away from the webhook ------------------------------------------
CONTROL_PLANE_COMPONENT_LABEL: Final = "linkerd.io/control-plane-component"
CNI_RESOURCE_LABEL: Final = "linkerd.io/cni-resource"
ADMISSION_WEBHOOKS_LABEL: Final = "config.linkerd.io/admission-webhooks"

# --- override annotation prefixes (copied from namespace to pod) -----------------------------
CONFIG_PREFIX: Final = "config.linkerd.io/"
CONFIG_ALPHA_PREFIX: Final = "config.alpha.linkerd.io/"
CONFIG_BETA_PREFIX: Final = "config.beta.linkerd.io/"
INHERITABLE_PREFIXES: Final = (CONFIG_PREFIX, CONFIG_ALPHA_PREFIX)


def config(name: str) -> str:
    """``config.linkerd.io/<name>``."""
    return CONFIG_PREFIX + name


# --- config.linkerd.io/* overrides understood by the injector (linkerd-wire.md §4.4) ---------
PROXY_IMAGE: Final = config("proxy-image")
IMAGE_PULL_POLICY: Final = config("image-pull-policy")
PROXY_VERSION_OVERRIDE: Final = config("proxy-version")
INIT_IMAGE: Final = config("init-image")
INIT_IMAGE_VERSION: Final = config("init-image-version")
CONTROL_PORT: Final = config("control-port")
INBOUND_PORT: Final = config("inbound-port")
ADMIN_PORT: Final = config("admin-port")
OUTBOUND_PORT: Final = config("outbound-port")
POD_INBOUND_PORTS: Final = config("pod-inbound-ports")
SKIP_INBOUND_PORTS: Final = config("skip-inbound-ports")
SKIP_OUTBOUND_PORTS: Final = config("skip-outbound-ports")
SKIP_SUBNETS: Final = config("skip-subnets")
OPAQUE_PORTS: Final = config("opaque-ports")
PROXY_CPU_REQUEST: Final = config("proxy-cpu-request")
PROXY_CPU_LIMIT: Final = config("proxy-cpu-limit")
PROXY_CPU_RATIO_LIMIT: Final = config("proxy-cpu-ratio-limit")
PROXY_MEMORY_REQUEST: Final = config("proxy-memory-request")
PROXY_MEMORY_LIMIT: Final = config("proxy-memory-limit")
PROXY_EPHEMERAL_STORAGE_REQUEST: Final = config("proxy-ephemeral-storage-request")
PROXY_EPHEMERAL_STORAGE_LIMIT: Final = config("proxy-ephemeral-storage-limit")
PROXY_UID: Final = config("proxy-uid")
PROXY_GID: Final = config("proxy-gid")
PROXY_LOG_LEVEL: Final = config("proxy-log-level")
PROXY_LOG_FORMAT: Final = config("proxy-log-format")
PROXY_LOG_HTTP_HEADERS: Final = config("proxy-log-http-headers")
ACCESS_LOG: Final = config("access-log")
ENABLE_EXTERNAL_PROFILES: Final = config("enable-external-profiles")
DEFAULT_INBOUND_POLICY: Final = config("default-inbound-policy")
REQUIRE_IDENTITY_INBOUND_PORTS: Final = config("proxy-require-identity-inbound-ports")
METRICS_HOSTNAME_LABELS: Final = config("proxy-metrics-hostname-labels")
OUTBOUND_CONNECT_TIMEOUT: Final = config("proxy-outbound-connect-timeout")
INBOUND_CONNECT_TIMEOUT: Final = config("proxy-inbound-connect-timeout")
OUTBOUND_DISCOVERY_CACHE_UNUSED_TIMEOUT: Final = config(
    "proxy-outbound-discovery-cache-unused-timeout"
)
INBOUND_DISCOVERY_CACHE_UNUSED_TIMEOUT: Final = config(
    "proxy-inbound-discovery-cache-unused-timeout"
)
DISABLE_OUTBOUND_DETECT_TIMEOUT: Final = config("proxy-disable-outbound-protocol-detect-timeout")
DISABLE_INBOUND_DETECT_TIMEOUT: Final = config("proxy-disable-inbound-protocol-detect-timeout")
PROXY_AWAIT: Final = config("proxy-await")
CLOSE_WAIT_TIMEOUT: Final = config("close-wait-timeout")
SHUTDOWN_GRACE_PERIOD: Final = config("shutdown-grace-period")
NATIVE_SIDECAR: Final = config("proxy-enable-native-sidecar")
NATIVE_SIDECAR_ALPHA: Final = CONFIG_ALPHA_PREFIX + "proxy-enable-native-sidecar"
NATIVE_SIDECAR_BETA: Final = CONFIG_BETA_PREFIX + "proxy-enable-native-sidecar"
ADDITIONAL_ENV: Final = config("proxy-additional-env")
ENABLE_GATEWAY: Final = config("enable-gateway")
ADMIN_SHUTDOWN: Final = config("proxy-admin-shutdown")
WAIT_BEFORE_EXIT_SECONDS: Final = CONFIG_ALPHA_PREFIX + "proxy-wait-before-exit-seconds"
#: Linkerd-jaeger's: the OTLP collector's ``host:port``, and its service account (identity).
TRACE_COLLECTOR: Final = config("trace-collector")
TRACE_COLLECTOR_SERVICE_ACCOUNT: Final = CONFIG_ALPHA_PREFIX + "trace-collector-service-account"
#: Written on pods whose proxy traces (as the linkerd-jaeger injector writes it).
TRACING_ENABLED: Final = "jaeger.linkerd.io/tracing-enabled"

# --- container and volume names (linkerd-wire.md §4.3) ---------------------------------------
PROXY_CONTAINER: Final = "linkerd-proxy"
INIT_CONTAINER: Final = "linkerd-init"
FOREIGN_SIDECAR_CONTAINERS: Final = frozenset({"linkerd-proxy", "istio-proxy"})
FOREIGN_INIT_CONTAINERS: Final = frozenset({"linkerd-init", "istio-init"})
XTABLES_LOCK_VOLUME: Final = "linkerd-proxy-init-xtables-lock"
IDENTITY_END_ENTITY_VOLUME: Final = "linkerd-identity-end-entity"
IDENTITY_TOKEN_VOLUME: Final = "linkerd-identity-token"  # noqa: S105 - a volume name
PODINFO_VOLUME: Final = "linkerd-podinfo"
INJECTED_VOLUMES: Final = frozenset(
    {XTABLES_LOCK_VOLUME, IDENTITY_END_ENTITY_VOLUME, IDENTITY_TOKEN_VOLUME, PODINFO_VOLUME}
)
PROXY_PORT_NAME: Final = "linkerd-proxy"
ADMIN_PORT_NAME: Final = "linkerd-admin"

#: Annotations the injector writes onto a pod; uninject removes them.
WRITTEN_ANNOTATIONS: Final = frozenset(
    {CREATED_BY, PROXY_VERSION, TRUST_ROOT_SHA256, TRACING_ENABLED}
)
