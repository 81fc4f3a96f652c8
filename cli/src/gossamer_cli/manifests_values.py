"""Chart values for ``gossamer install``: the chart's own values files, merged like Helm does.

The CLI renders without Helm, but it reads ``charts/gossamer/values.yaml`` (and
``values-ha.yaml`` for ``--ha``) so the two renderers cannot drift on defaults. ``--set``
follows Helm's ``a.b.c=value`` syntax for the scalar cases an operator needs; the merged tree
is then checked by :class:`ChartValues`, so a typo gives a clear error before anything renders.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHARTS_ENV = "GOSSAMER_CHARTS_DIR"


class ValuesError(ValueError):
    """A values file or ``--set`` entry cannot be used; the message names it."""


def charts_dir() -> Path:
    """The directory holding ``gossamer/`` and ``gossamer-crds/`` (see :func:`find_charts_dir`)."""
    return find_charts_dir(os.environ.get(CHARTS_ENV), Path(__file__).resolve().parent)


def find_charts_dir(override: str | None, package_dir: Path) -> Path:
    """Where the charts are, for a ``gossamer_cli`` package living in ``package_dir``.

    In order: ``$GOSSAMER_CHARTS_DIR`` (``override``) when set; the copy a built wheel carries
    at ``gossamer_cli/charts`` (cli/hatch_build.py puts it there), because it matches the code
    that was installed with it; otherwise the ``charts/`` of the checkout the package sits in
    (editable installs and the repository's venv, which carry no copy).
    """
    if override:
        path = Path(override)
        if not _holds_charts(path):
            raise ValuesError(f"{CHARTS_ENV}={override} has no gossamer/Chart.yaml")
        return path
    packaged = package_dir / "charts"
    if _holds_charts(packaged):
        return packaged
    for parent in package_dir.parents:
        candidate = parent / "charts"
        if _holds_charts(candidate):
            return candidate
    raise ValuesError(
        f"cannot find the Gossamer charts: not packaged at {packaged} and no checkout around "
        f"it; set {CHARTS_ENV} to the charts/ directory of a checkout"
    )


def _holds_charts(path: Path) -> bool:
    return (path / "gossamer" / "Chart.yaml").is_file()


def load_yaml_file(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValuesError(f"cannot read values file {path}: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValuesError(f"values file {path} must hold a mapping, not {type(doc).__name__}")
    return doc


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            out[key] = merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _scalar(text: str) -> Any:
    """``--set`` typing as Helm does it: true/false/null and integers, else the string."""
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return int(text)
    return text


def parse_set(entries: Iterable[str], *, literal: bool = False) -> dict[str, Any]:
    """``["proxy.logLevel=debug", "controllerReplicas=2"]`` → a nested override tree."""
    out: dict[str, Any] = {}
    for entry in entries:
        path, sep, value = entry.partition("=")
        if not sep or not path or any(not part for part in path.split(".")):
            raise ValuesError(f"--set {entry!r}: expected key.path=value")
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValuesError(f"--set {entry!r}: {part} is already set to a value")
            node = child
        node[parts[-1]] = value if literal else _scalar(value)
    return out


def chart_values(
    *, ha: bool = False, files: Iterable[Path] = (), overrides: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """values.yaml, then values-ha.yaml, then ``-f`` files, then ``--set`` trees."""
    chart = charts_dir() / "gossamer"
    values = load_yaml_file(chart / "values.yaml")
    if ha:
        values = merge(values, load_yaml_file(chart / "values-ha.yaml"))
    for path in files:
        values = merge(values, load_yaml_file(path))
    for tree in overrides:
        values = merge(values, tree)
    return values


def chart_app_version() -> str:
    meta = load_yaml_file(charts_dir() / "gossamer" / "Chart.yaml")
    return str(meta["appVersion"])


# --- typed view ------------------------------------------------------------------------------


def _get(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValuesError(f"values: {path} is missing")
        node = node[part]
    return node


def _str(values: Mapping[str, Any], path: str) -> str:
    value = _get(values, path)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValuesError(f"values: {path} must be a string, not {value!r}")
    return str(value)


def _bool(values: Mapping[str, Any], path: str) -> bool:
    value = _get(values, path)
    if not isinstance(value, bool):
        raise ValuesError(f"values: {path} must be true or false, not {value!r}")
    return value


def _int(values: Mapping[str, Any], path: str, *, minimum: int, maximum: int) -> int:
    value = _get(values, path)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValuesError(f"values: {path} must be an integer in [{minimum}, {maximum}]")
    return value


def _str_map(values: Mapping[str, Any], path: str) -> dict[str, str]:
    value = _get(values, path) or {}
    if not isinstance(value, Mapping):
        raise ValuesError(f"values: {path} must be a mapping")
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """Requests and limits as the chart spells them (``cpu.request`` ...); empty means unset."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def as_dict(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        requests = {
            k: v for k, v in (("cpu", self.cpu_request), ("memory", self.memory_request)) if v
        }
        if limits:
            out["limits"] = limits
        if requests:
            out["requests"] = requests
        return out


def _resources(values: Mapping[str, Any], path: str) -> ResourceSpec:
    return ResourceSpec(
        cpu_request=_str(values, f"{path}.cpu.request"),
        cpu_limit=_str(values, f"{path}.cpu.limit"),
        memory_request=_str(values, f"{path}.memory.request"),
        memory_limit=_str(values, f"{path}.memory.limit"),
    )


ISSUER_SCHEMES = ("linkerd.io/tls", "kubernetes.io/tls")
#: values key → default repository name under image.registry.
IMAGES = {
    "destination": "destination",
    "identity": "identity",
    "injector": "injector",
    "proxy": "proxy",
    "proxyInit": "proxy-init",
}


@dataclass(frozen=True, slots=True)
class ImageRef:
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def _images(values: Mapping[str, Any], registry: str, tag: str) -> dict[str, ImageRef]:
    out = {}
    for key, name in IMAGES.items():
        repository = _str(values, f"image.{key}.repository") or f"{registry}/{name}"
        out[key] = ImageRef(repository, _str(values, f"image.{key}.tag") or tag)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ChartValues:
    """The merged values, checked and typed; what the renderer works from."""

    namespace: str
    install_namespace: bool
    cluster_domain: str
    trust_domain: str
    cluster_networks: str
    controller_log_level: str
    disable_ipv6: bool
    registry: str
    tag: str
    images: dict[str, ImageRef]
    pull_policy: str
    trust_anchors_pem: str
    issuer_scheme: str
    issuance_lifetime: str
    clock_skew_allowance: str
    issuer_crt_pem: str
    issuer_key_pem: str
    webhook_failure_policy: str
    webhook_timeout_seconds: int
    injector_crt_pem: str
    injector_key_pem: str
    injector_ca_pem: str
    webhook_excluded_namespaces: tuple[str, ...]
    proxy_log_level: str
    proxy_log_format: str
    proxy_default_inbound_policy: str
    proxy_native_sidecar: bool
    proxy_uid: int
    proxy_resources: ResourceSpec
    iptables_mode: str
    ignore_inbound_ports: str
    ignore_outbound_ports: str
    replicas: int
    pdb: bool
    anti_affinity: bool
    identity_resources: ResourceSpec
    destination_resources: ResourceSpec
    injector_resources: ResourceSpec
    pod_labels: dict[str, str]
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, Any], ...]

    @classmethod
    def parse(cls, values: Mapping[str, Any], *, namespace: str, app_version: str) -> ChartValues:
        scheme = _str(values, "identity.issuer.scheme")
        if scheme not in ISSUER_SCHEMES:
            raise ValuesError(
                f"values: identity.issuer.scheme must be one of {', '.join(ISSUER_SCHEMES)}"
            )
        failure_policy = _str(values, "proxyInjector.failurePolicy")
        if failure_policy not in ("Ignore", "Fail"):
            raise ValuesError("values: proxyInjector.failurePolicy must be Ignore or Fail")
        pull_policy = _str(values, "image.pullPolicy")
        if pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValuesError("values: image.pullPolicy must be Always, IfNotPresent or Never")
        mode = _str(values, "proxyInit.iptablesMode")
        if mode not in ("nft", "legacy", "plain"):
            raise ValuesError("values: proxyInit.iptablesMode must be nft, legacy or plain")
        excluded = _get(values, "proxyInjector.excludedNamespaces") or []
        tolerations = _get(values, "tolerations") or []
        if not isinstance(excluded, list) or not isinstance(tolerations, list):
            raise ValuesError("values: excludedNamespaces and tolerations must be lists")
        cluster_domain = _str(values, "clusterDomain")
        registry = _str(values, "image.registry").rstrip("/")
        tag = _str(values, "image.tag") or app_version
        return cls(
            namespace=namespace,
            install_namespace=_bool(values, "installNamespace"),
            cluster_domain=cluster_domain,
            trust_domain=_str(values, "identityTrustDomain") or cluster_domain,
            cluster_networks=_str(values, "clusterNetworks"),
            controller_log_level=_str(values, "controllerLogLevel"),
            disable_ipv6=_bool(values, "disableIPv6"),
            registry=registry,
            tag=tag,
            images=_images(values, registry, tag),
            pull_policy=pull_policy,
            trust_anchors_pem=_str(values, "identityTrustAnchorsPEM"),
            issuer_scheme=scheme,
            issuance_lifetime=_str(values, "identity.issuer.issuanceLifetime"),
            clock_skew_allowance=_str(values, "identity.issuer.clockSkewAllowance"),
            issuer_crt_pem=_str(values, "identity.issuer.tls.crtPEM"),
            issuer_key_pem=_str(values, "identity.issuer.tls.keyPEM"),
            webhook_failure_policy=failure_policy,
            webhook_timeout_seconds=_int(
                values, "proxyInjector.timeoutSeconds", minimum=1, maximum=30
            ),
            injector_crt_pem=_str(values, "proxyInjector.crtPEM"),
            injector_key_pem=_str(values, "proxyInjector.keyPEM"),
            injector_ca_pem=_str(values, "proxyInjector.caBundle"),
            webhook_excluded_namespaces=tuple(str(n) for n in excluded),
            proxy_log_level=_str(values, "proxy.logLevel"),
            proxy_log_format=_str(values, "proxy.logFormat"),
            proxy_default_inbound_policy=_str(values, "proxy.defaultInboundPolicy"),
            proxy_native_sidecar=_bool(values, "proxy.nativeSidecar"),
            proxy_uid=_int(values, "proxy.uid", minimum=1, maximum=2**31 - 1),
            proxy_resources=_resources(values, "proxy.resources"),
            iptables_mode=mode,
            ignore_inbound_ports=_str(values, "proxyInit.ignoreInboundPorts"),
            ignore_outbound_ports=_str(values, "proxyInit.ignoreOutboundPorts"),
            replicas=_int(values, "controllerReplicas", minimum=1, maximum=100),
            pdb=_bool(values, "enablePodDisruptionBudget"),
            anti_affinity=_bool(values, "enablePodAntiAffinity"),
            identity_resources=_resources(values, "identityResources"),
            destination_resources=_resources(values, "destinationResources"),
            injector_resources=_resources(values, "proxyInjectorResources"),
            pod_labels=_str_map(values, "podLabels"),
            node_selector=_str_map(values, "nodeSelector"),
            tolerations=tuple(dict(t) for t in tolerations),
        )
