"""``gossamer viz install``: the viz extension's manifests, shaped as ``linkerd viz install``'s.

The Helm chart ``charts/gossamer-viz`` renders the same objects (a test holds the two
together: tests/integration/test_viz_chart_render.py), so a change here needs the same change
there.

This renders the ``gossamer-viz`` namespace (meshed, labelled as a Linkerd extension) and:
- Prometheus: its ServiceAccount and cluster-wide read access to pods, its configuration (the
  ``linkerd-proxy`` scrape job of :mod:`.scrape`, with Kubernetes pod discovery), its
  Deployment and its Service on 9090;
- the Grafana dashboards of :mod:`.dashboards`, one ConfigMap each, for a Grafana's dashboard
  sidecar to load;
- the ``web`` dashboard (:mod:`gossamer_cli.viz.web`): its ServiceAccount with read access to
  the workloads it lists, its Deployment and its Service on 8084. It answers only to the Host
  names of its Service and of loopback (``kubectl port-forward``), as Linkerd's does.

- the ``tap`` service (:mod:`gossamer_cli.viz.tap_service`): its ServiceAccount (whose
  mesh identity is the one the proxies let tap them), read access to pods and services,
  Kubernetes's ``system:auth-delegator`` (TokenReview and SubjectAccessReview) and the
  ``extension-apiserver-authentication-reader`` Role in ``kube-system`` (the cluster's client
  CA), read access to the control plane's trust-roots ConfigMap, its serving certificate
  (Secret ``tap-k8s-tls``, CA in ``ca.crt``), its Deployment and its Service on 8089. The
  ``tap-admin`` ClusterRole (verb ``watch`` in API group ``tap.linkerd.io``, as Linkerd's) is
  what a user needs to tap; the dashboard's account is bound to it. The tap pod is not
  meshed: it speaks mTLS to the proxies itself, with the certificate it gets from the
  identity service, and its callers authenticate to it over HTTPS, directly or through the
  kube-apiserver: the ``v1alpha1.tap.linkerd.io`` APIService (``caBundle``: the tap CA)
  makes the apiserver proxy the tap API to it, as Linkerd's does.

The image defaults to the upstream Prometheus image, as Linkerd's: Debian's ``prometheus``
package (which local mode runs) is built without Kubernetes discovery, so an image made from
it could not find the proxies on a cluster.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import yaml

from gossamer_cli.viz import dashboards, scrape

NAMESPACE = "gossamer-viz"
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
PROMETHEUS_PORT = 9090
WEB_IMAGE = "gossamer/viz-web:dev"
WEB_PORT = 8084
TAP_IMAGE = "gossamer/viz-tap:dev"
TAP_PORT = 8089
TAP_API_GROUP = "tap.linkerd.io"
TAP_API_VERSION = "v1alpha1"
TAP_TLS_SECRET = "tap-k8s-tls"  # noqa: S105 - a Secret's name
TAP_TLS_DIR = "/var/run/gossamer/tls"
IDENTITY_TOKEN_DIR = "/var/run/secrets/tokens"  # noqa: S105 - a mount path
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
    tap_image: str = TAP_IMAGE,
    cluster_domain: str = "cluster.local",
    trust_domain: str = "cluster.local",
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
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
        *_prometheus(namespace, control_plane_namespace, prometheus_image, scrape_interval),
        *dashboards.configmaps(namespace, _labels("grafana-dashboards")),
        *_web(namespace, control_plane_namespace, web_image, cluster_domain),
        *_tap(
            namespace,
            control_plane_namespace,
            tap_image,
            cluster_domain,
            trust_domain,
            now or dt.datetime.now(dt.UTC),
        ),
    ]


# Builders of the objects each component has; a component's function states only its own parts.


def _service_account(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }


def _cluster_role(name: str, labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels},
        "rules": rules,
    }


def _binding(
    kind: str, name: str, labels: dict[str, str], role_kind: str, role: str, account: str,
    namespace: str, binding_namespace: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if binding_namespace is not None:
        meta["namespace"] = binding_namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def _cluster_role_binding(
    name: str, labels: dict[str, str], cluster_role: str, account: str, namespace: str
) -> dict[str, Any]:
    """Binds the ServiceAccount ``account`` of ``namespace`` to a ClusterRole, cluster-wide."""
    return _binding(
        "ClusterRoleBinding", name, labels, "ClusterRole", cluster_role, account, namespace
    )


def _service(
    name: str, namespace: str, labels: dict[str, str], port_name: str, port: int
) -> dict[str, Any]:
    """A ClusterIP Service on ``port`` in front of the pods of component ``name``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {"component": name},
            "ports": [{"name": port_name, "port": port, "targetPort": port}],
        },
    }


def _restricted_security_context() -> dict[str, Any]:
    """A container's securityContext under the restricted Pod Security Standard, as nobody."""
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
    name: str,
    namespace: str,
    labels: dict[str, str],
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    *,
    pod_labels: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
    pod_security_context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One replica of component ``name``'s pod (run as its ServiceAccount ``name``) on Linux
    nodes; its pod labels are ``labels`` unless ``pod_labels`` are given."""
    pod_metadata: dict[str, Any] = {"labels": labels if pod_labels is None else pod_labels}
    if pod_annotations is not None:
        pod_metadata["annotations"] = pod_annotations
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "nodeSelector": {"kubernetes.io/os": "linux"},
    }
    if pod_security_context is not None:
        pod_spec["securityContext"] = pod_security_context
    pod_spec["containers"] = [container]
    pod_spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"component": name}},
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def _prometheus(
    namespace: str, control_plane_namespace: str, image: str, scrape_interval: str
) -> list[dict[str, Any]]:
    name = "prometheus"
    labels = _labels(name)
    cluster_name = f"{control_plane_namespace}-{namespace}-prometheus"
    config = scrape.prometheus_config(
        control_plane_namespace=control_plane_namespace,
        discovery=scrape.kubernetes_discovery(),
        scrape_interval=scrape_interval,
    )
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
        "securityContext": _restricted_security_context(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "prometheus-config", "mountPath": "/etc/prometheus", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "data", "emptyDir": {}},
        {"name": "prometheus-config", "configMap": {"name": "prometheus-config"}},
    ]
    read_pods = {
        "apiGroups": [""],
        "resources": ["nodes", "nodes/proxy", "pods"],
        "verbs": ["get", "list", "watch"],
    }
    return [
        _service_account(name, namespace, labels),
        _cluster_role(cluster_name, labels, [read_pods]),
        _cluster_role_binding(cluster_name, labels, cluster_name, name, namespace),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "prometheus-config", "namespace": namespace, "labels": labels},
            "data": {CONFIG_KEY: yaml.safe_dump(config, sort_keys=False)},
        },
        _service(name, namespace, labels, "admin-http", PROMETHEUS_PORT),
        _deployment(
            name, namespace, labels, container, volumes, pod_security_context={"fsGroup": NOBODY}
        ),
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
            f"--tap-url=https://tap.{namespace}.svc.{cluster_domain}:{TAP_PORT}",
            f"--tap-ca-file={TAP_TLS_DIR}/ca.crt",
            f"--viz-namespace={namespace}",
        ],
        "volumeMounts": [{"name": "tap-ca", "mountPath": TAP_TLS_DIR, "readOnly": True}],
        "ports": [{"name": "http", "containerPort": WEB_PORT}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": WEB_PORT}},
        "livenessProbe": {"httpGet": {"path": "/ready", "port": WEB_PORT}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": _restricted_security_context(),
    }
    volumes = [
        {
            "name": "tap-ca",
            "secret": {
                "secretName": TAP_TLS_SECRET,
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            },
        }
    ]
    read_workloads = [
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
    ]
    return [
        _service_account(name, namespace, labels),
        _cluster_role(cluster_name, labels, read_workloads),
        _cluster_role_binding(cluster_name, labels, cluster_name, name, namespace),
        _service(name, namespace, labels, "http", WEB_PORT),
        _deployment(name, namespace, labels, container, volumes),
        # Linkerd's linkerd-<ns>-web-admin: the dashboard may tap (its live tap pages).
        _cluster_role_binding(
            f"{cluster_name}-admin",
            labels,
            f"{control_plane_namespace}-{namespace}-tap-admin",
            name,
            namespace,
        ),
    ]


def _tap(
    namespace: str,
    control_plane_namespace: str,
    image: str,
    cluster_domain: str,
    trust_domain: str,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    from gossamer_cli.manifests import TRUST_ROOTS_CONFIG_MAP
    from gossamer_cli.viz.tap_service.serving import generate_serving

    name = "tap"
    labels = _labels(name)
    cluster_name = f"{control_plane_namespace}-{namespace}-tap"
    serving = generate_serving(viz_namespace=namespace, now=now)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    container = {
        "name": name,
        "image": image,
        "args": [
            f"--addr=0.0.0.0:{TAP_PORT}",
            f"--tls-cert={TAP_TLS_DIR}/tls.crt",
            f"--tls-key={TAP_TLS_DIR}/tls.key",
            f"--control-plane-namespace={control_plane_namespace}",
            f"--viz-namespace={namespace}",
            f"--trust-domain={trust_domain}",
            f"--identity-addr=identity.{control_plane_namespace}.svc.{cluster_domain}:8080",
            f"--trust-anchors-configmap={control_plane_namespace}/{TRUST_ROOTS_CONFIG_MAP}",
            f"--token-file={IDENTITY_TOKEN_DIR}/gossamer-identity-token",
        ],
        "ports": [{"name": "https", "containerPort": TAP_PORT}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": TAP_PORT, "scheme": "HTTPS"}},
        "livenessProbe": {"httpGet": {"path": "/ready", "port": TAP_PORT, "scheme": "HTTPS"}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": _restricted_security_context(),
        "volumeMounts": [
            {"name": "tls", "mountPath": TAP_TLS_DIR, "readOnly": True},
            {"name": "identity-token", "mountPath": IDENTITY_TOKEN_DIR, "readOnly": True},
        ],
    }
    identity_token = {
        "serviceAccountToken": {
            "path": "gossamer-identity-token",
            "expirationSeconds": 86400,
            "audience": "identity.l5d.io",
        }
    }
    volumes = [
        {"name": "tls", "secret": {"secretName": TAP_TLS_SECRET}},
        {"name": "identity-token", "projected": {"sources": [identity_token]}},
    ]
    read_pods = {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list"]}
    trust_roots_role = f"{namespace}-tap-trust-roots"
    return [
        _service_account(name, namespace, labels),
        _cluster_role(cluster_name, labels, [read_pods]),
        _cluster_role_binding(cluster_name, labels, cluster_name, name, namespace),
        _cluster_role_binding(
            f"{cluster_name}-auth-delegator", labels, "system:auth-delegator", name, namespace
        ),
        _binding(
            "RoleBinding",
            f"{cluster_name}-auth-reader",
            labels,
            "Role",
            "extension-apiserver-authentication-reader",
            name,
            namespace,
            "kube-system",
        ),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {
                "name": trust_roots_role,
                "namespace": control_plane_namespace,
                "labels": labels,
            },
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [TRUST_ROOTS_CONFIG_MAP],
                    "verbs": ["get"],
                }
            ],
        },
        _binding(
            "RoleBinding",
            trust_roots_role,
            labels,
            "Role",
            trust_roots_role,
            name,
            namespace,
            control_plane_namespace,
        ),
        # Linkerd's linkerd-<ns>-tap-admin: bind users (or groups) to it to let them tap.
        _cluster_role(
            f"{cluster_name}-admin",
            labels,
            [{"apiGroups": ["tap.linkerd.io"], "resources": ["*"], "verbs": ["watch"]}],
        ),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": TAP_TLS_SECRET, "namespace": namespace, "labels": labels},
            "data": {
                "tls.crt": b64(serving.crt_pem),
                "tls.key": b64(serving.key_pem),
                "ca.crt": b64(serving.ca_pem),
            },
        },
        _service(name, namespace, labels, "https", TAP_PORT),
        tap_api_service(namespace, labels, serving.ca_pem),
        _deployment(
            name,
            namespace,
            labels,
            container,
            volumes,
            pod_labels={**labels, "linkerd.io/extension": "viz"},
            # It speaks mTLS to the proxies itself (see the module's docstring).
            pod_annotations={"linkerd.io/inject": "disabled"},
        ),
    ]


def tap_api_service(
    namespace: str, labels: dict[str, str], ca_pem: bytes, port: int = TAP_PORT
) -> dict[str, Any]:
    """Linkerd's ``v1alpha1.tap.linkerd.io`` APIService: the kube-apiserver proxies the tap
    API to the tap Service, trusting its serving certificate through ``caBundle``."""
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{TAP_API_VERSION}.{TAP_API_GROUP}", "labels": labels},
        "spec": {
            "group": TAP_API_GROUP,
            "version": TAP_API_VERSION,
            "groupPriorityMinimum": 1000,
            "versionPriority": 100,
            "service": {"name": "tap", "namespace": namespace, "port": port},
            "caBundle": base64.b64encode(ca_pem).decode(),
        },
    }
