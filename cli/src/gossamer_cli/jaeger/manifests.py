"""``gossamer jaeger install``: the tracing extension's manifests, shaped as ``linkerd jaeger
install``'s (pure).

The ``gossamer-jaeger`` namespace (meshed, labelled as a Linkerd extension) holds:

- ``collector``: an OpenTelemetry collector receiving OTLP (gRPC 4317, HTTP 4318) and Zipkin
  (9411) and exporting to Jaeger. Proxies send their spans here over mTLS: the collector is
  meshed and runs as the ``collector`` service account, the identity the injector derives
  from the address (``collector.gossamer-jaeger:4317`` → ``collector.gossamer-jaeger.
  serviceaccount.identity.<control-plane-ns>.<trust-domain>``).
- ``jaeger``: Jaeger all-in-one (in-memory storage), its UI on 16686.

Which proxies trace is set, as with linkerd-jaeger, by ``config.linkerd.io/trace-collector``
(and ``config.alpha.linkerd.io/trace-collector-service-account``) on a namespace or a pod,
or mesh-wide by the injector's ``--trace-collector``; the injector writes the proxy's
``LINKERD2_PROXY_TRACE_*`` variables from them. Values
(``--set``, Helm syntax): ``namespace``, ``collector.address`` (what proxies are told; an
external collector when ``collector.enabled=false``), ``collector.serviceAccount``,
``collector.image``, ``jaeger.enabled``, ``jaeger.image``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

NAMESPACE = "gossamer-jaeger"
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.115.1"
JAEGER_IMAGE = "jaegertracing/all-in-one:1.64.0"
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
ZIPKIN_PORT = 9411
JAEGER_UI_PORT = 16686
JAEGER_ADMIN_PORT = 14269
COLLECTOR_HEALTH_PORT = 13133
CONFIG_KEY = "collector.yaml"
NOBODY = 65534


class JaegerValuesError(ValueError):
    """A ``--set`` value the extension cannot use."""


@dataclass(frozen=True, slots=True)
class JaegerValues:
    namespace: str = NAMESPACE
    collector_enabled: bool = True
    collector_address: str | None = None
    collector_service_account: str = "collector"
    collector_image: str = COLLECTOR_IMAGE
    jaeger_enabled: bool = True
    jaeger_image: str = JAEGER_IMAGE

    @property
    def proxy_collector_address(self) -> str:
        """What proxies are told (``config.linkerd.io/trace-collector``)."""
        return self.collector_address or f"collector.{self.namespace}:{OTLP_GRPC_PORT}"


_KNOWN = {
    "namespace": ("namespace", str),
    "collector.enabled": ("collector_enabled", bool),
    "collector.address": ("collector_address", str),
    "collector.serviceAccount": ("collector_service_account", str),
    "collector.image": ("collector_image", str),
    "jaeger.enabled": ("jaeger_enabled", bool),
    "jaeger.image": ("jaeger_image", str),
}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def values_from(tree: Mapping[str, Any]) -> JaegerValues:
    """Checked values from a ``--set`` tree; unknown keys and wrong types are refused."""
    kwargs: dict[str, Any] = {}
    for path, value in _flatten(tree).items():
        known = _KNOWN.get(path)
        if known is None:
            raise JaegerValuesError(f"unknown value {path!r}; known: {', '.join(sorted(_KNOWN))}")
        field_name, kind = known
        if kind is bool and not isinstance(value, bool):
            raise JaegerValuesError(f"{path} must be true or false, not {value!r}")
        if kind is str:
            value = str(value)
            if not value or any(c.isspace() for c in value):
                raise JaegerValuesError(f"{path} must be a non-empty word, not {value!r}")
        kwargs[field_name] = value
    values = JaegerValues(**kwargs)
    host, sep, port = values.proxy_collector_address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JaegerValuesError(
            f"collector.address must be host:port, not {values.proxy_collector_address!r}"
        )
    return values


def _labels(component: str) -> dict[str, str]:
    return {
        "linkerd.io/extension": "jaeger",
        "component": component,
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": "gossamer-jaeger",
    }


def collector_config(jaeger_address: str | None) -> dict[str, Any]:
    """The OpenTelemetry collector's pipeline: OTLP and Zipkin in, batched, to Jaeger."""
    exporters: dict[str, Any] = (
        {"otlp": {"endpoint": jaeger_address, "tls": {"insecure": True}}}
        if jaeger_address
        else {"debug": {}}
    )
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
                }
            },
            "zipkin": {"endpoint": f"0.0.0.0:{ZIPKIN_PORT}"},
        },
        "processors": {"batch": {}},
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{COLLECTOR_HEALTH_PORT}"}},
        "exporters": exporters,
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp", "zipkin"],
                    "processors": ["batch"],
                    "exporters": list(exporters),
                }
            },
        },
    }


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": NOBODY,
        "runAsGroup": NOBODY,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _deployment(
    namespace: str,
    name: str,
    service_account: str,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    labels = _labels(name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"component": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service(namespace: str, name: str, ports: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "type": "ClusterIP",
            "selector": {"component": name},
            "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports],
        },
    }


def _service_account(namespace: str, name: str, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(component)},
    }


def _collector(values: JaegerValues) -> list[dict[str, Any]]:
    ns = values.namespace
    jaeger = f"jaeger.{ns}:{OTLP_GRPC_PORT}" if values.jaeger_enabled else None
    config = collector_config(jaeger)
    container = {
        "name": "ot-collector",
        "image": values.collector_image,
        "args": [f"--config=/conf/{CONFIG_KEY}"],
        "ports": [
            {"name": "otlp", "containerPort": OTLP_GRPC_PORT},
            {"name": "otlp-http", "containerPort": OTLP_HTTP_PORT},
            {"name": "zipkin", "containerPort": ZIPKIN_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": COLLECTOR_HEALTH_PORT}},
        "livenessProbe": {"httpGet": {"path": "/", "port": COLLECTOR_HEALTH_PORT}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": _security(),
        "volumeMounts": [{"name": "collector-config", "mountPath": "/conf", "readOnly": True}],
    }
    return [
        _service_account(ns, values.collector_service_account, "collector"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "collector-config",
                "namespace": ns,
                "labels": _labels("collector"),
            },
            "data": {CONFIG_KEY: yaml.safe_dump(config, sort_keys=False)},
        },
        _service(
            ns,
            "collector",
            [("otlp", OTLP_GRPC_PORT), ("otlp-http", OTLP_HTTP_PORT), ("zipkin", ZIPKIN_PORT)],
        ),
        _deployment(
            ns,
            "collector",
            values.collector_service_account,
            container,
            [{"name": "collector-config", "configMap": {"name": "collector-config"}}],
        ),
    ]


def _jaeger(values: JaegerValues) -> list[dict[str, Any]]:
    ns = values.namespace
    container = {
        "name": "jaeger",
        "image": values.jaeger_image,
        "args": ["--query.base-path=/jaeger"],
        "env": [{"name": "COLLECTOR_OTLP_ENABLED", "value": "true"}],
        "ports": [
            {"name": "ui", "containerPort": JAEGER_UI_PORT},
            {"name": "otlp", "containerPort": OTLP_GRPC_PORT},
            {"name": "admin", "containerPort": JAEGER_ADMIN_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": JAEGER_ADMIN_PORT}},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "securityContext": _security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a mount path
    }
    return [
        _service_account(ns, "jaeger", "jaeger"),
        _service(ns, "jaeger", [("ui", JAEGER_UI_PORT), ("otlp", OTLP_GRPC_PORT)]),
        _deployment(ns, "jaeger", "jaeger", container, [{"name": "tmp", "emptyDir": {}}]),
    ]


def render(values: JaegerValues) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": values.namespace,
                "labels": {
                    "linkerd.io/extension": "jaeger",
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
                "annotations": {"linkerd.io/inject": "enabled"},
            },
        }
    ]
    if values.collector_enabled:
        objects += _collector(values)
    if values.jaeger_enabled:
        objects += _jaeger(values)
    return objects


def uninstall_objects(values: JaegerValues) -> list[dict[str, Any]]:
    """The extension's objects, names only, the namespace last (for ``kubectl delete``)."""
    rendered = render(values)
    ordered = [o for o in rendered if o["kind"] != "Namespace"] + [
        o for o in rendered if o["kind"] == "Namespace"
    ]
    return [
        {
            "apiVersion": o["apiVersion"],
            "kind": o["kind"],
            "metadata": {k: v for k, v in o["metadata"].items() if k in ("name", "namespace")},
        }
        for o in ordered
    ]
