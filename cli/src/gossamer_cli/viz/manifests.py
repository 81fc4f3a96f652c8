"""``gossamer viz install``: the viz extension's manifests, shaped as ``linkerd viz install``'s.

This renders the ``gossamer-viz`` namespace (meshed, labelled as a Linkerd extension) and:
- Prometheus: its ServiceAccount and cluster-wide read access to pods, its configuration (the
  ``linkerd-proxy`` scrape job of :mod:`.scrape`, with Kubernetes pod discovery), its
  Deployment and its Service on 9090;
- the Grafana dashboards of :mod:`.dashboards`, one ConfigMap each, for a Grafana's dashboard
  sidecar to load;
- the ``web`` dashboard (:mod:`gossamer_cli.viz.web`): its ServiceAccount with read access to
  the workloads it lists, its Deployment and its Service on 8084. It answers only to the Host
  names of its Service and of loopback (``kubectl port-forward``), as Linkerd's does.

The image defaults to the upstream Prometheus image, as Linkerd's: Debian's ``prometheus``
package (which local mode runs) is built without Kubernetes discovery, so an image made from
it could not find the proxies on a cluster.
"""

from __future__ import annotations

from typing import Any

import yaml

from gossamer_cli.viz import dashboards, scrape

NAMESPACE = "gossamer-viz"
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
PROMETHEUS_PORT = 9090
WEB_IMAGE = "gossamer/viz-web:dev"
WEB_PORT = 8084
CONFIG_KEY = "prometheus.yml"
NOBODY = 65534


def _labels(component: str) -> dict[str, str]:
    return {
        "linkerd.io/extension": "viz",
        "component": component,
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": "gossamer-viz",
    }


def render(
    *,
    namespace: str = NAMESPACE,
    control_plane_namespace: str = "gossamer",
    prometheus_image: str = PROMETHEUS_IMAGE,
    scrape_interval: str = "10s",
    web_image: str = WEB_IMAGE,
    cluster_domain: str = "cluster.local",
) -> list[dict[str, Any]]:
    labels = _labels("prometheus")
    name = "prometheus"
    config = scrape.prometheus_config(
        control_plane_namespace=control_plane_namespace,
        discovery=scrape.kubernetes_discovery(),
        scrape_interval=scrape_interval,
    )
    cluster_name = f"{control_plane_namespace}-{namespace}-prometheus"
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {
                    "linkerd.io/extension": "viz",
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
                "annotations": {"linkerd.io/inject": "enabled"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name, "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "nodes/proxy", "pods"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "prometheus-config", "namespace": namespace, "labels": labels},
            "data": {CONFIG_KEY: yaml.safe_dump(config, sort_keys=False)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "selector": {"component": "prometheus"},
                "ports": [
                    {"name": "admin-http", "port": PROMETHEUS_PORT, "targetPort": PROMETHEUS_PORT}
                ],
            },
        },
        _deployment(namespace, name, labels, prometheus_image),
        *dashboards.configmaps(namespace, _labels("grafana-dashboards")),
        *_web(namespace, control_plane_namespace, web_image, cluster_domain),
    ]


def _web(
    namespace: str, control_plane_namespace: str, image: str, cluster_domain: str
) -> list[dict[str, Any]]:
    from gossamer_cli.viz.web import guard

    name = "web"
    labels = _labels(name)
    cluster_name = f"{control_plane_namespace}-{namespace}-web"
    service_hosts = (f"web.{namespace}.svc.{cluster_domain}", f"web.{namespace}.svc")
    prometheus = f"http://prometheus.{namespace}.svc.{cluster_domain}:{PROMETHEUS_PORT}"
    container = {
        "name": name,
        "image": image,
        "args": [
            f"--addr=0.0.0.0:{WEB_PORT}",
            f"--prometheus-url={prometheus}",
            f"--enforced-host={guard.enforced_host_pattern(service_hosts)}",
        ],
        "ports": [{"name": "http", "containerPort": WEB_PORT}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": WEB_PORT}},
        "livenessProbe": {"httpGet": {"path": "/ready", "port": WEB_PORT}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": NOBODY,
            "runAsGroup": NOBODY,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name, "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services"],
                    "verbs": ["get", "list"],
                },
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments", "statefulsets", "daemonsets"],
                    "verbs": ["get", "list"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "selector": {"component": name},
                "ports": [{"name": "http", "port": WEB_PORT, "targetPort": WEB_PORT}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"component": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [container],
                    },
                },
            },
        },
    ]


def _deployment(namespace: str, name: str, labels: dict[str, str], image: str) -> dict[str, Any]:
    container = {
        "name": name,
        "image": image,
        "args": [
            f"--config.file=/etc/prometheus/{CONFIG_KEY}",
            "--storage.tsdb.path=/data",
            "--storage.tsdb.retention.time=6h",
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
            "--log.level=info",
        ],
        "ports": [{"name": "admin-http", "containerPort": PROMETHEUS_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/-/ready", "port": PROMETHEUS_PORT},
            "initialDelaySeconds": 5,
            "timeoutSeconds": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/-/healthy", "port": PROMETHEUS_PORT},
            "initialDelaySeconds": 30,
            "timeoutSeconds": 30,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": NOBODY,
            "runAsGroup": NOBODY,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "prometheus-config", "mountPath": "/etc/prometheus", "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"component": "prometheus"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "securityContext": {"fsGroup": NOBODY},
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {
                            "name": "prometheus-config",
                            "configMap": {"name": "prometheus-config"},
                        },
                    ],
                },
            },
        },
    }
