"""Render the control plane's manifests in Python: what ``gossamer install`` prints.

Object for object the same as ``helm template charts/gossamer`` with the same values (a test
holds the two together). Every function here is pure: values in, plain dicts out, in the order
``kubectl apply`` needs them (namespace, config, identity material, RBAC, services, workloads,
then the webhook that points at the injector).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from gossamer_inject import WebhookTarget, render_webhook_config
from gossamer_inject import annotations as a

from gossamer_cli.manifests_proxy import ProxySpec, mesh_pod, mesh_volumes, pod_annotations
from gossamer_cli.manifests_values import ChartValues, ResourceSpec, ValuesError, charts_dir

PART_OF = "gossamer"
CONFIG_MAP = "gossamer-config"
TRUST_ROOTS_CONFIG_MAP = "gossamer-identity-trust-roots"
ISSUER_SECRET = "gossamer-identity-issuer"  # noqa: S105 - a Secret's name
INJECTOR_TLS_SECRET = "gossamer-proxy-injector-k8s-tls"  # noqa: S105 - a Secret's name
IDENTITY_DIR = "/var/run/gossamer/identity"
TRUST_ROOTS_DIR = f"{IDENTITY_DIR}/trust-roots"
ISSUER_DIR = f"{IDENTITY_DIR}/issuer"
INJECTOR_TLS_DIR = "/var/run/gossamer/tls"
CONTROLLER_UID = 2103


@dataclass(frozen=True, slots=True)
class Component:
    """One control-plane Deployment and what surrounds it."""

    #: ``linkerd.io/control-plane-component`` value.
    name: str
    #: Image repository under the registry.
    image: str
    grpc_port: int
    grpc_port_name: str
    admin_port: int
    proxy: ProxySpec
    #: Further (name, port) the controller listens on.
    extra_ports: tuple[tuple[str, int], ...] = ()

    @property
    def object_name(self) -> str:
        return f"gossamer-{self.name}"


IDENTITY = Component(
    name="identity",
    image="identity",
    grpc_port=8080,
    grpc_port_name="grpc",
    admin_port=9990,
    proxy=ProxySpec(
        inbound_ports=(8080, 9990),
        env_overrides={"LINKERD2_PROXY_IDENTITY_SVC_ADDR": "localhost.:8080"},
        startup_path="/live",
    ),
)
DESTINATION = Component(
    name="destination",
    image="destination",
    grpc_port=8086,
    grpc_port_name="grpc",
    admin_port=9996,
    # The same process serves the inbound/outbound policy APIs where proxies expect them.
    extra_ports=(("policy-grpc", 8090),),
    proxy=ProxySpec(
        inbound_ports=(8086, 8090, 9996),
        env_overrides={
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": "localhost.:8086",
            "LINKERD2_PROXY_POLICY_SVC_ADDR": "localhost.:8090",
        },
    ),
)
PROXY_INJECTOR = Component(
    name="proxy-injector",
    image="injector",
    grpc_port=8443,
    grpc_port_name="proxy-injector",
    admin_port=9995,
    # The apiserver calls the webhook without the mesh: its port bypasses the proxy.
    proxy=ProxySpec(inbound_ports=(8443, 9995), env_overrides={}, skip_inbound_ports="8443"),
)
COMPONENTS = (IDENTITY, DESTINATION, PROXY_INJECTOR)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def common_labels(values: ChartValues) -> dict[str, str]:
    return {
        a.CONTROL_PLANE_NS_LABEL: values.namespace,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/version": values.tag,
    }


def component_labels(values: ChartValues, c: Component) -> dict[str, str]:
    return {
        **common_labels(values),
        a.CONTROL_PLANE_COMPONENT_LABEL: c.name,
        "app.kubernetes.io/name": c.object_name,
    }


def selector_labels(values: ChartValues, c: Component) -> dict[str, str]:
    return {a.CONTROL_PLANE_COMPONENT_LABEL: c.name, a.CONTROL_PLANE_NS_LABEL: values.namespace}


def _meta(values: ChartValues, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": values.namespace, "labels": labels}


# --- namespace and configuration -------------------------------------------------------------


def namespace(values: ChartValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": values.namespace,
            "labels": {
                **common_labels(values),
                "linkerd.io/is-control-plane": "true",
                a.ADMISSION_WEBHOOKS_LABEL: "disabled",
            },
        },
    }


def config_map(values: ChartValues) -> dict[str, Any]:
    """``gossamer-config``: the install's settings, read by ``gossamer check`` and ``version``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(values, CONFIG_MAP, common_labels(values)),
        "data": {
            "version": values.tag,
            "registry": values.registry,
            "controlPlaneNamespace": values.namespace,
            "clusterDomain": values.cluster_domain,
            "identityTrustDomain": values.trust_domain,
            "clusterNetworks": values.cluster_networks,
            "issuerScheme": values.issuer_scheme,
            "highAvailability": "true" if values.replicas > 1 else "false",
        },
    }


def trust_roots(values: ChartValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(values, TRUST_ROOTS_CONFIG_MAP, component_labels(values, IDENTITY)),
        "data": {"ca-bundle.crt": values.trust_anchors_pem},
    }


def issuer_secret(values: ChartValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "linkerd.io/tls",
        "metadata": _meta(values, ISSUER_SECRET, component_labels(values, IDENTITY)),
        "data": {"crt.pem": _b64(values.issuer_crt_pem), "key.pem": _b64(values.issuer_key_pem)},
    }


def injector_tls_secret(values: ChartValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": _meta(values, INJECTOR_TLS_SECRET, component_labels(values, PROXY_INJECTOR)),
        "data": {
            "tls.crt": _b64(values.injector_crt_pem),
            "tls.key": _b64(values.injector_key_pem),
        },
    }


# --- RBAC ------------------------------------------------------------------------------------


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


READ = ["get", "list", "watch"]

#: Least privilege, per component (linkerd-wire.md §2-§4 for what each one calls).
CLUSTER_RULES: dict[str, list[dict[str, Any]]] = {
    "identity": [
        _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        _rule([""], ["events"], ["create", "patch"]),
    ],
    "destination": [
        _rule([""], ["pods", "services", "namespaces", "nodes"], READ),
        _rule(["discovery.k8s.io"], ["endpointslices"], READ),
        _rule(["apps"], ["replicasets"], READ),
        _rule(["batch"], ["jobs"], READ),
        _rule(["linkerd.io"], ["serviceprofiles"], READ),
        _rule(
            ["policy.linkerd.io"],
            [
                "servers",
                "serverauthorizations",
                "authorizationpolicies",
                "meshtlsauthentications",
                "networkauthentications",
                "httproutes",
                "httplocalratelimitpolicies",
                "egressnetworks",
            ],
            READ,
        ),
        _rule(["workload.linkerd.io"], ["externalworkloads"], READ),
        _rule(
            ["gateway.networking.k8s.io"],
            ["httproutes", "grpcroutes", "tcproutes", "tlsroutes"],
            READ,
        ),
        # Route status (Accepted/ResolvedRefs) goes through the status subresource only.
        _rule(["policy.linkerd.io"], ["httproutes/status"], ["patch"]),
        _rule(
            ["gateway.networking.k8s.io"],
            ["httproutes/status", "grpcroutes/status", "tcproutes/status", "tlsroutes/status"],
            ["patch"],
        ),
    ],
    "proxy-injector": [
        _rule([""], ["namespaces"], ["get"]),
        _rule(["apps"], ["replicasets"], ["get"]),
        _rule(["batch"], ["jobs"], ["get"]),
        _rule([""], ["events"], ["create", "patch"]),
    ],
}


def service_account(values: ChartValues, c: Component) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(values, c.object_name, component_labels(values, c)),
    }


def cluster_role_name(values: ChartValues, c: Component) -> str:
    # Cluster-scoped: the namespace in the name lets two control planes coexist.
    return f"gossamer-{values.namespace}-{c.name}"


def cluster_role(values: ChartValues, c: Component) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": cluster_role_name(values, c), "labels": component_labels(values, c)},
        "rules": CLUSTER_RULES[c.name],
    }


def cluster_role_binding(values: ChartValues, c: Component) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": cluster_role_name(values, c), "labels": component_labels(values, c)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role_name(values, c),
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": c.object_name, "namespace": values.namespace}
        ],
    }


# --- Services --------------------------------------------------------------------------------


def _service(
    values: ChartValues, c: Component, name: str, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(values, name, component_labels(values, c)),
        "spec": {"type": "ClusterIP", "selector": selector_labels(values, c), "ports": ports},
    }


def _port(name: str, port: int, target: str) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}


def services(values: ChartValues) -> list[dict[str, Any]]:
    """Names and ports the injector writes into every proxy (gossamer_inject.MeshValues)."""
    return [
        _service(values, IDENTITY, "gossamer-identity", [_port("grpc", 8080, "grpc")]),
        _service(
            values,
            DESTINATION,
            "gossamer-dst",
            [_port("grpc", 8086, "grpc"), _port("policy-grpc", 8090, "policy-grpc")],
        ),
        _service(
            values,
            PROXY_INJECTOR,
            "gossamer-proxy-injector",
            [_port("proxy-injector", 443, "proxy-injector")],
        ),
    ]


# --- Deployments -----------------------------------------------------------------------------


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def _controller_env(values: ChartValues, c: Component) -> list[dict[str, str]]:
    if c is IDENTITY:
        p = "GOSSAMER_IDENTITY_"
        return [
            _env(p + "CONTROLLER_NAMESPACE", values.namespace),
            _env(p + "TRUST_DOMAIN", values.trust_domain),
            _env(p + "TRUST_ANCHORS_PATH", f"{TRUST_ROOTS_DIR}/ca-bundle.crt"),
            _env(p + "ISSUER_DIR", ISSUER_DIR),
            _env(p + "ISSUANCE_LIFETIME", values.issuance_lifetime),
            _env(p + "CLOCK_SKEW_ALLOWANCE", values.clock_skew_allowance),
            _env(p + "ADDR", "0.0.0.0:8080"),
            _env(p + "ADMIN_ADDR", "0.0.0.0:9990"),
            _env(p + "LOG_LEVEL", values.controller_log_level),
        ]
    if c is DESTINATION:
        p = "GOSSAMER_DESTINATION_"
        return [
            _env(p + "CONTROLLER_NAMESPACE", values.namespace),
            _env(p + "CLUSTER_DOMAIN", values.cluster_domain),
            _env(p + "TRUST_DOMAIN", values.trust_domain),
            _env(p + "CLUSTER_NETWORKS", values.cluster_networks),
            _env(p + "DEFAULT_INBOUND_POLICY", values.proxy_default_inbound_policy),
            _env(p + "ENABLE_IPV6", "false" if values.disable_ipv6 else "true"),
            _env(p + "GRPC_ADDR", "0.0.0.0:8086"),
            _env(p + "POLICY_ADDR", "0.0.0.0:8090"),
            _env(p + "ADMIN_ADDR", "0.0.0.0:9996"),
            # The destination process reads the shared GOSSAMER_LOG_LEVEL.
            _env("GOSSAMER_LOG_LEVEL", values.controller_log_level),
        ]
    p = "GOSSAMER_INJECTOR_"
    return [
        _env(p + "LISTEN", "0.0.0.0:8443"),
        _env(p + "ADMIN_LISTEN", "0.0.0.0:9995"),
        _env(p + "TLS_CERT_FILE", f"{INJECTOR_TLS_DIR}/tls.crt"),
        _env(p + "TLS_KEY_FILE", f"{INJECTOR_TLS_DIR}/tls.key"),
        _env(p + "TRUST_ANCHORS_FILE", f"{TRUST_ROOTS_DIR}/ca-bundle.crt"),
        _env(p + "CONTROL_PLANE_NAMESPACE", values.namespace),
        _env(p + "TRUST_DOMAIN", values.trust_domain),
        _env(p + "CLUSTER_DOMAIN", values.cluster_domain),
        _env(p + "PROXY_IMAGE", values.images["proxy"].repository),
        _env(p + "INIT_IMAGE", values.images["proxyInit"].repository),
        _env(p + "PROXY_VERSION", values.images["proxy"].tag),
        _env(p + "INIT_VERSION", values.images["proxyInit"].tag),
        _env(p + "NATIVE_SIDECAR", "true" if values.proxy_native_sidecar else "false"),
        _env(p + "IPTABLES_MODE", values.iptables_mode),
        _env(p + "DISABLE_IPV6", "true" if values.disable_ipv6 else "false"),
        _env(p + "CLUSTER_NETWORKS", values.cluster_networks),
        _env(p + "DEFAULT_INBOUND_POLICY", values.proxy_default_inbound_policy),
        _env(p + "LOG_LEVEL", values.controller_log_level),
    ]


def _controller_volumes(values: ChartValues, c: Component) -> list[dict[str, Any]]:
    trust = {"name": "trust-roots", "configMap": {"name": TRUST_ROOTS_CONFIG_MAP}}
    if c is IDENTITY:
        return [trust, {"name": "identity-issuer", "secret": {"secretName": ISSUER_SECRET}}]
    if c is PROXY_INJECTOR:
        return [trust, {"name": "tls", "secret": {"secretName": INJECTOR_TLS_SECRET}}]
    return []


def _controller_mounts(c: Component) -> list[dict[str, Any]]:
    trust = {"name": "trust-roots", "mountPath": TRUST_ROOTS_DIR, "readOnly": True}
    if c is IDENTITY:
        return [trust, {"name": "identity-issuer", "mountPath": ISSUER_DIR, "readOnly": True}]
    if c is PROXY_INJECTOR:
        return [trust, {"name": "tls", "mountPath": INJECTOR_TLS_DIR, "readOnly": True}]
    return []


def _resources(spec: ResourceSpec) -> dict[str, Any]:
    return spec.as_dict()


def component_resources(values: ChartValues, c: Component) -> ResourceSpec:
    return {
        "identity": values.identity_resources,
        "destination": values.destination_resources,
        "proxy-injector": values.injector_resources,
    }[c.name]


def controller_container(values: ChartValues, c: Component) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": c.name,
        "image": str(values.images[c.image]),
        "imagePullPolicy": values.pull_policy,
        "env": _controller_env(values, c),
        "ports": [
            {"name": c.grpc_port_name, "containerPort": c.grpc_port},
            *({"name": name, "containerPort": port} for name, port in c.extra_ports),
            {"name": "admin-http", "containerPort": c.admin_port},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": "admin-http"},
            "initialDelaySeconds": 10,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "admin-http"},
            "failureThreshold": 7,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": CONTROLLER_UID,
            "runAsGroup": CONTROLLER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = _resources(component_resources(values, c))
    if resources:
        container["resources"] = resources
    mounts = _controller_mounts(c)
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _affinity(values: ChartValues, c: Component) -> dict[str, Any]:
    match = {"matchLabels": selector_labels(values, c)}
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": match, "topologyKey": "kubernetes.io/hostname"}
            ],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": match,
                        "topologyKey": "topology.kubernetes.io/zone",
                    },
                }
            ],
        }
    }


def deployment(values: ChartValues, c: Component) -> dict[str, Any]:
    init, proxy = mesh_pod(values, c.proxy)
    controller = controller_container(values, c)
    containers = [controller] if values.proxy_native_sidecar else [proxy, controller]
    pod_labels = {
        **values.pod_labels,
        **component_labels(values, c),
        a.WORKLOAD_NS_LABEL: values.namespace,
        a.PROXY_OWNER_LABEL_PREFIX + "deployment": c.object_name,
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": c.object_name,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": init,
        "containers": containers,
        "volumes": [*_controller_volumes(values, c), *mesh_volumes()],
    }
    if values.node_selector:
        pod_spec["nodeSelector"] = values.node_selector
    if values.anti_affinity:
        pod_spec["affinity"] = _affinity(values, c)
    if values.tolerations:
        pod_spec["tolerations"] = list(values.tolerations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(values, c.object_name, component_labels(values, c)),
        "spec": {
            "replicas": values.replicas,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": selector_labels(values, c)},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"annotations": pod_annotations(values), "labels": pod_labels},
                "spec": pod_spec,
            },
        },
    }


def disruption_budget(values: ChartValues, c: Component) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(values, c.object_name, component_labels(values, c)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(values, c)}},
    }


def webhook_configuration(values: ChartValues) -> dict[str, Any]:
    return render_webhook_config(
        ca_bundle_pem=values.injector_ca_pem.encode(),
        control_plane_namespace=values.namespace,
        target=WebhookTarget(service_name="gossamer-proxy-injector", service_port=443),
        failure_policy="Fail" if values.webhook_failure_policy == "Fail" else "Ignore",
        timeout_seconds=values.webhook_timeout_seconds,
        excluded_namespaces=values.webhook_excluded_namespaces,
    )


# --- the whole control plane -----------------------------------------------------------------


def check_complete(values: ChartValues) -> None:
    """Refuse to render without the certificates the chart would also insist on."""
    missing = []
    if not values.trust_anchors_pem:
        missing.append("identityTrustAnchorsPEM")
    if values.issuer_scheme == "linkerd.io/tls":
        if not values.issuer_crt_pem:
            missing.append("identity.issuer.tls.crtPEM")
        if not values.issuer_key_pem:
            missing.append("identity.issuer.tls.keyPEM")
    for key, value in (
        ("proxyInjector.crtPEM", values.injector_crt_pem),
        ("proxyInjector.keyPEM", values.injector_key_pem),
        ("proxyInjector.caBundle", values.injector_ca_pem),
    ):
        if not value:
            missing.append(key)
    if missing:
        raise ValuesError("values: missing " + ", ".join(missing))


def control_plane(values: ChartValues) -> list[dict[str, Any]]:
    check_complete(values)
    objects: list[dict[str, Any]] = []
    if values.install_namespace:
        objects.append(namespace(values))
    objects += [config_map(values), trust_roots(values)]
    if values.issuer_scheme == "linkerd.io/tls":
        objects.append(issuer_secret(values))
    objects.append(injector_tls_secret(values))
    for c in COMPONENTS:
        objects += [service_account(values, c), cluster_role(values, c)]
        objects.append(cluster_role_binding(values, c))
    objects += services(values)
    for c in COMPONENTS:
        objects.append(deployment(values, c))
        if values.pdb:
            objects.append(disruption_budget(values, c))
    objects.append(webhook_configuration(values))
    return objects


# --- CRDs ------------------------------------------------------------------------------------


def crd_files() -> list[Path]:
    templates = charts_dir() / "gossamer-crds" / "templates"
    return sorted(p for p in templates.rglob("*.yaml") if p.is_file())


def crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of the gossamer-crds chart, as plain YAML."""
    files = crd_files()
    if not files:
        raise ValuesError(f"no CRD manifests under {charts_dir() / 'gossamer-crds' / 'templates'}")
    out: list[dict[str, Any]] = []
    for path in files:
        text = path.read_text()
        if "{{" in text:
            raise ValuesError(
                f"{path} uses Helm templating; gossamer install --crds needs plain manifests"
            )
        out += [doc for doc in yaml.safe_load_all(text) if doc]
    return out


# --- output ----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as ``|`` (PEM stays readable), no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        # A dict used twice (e.g. one labels dict as selector and template labels) is written
        # out twice: kubectl and helm users expect plain manifests, not `&id001` / `*id001`.
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    return "".join(
        "---\n" + yaml.dump(o, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
        for o in objects
    )


def to_json_list(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(objects)}
