"""Render the proxy container, the proxy-init container and the volumes they need.

Pure functions from a resolved :class:`~gossamer_inject.config.ProxyConfig` (plus the few
facts about the pod that change the proxy's environment) to plain JSON-ready dicts. The
layout follows linkerd-wire.md §4.3; names that a real ``linkerd2-proxy`` reads are kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gossamer_inject import annotations as a
from gossamer_inject.config import MeshValues, ProxyConfig
from gossamer_inject.values import PortRange, format_port_ranges

IDENTITY_DIR = "/var/run/linkerd/identity/end-entity"
PODINFO_DIR = "/var/run/linkerd/podinfo"
TOKEN_DIR = "/var/run/secrets/tokens"  # noqa: S105 - a mount path
TOKEN_AUDIENCE = "identity.l5d.io"  # noqa: S105 - the token audience
TOKEN_EXPIRATION_SECONDS = 86400
INIT_USER = 65534


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the proxy's environment needs to know about the pod it joins."""

    #: Sorted inbound ports to watch policy for eagerly (container ports + HTTP probe ports).
    inbound_ports: tuple[int, ...]
    #: Opaque ports with named ports already resolved.
    opaque_ports: tuple[PortRange, ...]
    #: The owning workload's name: the ``service.name`` of the proxy's spans (else the pod's).
    workload: str | None = None


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def proxy_env(cfg: ProxyConfig, facts: PodFacts) -> list[dict[str, Any]]:
    """The proxy's environment; downward-API variables first so ``$(...)`` expands."""
    mesh = cfg.mesh
    suffix = "." if cfg.enable_external_profiles else f"svc.{mesh.cluster_domain}."
    env: list[dict[str, Any]] = [
        _field_env("_pod_name", "metadata.name"),
        _field_env("_pod_ns", "metadata.namespace"),
        _field_env("_pod_uid", "metadata.uid"),
        _field_env("_pod_ip", "status.podIP"),
        _field_env("_pod_nodeName", "spec.nodeName"),
        _field_env("_pod_sa", "spec.serviceAccountName"),
        _env("_pod_containerName", a.PROXY_CONTAINER),
        _env("_l5d_ns", mesh.control_plane_namespace),
        _env("_l5d_trustdomain", mesh.trust_domain),
    ]
    if cfg.resources.cores is not None:
        env.append(_env("LINKERD2_PROXY_CORES", str(cfg.resources.cores)))
    else:
        env.append(_env("LINKERD2_PROXY_CORES", "1"))
        env.append(_env("LINKERD2_PROXY_CORES_MIN", "1"))
    if cfg.resources.cores_max_ratio is not None:
        env.append(_env("LINKERD2_PROXY_CORES_MAX_RATIO", cfg.resources.cores_max_ratio))
    env += [
        _env("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", _bool(cfg.admin_shutdown)),
        _env("LINKERD2_PROXY_LOG", cfg.log_level),
        _env("LINKERD2_PROXY_LOG_FORMAT", cfg.log_format),
        _env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", mesh.destination_svc_addr),
        *_svc_name(mesh, "LINKERD2_PROXY_DESTINATION_SVC_NAME", mesh.destination_svc_name),
        _env("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", mesh.cluster_networks),
        _env("LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES", suffix),
        _env(
            "LINKERD2_PROXY_DESTINATION_CONTEXT",
            '{"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)", "pod":"$(_pod_name)"}',
        ),
        _env("LINKERD2_PROXY_POLICY_SVC_ADDR", mesh.policy_svc_addr),
        *_svc_name(mesh, "LINKERD2_PROXY_POLICY_SVC_NAME", mesh.destination_svc_name),
        _env("LINKERD2_PROXY_POLICY_WORKLOAD", '{"ns":"$(_pod_ns)", "pod":"$(_pod_name)"}'),
        _env("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", mesh.cluster_networks),
        _env("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", cfg.default_inbound_policy),
    ]
    inbound_ports = cfg.pod_inbound_ports
    if inbound_ports is None:
        inbound_ports = ",".join(str(p) for p in facts.inbound_ports)
    if inbound_ports:
        env.append(_env("LINKERD2_PROXY_INBOUND_PORTS", inbound_ports))
    if facts.opaque_ports:
        env.append(
            _env(
                "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
                format_port_ranges(facts.opaque_ports),
            )
        )
    if cfg.require_identity_inbound_ports:
        env.append(
            _env(
                "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", cfg.require_identity_inbound_ports
            )
        )
    env += [
        _env("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", "3s"),
        _env("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "5m"),
        _env("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", "1h"),
        _env("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", cfg.inbound_connect_timeout),
        _env("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", cfg.outbound_connect_timeout),
        _env("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", cfg.outbound_discovery_idle_timeout),
        _env("LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT", cfg.inbound_discovery_idle_timeout),
    ]
    if cfg.disable_outbound_detect_timeout:
        env.append(_env("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "365d"))
    if cfg.disable_inbound_detect_timeout:
        env.append(_env("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "365d"))
    ipv6 = not cfg.disable_ipv6
    outbound = f"127.0.0.1:{cfg.outbound_port}"
    env += [
        _env(
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
            f"[::]:{cfg.control_port}" if ipv6 else f"0.0.0.0:{cfg.control_port}",
        ),
        _env(
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
            f"[::]:{cfg.admin_port}" if ipv6 else f"0.0.0.0:{cfg.admin_port}",
        ),
        _env(
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            f"{outbound},[::1]:{cfg.outbound_port}" if ipv6 else outbound,
        ),
        _env(
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
            f"[::]:{cfg.inbound_port}" if ipv6 else f"0.0.0.0:{cfg.inbound_port}",
        ),
        _field_env("LINKERD2_PROXY_INBOUND_IPS", "status.podIPs"),
        _env("LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE", "10000ms"),
        _env("LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE", "10000ms"),
        _env("LINKERD2_PROXY_INBOUND_ACCEPT_USER_TIMEOUT", "30s"),
        _env("LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT", "30s"),
        _env("LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS", _bool(cfg.metrics_hostname_labels)),
        _env("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL", "10s"),
        _env("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT", "3s"),
        _env("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL", "10s"),
        _env("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT", "3s"),
    ]
    if cfg.ingress:
        env.append(_env("LINKERD2_PROXY_INGRESS_MODE", "true"))
    if cfg.enable_gateway:
        env.append(_env("LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES", f"svc.{mesh.cluster_domain}."))
    if cfg.access_log is not None:
        env.append(_env("LINKERD2_PROXY_ACCESS_LOG", cfg.access_log))
    if mesh.tap_svc_name:
        env.append(_env("LINKERD2_PROXY_TAP_SVC_NAME", mesh.tap_svc_name))
    if cfg.shutdown_grace_period is not None:
        env.append(_env("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", cfg.shutdown_grace_period))
    if cfg.log_http_headers is not None:
        env.append(_env("LINKERD2_PROXY_LOG_HTTP_HEADERS", cfg.log_http_headers))
    env += _trace_env(cfg, facts)
    env += [
        _env("LINKERD2_PROXY_IDENTITY_DIR", IDENTITY_DIR),
        _env("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", mesh.trust_anchors_pem),
        _env("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", f"{TOKEN_DIR}/{a.IDENTITY_TOKEN_VOLUME}"),
        _env("LINKERD2_PROXY_IDENTITY_SVC_ADDR", mesh.identity_svc_addr),
        *_svc_name(mesh, "LINKERD2_PROXY_IDENTITY_SVC_NAME", mesh.identity_svc_name),
        _env(
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            "$(_pod_sa).$(_pod_ns).serviceaccount.identity."
            f"{mesh.control_plane_namespace}.{mesh.trust_domain}",
        ),
    ]
    return _merge_env(env, cfg.additional_env)


def _trace_env(cfg: ProxyConfig, facts: PodFacts) -> list[dict[str, Any]]:
    """The linkerd-jaeger injector's variables, when the pod has a trace collector."""
    if cfg.trace_collector is None:
        return []
    env = [
        _env("LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH", f"{PODINFO_DIR}/labels"),
        _env("LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR", cfg.trace_collector),
        _env("LINKERD2_PROXY_TRACE_PROTOCOL", "opentelemetry"),
        _env("LINKERD2_PROXY_TRACE_SERVICE_NAME", facts.workload or "$(_pod_name)"),
        _env(
            "LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES",
            "k8s.pod.uid=$(_pod_uid)\nk8s.container.name=$(_pod_containerName)",
        ),
    ]
    if cfg.trace_collector_identity is not None:
        env += _svc_name(
            cfg.mesh, "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME", cfg.trace_collector_identity
        )
    return env


def _merge_env(
    env: list[dict[str, Any]], extra: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Entries from ``proxy-additional-env`` replace same-named ones, others are appended."""
    index = {item["name"]: i for i, item in enumerate(env)}
    for item in extra:
        copy = json.loads(json.dumps(item))
        if item["name"] in index:
            env[index[item["name"]]] = copy
        else:
            index[item["name"]] = len(env)
            env.append(copy)
    return env


def _svc_name(mesh: MeshValues, name: str, identity: str) -> list[dict[str, Any]]:
    """A control-plane identity, named only when proxies reach the control plane over TLS."""
    return [_env(name, identity)] if mesh.control_plane_tls else []


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _http_probe(path: str, port: int, **extra: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **extra}


def proxy_container(cfg: ProxyConfig, facts: PodFacts) -> dict[str, Any]:
    """The ``linkerd-proxy`` container (a native sidecar when ``cfg.native_sidecar``)."""
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": cfg.proxy_uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if cfg.proxy_gid is not None:
        security["runAsGroup"] = cfg.proxy_gid
    container: dict[str, Any] = {
        "name": a.PROXY_CONTAINER,
        "image": f"{cfg.proxy_image}:{cfg.proxy_version}",
        "imagePullPolicy": cfg.image_pull_policy,
        "env": proxy_env(cfg, facts),
        "ports": [
            {"containerPort": cfg.inbound_port, "name": a.PROXY_PORT_NAME},
            {"containerPort": cfg.admin_port, "name": a.ADMIN_PORT_NAME},
        ],
        "livenessProbe": _http_probe("/live", cfg.admin_port, initialDelaySeconds=10),
        "readinessProbe": _http_probe("/ready", cfg.admin_port, initialDelaySeconds=2),
        "securityContext": security,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"mountPath": IDENTITY_DIR, "name": a.IDENTITY_END_ENTITY_VOLUME},
            {"mountPath": TOKEN_DIR, "name": a.IDENTITY_TOKEN_VOLUME},
        ],
    }
    if cfg.trace_collector is not None:
        container["volumeMounts"].append({"mountPath": PODINFO_DIR, "name": a.PODINFO_VOLUME})
    resources = cfg.resources.as_dict()
    if resources:
        container["resources"] = resources
    lifecycle: dict[str, Any] = {}
    if cfg.native_sidecar:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _http_probe(
            "/ready", cfg.admin_port, periodSeconds=1, failureThreshold=120
        )
    elif cfg.proxy_await:
        lifecycle["postStart"] = {"exec": {"command": list(cfg.mesh.await_command)}}
    if cfg.wait_before_exit_seconds:
        lifecycle["preStop"] = {
            "exec": {"command": ["/bin/sleep", str(cfg.wait_before_exit_seconds)]}
        }
    if lifecycle:
        container["lifecycle"] = lifecycle
    return container


def init_args(cfg: ProxyConfig) -> list[str]:
    """proxy-init's command line (linkerd-wire.md §5.1)."""
    inbound_ignore = (
        PortRange(cfg.control_port, cfg.control_port),
        PortRange(cfg.admin_port, cfg.admin_port),
        *cfg.skip_inbound_ports,
    )
    args = [
        "--incoming-proxy-port",
        str(cfg.inbound_port),
        "--outgoing-proxy-port",
        str(cfg.outbound_port),
        "--proxy-uid",
        str(cfg.proxy_uid),
    ]
    if cfg.proxy_gid is not None:
        args += ["--proxy-gid", str(cfg.proxy_gid)]
    args += ["--inbound-ports-to-ignore", format_port_ranges(inbound_ignore)]
    if cfg.skip_outbound_ports:
        args += ["--outbound-ports-to-ignore", format_port_ranges(cfg.skip_outbound_ports)]
    if cfg.skip_subnets:
        args += ["--subnets-to-ignore", ",".join(cfg.skip_subnets)]
    if cfg.close_wait_timeout_secs is not None:
        args += ["--timeout-close-wait-secs", str(cfg.close_wait_timeout_secs)]
    args += ["--iptables-mode", cfg.iptables_mode, f"--ipv6={_bool(not cfg.disable_ipv6)}"]
    return args


def init_container(cfg: ProxyConfig) -> dict[str, Any]:
    """The ``linkerd-init`` container that writes the pod's iptables rules."""
    return {
        "name": a.INIT_CONTAINER,
        "image": f"{cfg.init_image}:{cfg.init_version}",
        "imagePullPolicy": cfg.image_pull_policy,
        "command": list(cfg.mesh.init_command),
        "args": init_args(cfg),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": INIT_USER,
            "runAsNonRoot": True,
            "runAsUser": INIT_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"mountPath": "/run", "name": a.XTABLES_LOCK_VOLUME}],
    }


def volumes(cfg: ProxyConfig | None = None) -> list[dict[str, Any]]:
    """The xtables lock, the identity key directory (in memory) and the projected token.

    With a trace collector, also the pod's labels through the downward API (the spans'
    resource attributes).
    """
    podinfo: list[dict[str, Any]] = []
    if cfg is not None and cfg.trace_collector is not None:
        podinfo.append(
            {
                "name": a.PODINFO_VOLUME,
                "downwardAPI": {
                    "items": [{"fieldRef": {"fieldPath": "metadata.labels"}, "path": "labels"}]
                },
            }
        )
    return [
        {"name": a.XTABLES_LOCK_VOLUME, "emptyDir": {}},
        {"name": a.IDENTITY_END_ENTITY_VOLUME, "emptyDir": {"medium": "Memory"}},
        {
            "name": a.IDENTITY_TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": TOKEN_AUDIENCE,
                            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                            "path": a.IDENTITY_TOKEN_VOLUME,
                        }
                    }
                ]
            },
        },
        *podinfo,
    ]
