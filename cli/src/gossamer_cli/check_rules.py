"""``gossamer check``'s rules: a cluster snapshot and the clock in, results out. No I/O.

The categories and their order follow ``linkerd check`` (linkerd-wire.md §6); each failing
result carries the remedy a user needs, so ``check`` is something to act on, not just read.
:mod:`gossamer_cli.check` fetches the :class:`Snapshot` and prints the results.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from gossamer_tls import TlsError, load_certificates, verify_chain
from gossamer_tls.pem import trust_root_sha256

from gossamer_cli import manifests as m

MIN_KUBERNETES = (1, 29)
#: On ``gossamer-config`` (and the namespace) when ``gossamer dev`` runs the control plane as
#: local processes: there are no Deployments or pods, so check asks each admin server instead.
LOCAL_MODE_ANNOTATION = "gossamer.dev/local-mode"
RENEW_WARNING = dt.timedelta(days=60)
Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Result:
    category: str
    description: str
    ok: bool
    #: A failed warning does not fail the run (Linkerd's "‼").
    warning: bool = False
    message: str = ""
    hint: str = ""


@dataclass(slots=True)
class Snapshot:
    """What :mod:`gossamer_cli.check` read from the cluster; absent means not found.

    ``errors`` records why a read failed (other than not found), keyed like the fields.
    """

    namespace: str
    cli_version: str
    #: The kubeconfig could not be loaded.
    config_error: str | None = None
    #: The apiserver did not answer.
    client_error: str | None = None
    server_version: str | None = None
    namespace_object: Obj | None = None
    config_map: Obj | None = None
    trust_roots: Obj | None = None
    issuer_secret: Obj | None = None
    injector_secret: Obj | None = None
    webhook: Obj | None = None
    crd_names: frozenset[str] = frozenset()
    expected_crds: tuple[str, ...] = ()
    #: Installed CRD name → the versions it serves.
    crd_versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Installed CRDs that Gossamer does not enforce → how many objects of each exist.
    unenforced_objects: dict[str, int] = field(default_factory=dict)
    #: Installed Gateway API route CRDs of :data:`UNENFORCED_MESH_ROUTES` → how many of
    #: their objects name a parent through which Gossamer does not enforce them.
    unenforced_routes: dict[str, int] = field(default_factory=dict)
    #: Why each ExternalWorkload the mesh cannot use is refused (one message per object).
    invalid_external_workloads: tuple[str, ...] = ()
    cluster_roles: frozenset[str] = frozenset()
    cluster_role_bindings: frozenset[str] = frozenset()
    service_accounts: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    deployments: tuple[Obj, ...] = ()
    control_plane_pods: tuple[Obj, ...] = ()
    data_plane_pods: tuple[Obj, ...] = ()
    data_plane_namespace: str | None = None
    data_plane_namespace_exists: bool = True
    #: --pre: "verb resource" → allowed, from SelfSubjectAccessReviews.
    access: dict[str, bool] = field(default_factory=dict)
    #: Local mode: component name → None when its admin ``/ready`` answered 200, else why not.
    admin_ready: dict[str, str | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def local_mode(self) -> bool:
        return local_admin_addresses(self.config_map) is not None


def admin_address_annotation(component: str) -> str:
    """Where local mode records a component's admin address (``host:port``)."""
    return f"gossamer.dev/{component}-admin-address"


def local_admin_addresses(config_map: Obj | None) -> dict[str, str] | None:
    """Component → admin address ("" if not recorded) in local mode; None on a cluster."""
    annotations = ((config_map or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(LOCAL_MODE_ANNOTATION) != "true":
        return None
    return {
        c.name: str(annotations.get(admin_address_annotation(c.name), "")) for c in m.COMPONENTS
    }


def parse_admin_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"admin address {text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"admin address {text!r} has no valid port")
    return host, int(port)


Check = Callable[[Snapshot, dt.datetime], Result]

KUBERNETES_API = "kubernetes-api"
KUBERNETES_VERSION = "kubernetes-version"
PRE_SETUP = "pre-kubernetes-setup"
EXISTENCE = "linkerd-existence"
CONFIG = "linkerd-config"
IDENTITY = "linkerd-identity"
WEBHOOKS = "linkerd-webhooks-and-apisvc-tls"
VERSION = "control-plane-version"
CP_PROXY = "linkerd-control-plane-proxy"
DATA_PLANE = "linkerd-data-plane"

#: CRDs the chart installs (for Linkerd compatibility: objects written for Linkerd apply
#: cleanly) whose objects Gossamer does not act on yet → their kind. ``gossamer check`` warns
#: about each one that has objects, so nothing is silently accepted and ignored. (None at
#: present: ExternalWorkloads are served as Service endpoints by the destination.)
UNENFORCED_CRDS: Mapping[str, str] = {}

EXTERNAL_WORKLOADS_CRD = "externalworkloads.workload.linkerd.io"

#: A route's parent kinds (group, kind) by which it attaches to the mesh, not to a Gateway.
SERVICE_PARENTS = frozenset({("", "Service"), ("core", "Service")})
EGRESS_PARENTS = frozenset({("policy.linkerd.io", "EgressNetwork")})
SERVER_PARENTS = frozenset({("policy.linkerd.io", "Server")})


@dataclass(frozen=True)
class UnenforcedRoutes:
    """A Gateway API route kind that Gossamer acts on for some mesh parents only."""

    kind: str
    #: The mesh parents (group, kind) whose routes of this kind Gossamer ignores.
    parents: frozenset[tuple[str, str]]
    #: How the check names those parents.
    parents_text: str


#: Gateway API route CRDs (installed by the user, not the chart) whose routes Gossamer
#: ignores when they attach to the mesh through these parents: check warns about each such
#: route, so none is silently ignored. TLSRoutes and TCPRoutes are enforced outbound, on
#: Service and EgressNetwork parents (client proxies route by them); like Linkerd, Gossamer
#: has no inbound TLS/TCP routes, so a Server parent has no effect.
UNENFORCED_MESH_ROUTES: Mapping[str, UnenforcedRoutes] = {
    "tlsroutes.gateway.networking.k8s.io": UnenforcedRoutes("TLSRoute", SERVER_PARENTS, "a Server"),
    "tcproutes.gateway.networking.k8s.io": UnenforcedRoutes("TCPRoute", SERVER_PARENTS, "a Server"),
}


def has_parent(route: Mapping[str, Any], parents: frozenset[tuple[str, str]]) -> bool:
    """Whether a Gateway API route names one of ``parents`` (group, kind) as a parent."""
    refs = ((route.get("spec") or {}).get("parentRefs")) or ()
    return any(
        isinstance(ref, Mapping)
        and (str(ref.get("group", "gateway.networking.k8s.io")), str(ref.get("kind", "Gateway")))
        in parents
        for ref in refs
    )


#: The Gateway API route CRDs the destination watches (at v1) when they are installed.
GATEWAY_API_CRDS: Mapping[str, str] = {
    "httproutes.gateway.networking.k8s.io": "HTTPRoute",
    "grpcroutes.gateway.networking.k8s.io": "GRPCRoute",
}
GATEWAY_API_INSTALL = (
    "kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/"
    "v1.2.1/standard-install.yaml"
)

PRE_ACCESS = (
    ("create", "namespaces"),
    ("create", "clusterroles"),
    ("create", "clusterrolebindings"),
    ("create", "customresourcedefinitions"),
    ("create", "mutatingwebhookconfigurations"),
    ("create", "serviceaccounts"),
    ("create", "services"),
    ("create", "deployments"),
    ("create", "configmaps"),
    ("create", "secrets"),
    ("create", "poddisruptionbudgets"),
)


def _r(category: str, description: str) -> Callable[..., Result]:
    def make(ok: bool, message: str = "", hint: str = "", *, warning: bool = False) -> Result:
        return Result(category, description, ok, warning, "" if ok else message, hint)

    return make


# --- kubernetes ------------------------------------------------------------------------------


def kubernetes_checks(s: Snapshot) -> Iterator[Result]:
    init = _r(KUBERNETES_API, "can initialize the client")
    yield init(
        s.config_error is None,
        s.config_error or "",
        "check KUBECONFIG / --kubeconfig and the current context",
    )
    if s.config_error is not None:
        return
    query = _r(KUBERNETES_API, "can query the Kubernetes API")
    yield query(
        s.server_version is not None,
        s.client_error or "no answer from the apiserver",
        "is the apiserver reachable from here? try kubectl version",
    )
    if s.server_version is None:
        return
    version = _r(KUBERNETES_VERSION, "is running the minimum Kubernetes API version (v1.29)")
    parsed = _parse_version(s.server_version)
    yield version(
        parsed is not None and parsed >= MIN_KUBERNETES,
        f"the cluster runs {s.server_version}; native sidecars need v1.29 or later",
        "upgrade the cluster, or install with --set proxy.nativeSidecar=false",
    )


def _parse_version(text: str) -> tuple[int, int] | None:
    core = text.lstrip("v").split("-")[0].split("+")[0].split(".")
    try:
        return int(core[0]), int(core[1])
    except (IndexError, ValueError):
        return None


def pre_checks(s: Snapshot) -> Iterator[Result]:
    absent = _r(PRE_SETUP, "control plane namespace does not already exist")
    yield absent(
        s.namespace_object is None,
        f"the {s.namespace} namespace already exists",
        "use gossamer upgrade, or gossamer uninstall | kubectl delete -f - first",
    )
    for verb, resource in PRE_ACCESS:
        can = _r(PRE_SETUP, f"can {verb} {resource}")
        yield can(
            s.access.get(f"{verb} {resource}", False),
            f"the current user may not {verb} {resource}",
            "install as a cluster administrator (cluster-admin)",
        )


# --- the installation ------------------------------------------------------------------------


def existence_checks(s: Snapshot) -> Iterator[Result]:
    ns_hint = "install the control plane: gossamer install | kubectl apply -f -"
    yield _r(EXISTENCE, "control plane namespace exists")(
        s.namespace_object is not None, f"the {s.namespace} namespace does not exist", ns_hint
    )
    components = [c.name for c in m.COMPONENTS]
    for label, have, hint_kind in (
        ("ClusterRoles", s.cluster_roles, "clusterrole"),
        ("ClusterRoleBindings", s.cluster_role_bindings, "clusterrolebinding"),
    ):
        want = {f"gossamer-{s.namespace}-{c}" for c in components}
        missing = sorted(want - have)
        yield _r(EXISTENCE, f"control plane {label} exist")(
            not missing,
            f"missing {hint_kind}: {', '.join(missing)}",
            "re-apply the control plane: gossamer upgrade | kubectl apply -f -",
        )
    want_sa = {c.object_name for c in m.COMPONENTS}
    missing_sa = sorted(want_sa - s.service_accounts)
    yield _r(EXISTENCE, "control plane ServiceAccounts exist")(
        not missing_sa,
        f"missing serviceaccount: {', '.join(missing_sa)}",
        "re-apply the control plane: gossamer upgrade | kubectl apply -f -",
    )
    missing_crds = sorted(set(s.expected_crds) - s.crd_names)
    yield _r(EXISTENCE, "control plane CustomResourceDefinitions exist")(
        not missing_crds,
        f"missing CRDs: {', '.join(missing_crds)}",
        "install the CRDs: gossamer install --crds | kubectl apply -f -",
    )
    for crd, kind in UNENFORCED_CRDS.items():
        if crd not in s.crd_names:
            continue
        count = s.unenforced_objects.get(crd, 0)
        yield _r(EXISTENCE, f"no {kind} objects ({crd} is installed, not enforced by Gossamer)")(
            count == 0,
            f"{count} {kind} object(s) exist, but Gossamer does not enforce {kind} "
            "(they have no effect)",
            f"delete them (kubectl get {crd} -A), or enforce what they mean another way",
            warning=True,
        )
    if EXTERNAL_WORKLOADS_CRD in s.crd_names:
        invalid = s.invalid_external_workloads
        more = f" (and {len(invalid) - 5} more)" if len(invalid) > 5 else ""
        yield _r(EXISTENCE, "ExternalWorkloads are valid")(
            not invalid,
            "; ".join(invalid[:5]) + more,
            "fix each named field (the destination serves no endpoint for such a workload)",
            warning=True,
        )
    for crd, routes in UNENFORCED_MESH_ROUTES.items():
        if crd not in s.crd_names:
            continue
        count = s.unenforced_routes.get(crd, 0)
        yield _r(
            EXISTENCE,
            f"no {routes.kind} objects with {routes.parents_text} parent "
            f"({crd} is not enforced there by Gossamer)",
        )(
            count == 0,
            f"{count} {routes.kind} object(s) name {routes.parents_text} as parent, but "
            f"Gossamer does not enforce them there (they have no effect on meshed traffic)",
            f"delete them (kubectl get {crd} -A), or attach them to the Service (or "
            "EgressNetwork) the clients connect to",
            warning=True,
        )
    yield gateway_api_check(s)
    yield _r(EXISTENCE, "proxy-injector MutatingWebhookConfiguration exists")(
        s.webhook is not None,
        f"MutatingWebhookConfiguration {s.namespace}-proxy-injector-webhook-config not found: "
        "new pods are not injected",
        "re-apply the control plane: gossamer upgrade | kubectl apply -f -",
    )


def gateway_api_check(s: Snapshot) -> Result:
    """A warning while the Gateway API route CRDs (v1) are absent: those routes are then
    unavailable, while ``policy.linkerd.io`` HTTPRoutes keep working."""
    problems = []
    for crd in GATEWAY_API_CRDS:
        versions = s.crd_versions.get(crd)
        if versions is None:
            problems.append(f"{crd} is not installed")
        elif "v1" not in versions:
            problems.append(f"{crd} does not serve v1 (serves {', '.join(versions) or 'none'})")
    return _r(EXISTENCE, "Gateway API HTTPRoute and GRPCRoute CRDs (v1) are installed")(
        not problems,
        "; ".join(problems)
        + ": gateway.networking.k8s.io routes cannot be used (policy.linkerd.io HTTPRoutes "
        "still work)",
        f"install the Gateway API CRDs (standard channel, v1.1 or later): {GATEWAY_API_INSTALL}"
        " -- the destination picks them up without a restart",
        warning=True,
    )


def config_checks(s: Snapshot) -> Iterator[Result]:
    yield _r(CONFIG, "control plane gossamer-config ConfigMap exists")(
        s.config_map is not None,
        f"ConfigMap {m.CONFIG_MAP} not found in {s.namespace}",
        "re-apply the control plane: gossamer upgrade | kubectl apply -f -",
    )
    if s.local_mode:
        yield from _local_process_checks(s)
        return
    by_name = {d["metadata"]["name"]: d for d in s.deployments}
    for c in m.COMPONENTS:
        d = by_name.get(c.object_name)
        ok, message = _deployment_available(d, c.object_name)
        yield _r(CONFIG, f"{c.object_name} Deployment is available")(
            ok,
            message,
            f"kubectl -n {s.namespace} describe deploy {c.object_name}; "
            f"kubectl -n {s.namespace} logs deploy/{c.object_name} --all-containers",
        )
    not_ready = [_pod_name(p) for p in s.control_plane_pods if not _pod_ready(p)]
    yield _r(CONFIG, "control plane pods are ready")(
        bool(s.control_plane_pods) and not not_ready,
        f"pods not ready: {', '.join(not_ready)}" if not_ready else "no control plane pods",
        f"kubectl -n {s.namespace} get pods; kubectl -n {s.namespace} describe pod <name>",
    )


def _local_process_checks(s: Snapshot) -> Iterator[Result]:
    """Local mode's stand-in for the Deployment and pod checks: each process's /ready."""
    addresses = local_admin_addresses(s.config_map) or {}
    for c in m.COMPONENTS:
        address = addresses.get(c.name, "")
        why: str | None
        if not address:
            why = f"{m.CONFIG_MAP} records no admin address for {c.object_name}"
        else:
            why = s.admin_ready.get(c.name, "not probed")
        yield _r(CONFIG, f"{c.object_name} answers /ready on its admin address (local mode)")(
            address != "" and why is None,
            f"{c.object_name} is not ready: {why}",
            "local mode runs it as a process inside the node namespace (run check there); "
            f"see its log: <dev state dir>/control-plane/logs/{c.name}.log",
        )


def _deployment_available(d: Obj | None, name: str) -> tuple[bool, str]:
    if d is None:
        return False, f"Deployment {name} not found"
    want = int((d.get("spec") or {}).get("replicas", 1))
    ready = int((d.get("status") or {}).get("readyReplicas", 0) or 0)
    if ready < want:
        return False, f"{ready} of {want} replicas of {name} are ready"
    return True, ""


def _pod_name(p: Obj) -> str:
    return str(p["metadata"]["name"])


def _pod_ready(p: Obj) -> bool:
    status = p.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


# --- certificates ----------------------------------------------------------------------------


def _secret_pem(secret: Obj, key: str) -> str:
    return base64.b64decode((secret.get("data") or {}).get(key, "")).decode(errors="replace")


def _validity(cert: x509.Certificate, now: dt.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc.isoformat()}"
    if now > cert.not_valid_after_utc:
        return f"expired at {cert.not_valid_after_utc.isoformat()}"
    return None


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def identity_checks(s: Snapshot, now: dt.datetime) -> Iterator[Result]:
    rotate = "see README: Running on Kubernetes / rotating the identity issuer"
    anchors: list[x509.Certificate] = []
    text = ((s.trust_roots or {}).get("data") or {}).get("ca-bundle.crt", "")
    ok = s.trust_roots is not None
    message = f"ConfigMap {m.TRUST_ROOTS_CONFIG_MAP} not found"
    if ok:
        try:
            anchors = load_certificates(text, what="trust anchors")
        except TlsError as exc:
            ok, message = False, str(exc)
    yield _r(IDENTITY, "trust anchors are using a valid format")(
        ok, message, f"re-create {m.TRUST_ROOTS_CONFIG_MAP} with PEM certificates"
    )
    if not anchors:
        return
    expired = [f"{_cn(c)}: {v}" for c in anchors if (v := _validity(c, now))]
    yield _r(IDENTITY, "trust anchors are within their validity period")(
        not expired, "; ".join(expired), rotate
    )
    soon = [_cn(c) for c in anchors if c.not_valid_after_utc - now < RENEW_WARNING]
    yield _r(IDENTITY, "trust anchors are valid for at least 60 days")(
        not soon, f"expiring within 60 days: {', '.join(soon)}", rotate, warning=True
    )
    scheme = ((s.config_map or {}).get("data") or {}).get("issuerScheme", "linkerd.io/tls")
    crt_key = "crt.pem" if scheme == "linkerd.io/tls" else "tls.crt"
    issuer: x509.Certificate | None = None
    chain: list[x509.Certificate] = []
    message = f"Secret {m.ISSUER_SECRET} not found in {s.namespace}"
    if s.issuer_secret is not None:
        try:
            chain = load_certificates(_secret_pem(s.issuer_secret, crt_key), what="issuer")
            issuer = chain[0]
        except TlsError as exc:
            message = str(exc)
    yield _r(IDENTITY, "issuer credentials are using a valid format")(
        issuer is not None, message, f"re-create Secret {m.ISSUER_SECRET} ({crt_key}, key)"
    )
    if issuer is None:
        return
    validity = _validity(issuer, now)
    yield _r(IDENTITY, "issuer credentials are within their validity period")(
        validity is None, f"issuer {_cn(issuer)} {validity}", rotate
    )
    yield _r(IDENTITY, "issuer credentials are valid for at least 60 days")(
        issuer.not_valid_after_utc - now >= RENEW_WARNING,
        f"issuer {_cn(issuer)} expires at {issuer.not_valid_after_utc.isoformat()}",
        rotate,
        warning=True,
    )
    verify_error = None
    if validity is None:
        try:
            verify_chain(issuer, chain[1:], anchors, now=now)
        except TlsError as exc:
            verify_error = str(exc)
    else:
        verify_error = "the issuer is not within its validity period"
    yield _r(IDENTITY, "issuer credentials are signed by the trust anchor")(
        verify_error is None,
        f"{verify_error}",
        "issue a new issuer from the trust anchor (step certificate create "
        "identity.<ns>.<trust-domain> --profile intermediate-ca ...) and update the Secret",
    )


def webhook_checks(s: Snapshot, now: dt.datetime) -> Iterator[Result]:
    hint = "re-issue the webhook certificate: gossamer install renders a new one (see README)"
    cert: x509.Certificate | None = None
    message = f"Secret {m.INJECTOR_TLS_SECRET} not found in {s.namespace}"
    if s.injector_secret is not None:
        try:
            cert = load_certificates(_secret_pem(s.injector_secret, "tls.crt"))[0]
        except TlsError as exc:
            message = str(exc)
    yield _r(WEBHOOKS, "proxy-injector webhook has valid cert")(cert is not None, message, hint)
    if cert is None:
        return
    validity = _validity(cert, now)
    yield _r(WEBHOOKS, "proxy-injector cert is within its validity period")(
        validity is None, f"webhook certificate {validity}", hint
    )
    yield _r(WEBHOOKS, "proxy-injector cert is valid for at least 60 days")(
        cert.not_valid_after_utc - now >= RENEW_WARNING,
        f"webhook certificate expires at {cert.not_valid_after_utc.isoformat()}",
        hint,
        warning=True,
    )
    if s.webhook is None:
        return
    hooks = s.webhook.get("webhooks") or [{}]
    client_config = hooks[0].get("clientConfig") or {}
    bundle = base64.b64decode(client_config.get("caBundle", "") or "")
    url = client_config.get("url")
    # A URL clientConfig (local mode) is called by that host name; a Service by its DNS name.
    host = urlsplit(str(url)).hostname if url else None
    error = None
    try:
        verify_chain(
            cert,
            [],
            load_certificates(bundle, what="caBundle"),
            now=now,
            dns_name=host or m.PROXY_INJECTOR.object_name + f".{s.namespace}.svc",
        )
    except TlsError as exc:
        error = str(exc)
    yield _r(WEBHOOKS, "proxy-injector caBundle verifies the serving certificate")(
        error is None,
        f"the apiserver will refuse the injector's certificate: {error}",
        "re-apply the webhook configuration and its Secret together (gossamer upgrade)",
    )
    if url:
        yield _r(WEBHOOKS, "proxy-injector webhook URL is an https URL with a host")(
            str(url).startswith("https://") and bool(host),
            f"the webhook calls {url!r}, which the apiserver will not call",
            "re-apply the webhook configuration (gossamer dev up registers it)",
        )
        return
    service = (client_config.get("service") or {}).get("name")
    yield _r(WEBHOOKS, "proxy-injector webhook points at an existing Service")(
        service in s.services,
        f"the webhook calls Service {service!r}, which does not exist in {s.namespace}",
        "re-apply the control plane: gossamer upgrade | kubectl apply -f -",
    )


# --- versions and proxies --------------------------------------------------------------------


def version_checks(s: Snapshot) -> Iterator[Result]:
    server = ((s.config_map or {}).get("data") or {}).get("version")
    yield _r(VERSION, "control plane and cli versions match")(
        server == s.cli_version,
        f"control plane is {server or 'unknown'}, cli is {s.cli_version}",
        "upgrade whichever is older (gossamer upgrade | kubectl apply -f -)",
        warning=True,
    )


def _proxy_container(pod: Obj) -> Obj | None:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == "linkerd-proxy":
            return dict(c)
    return None


def _proxy_ready(pod: Obj) -> bool:
    """The proxy's own status; a pod without one is judged by its Ready condition (a native
    sidecar holds the pod un-ready until its startup probe passes)."""
    status = pod.get("status") or {}
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for st in statuses:
        if st.get("name") == "linkerd-proxy":
            return bool(st.get("ready"))
    return _pod_ready(pod)


def proxy_checks(
    s: Snapshot, pods: Sequence[Obj], category: str, what: str, hint_ns: str
) -> Iterator[Result]:
    missing = [_pod_name(p) for p in pods if _proxy_container(p) is None]
    yield _r(category, f"{what} pods are injected")(
        bool(pods) and not missing,
        f"no proxy in: {', '.join(missing)}" if missing else "no pods found",
        f"kubectl -n {hint_ns} rollout restart deploy (with linkerd.io/inject=enabled)",
    )
    injected = [p for p in pods if _proxy_container(p) is not None]
    not_ready = [_pod_name(p) for p in injected if not _proxy_ready(p)]
    yield _r(category, f"{what} proxies are ready")(
        not not_ready,
        f"proxies not ready: {', '.join(not_ready)}",
        f"kubectl -n {hint_ns} logs <pod> -c linkerd-proxy",
    )
    anchors = ((s.trust_roots or {}).get("data") or {}).get("ca-bundle.crt")
    if anchors is not None:
        want = trust_root_sha256(anchors)
        stale = [
            _pod_name(p)
            for p in injected
            if ((p.get("metadata") or {}).get("annotations") or {}).get(
                "linkerd.io/trust-root-sha256"
            )
            != want
        ]
        yield _r(category, f"{what} proxies trust the current trust anchors")(
            not stale,
            f"pods with other trust anchors: {', '.join(stale)}",
            f"kubectl -n {hint_ns} rollout restart deploy",
        )
    server = ((s.config_map or {}).get("data") or {}).get("version")
    if server is not None:
        old = [
            _pod_name(p)
            for p in injected
            if ((p.get("metadata") or {}).get("annotations") or {}).get("linkerd.io/proxy-version")
            != server
        ]
        yield _r(category, f"{what} proxies are up-to-date with the control plane")(
            not old,
            f"pods with another proxy version: {', '.join(old)}",
            f"kubectl -n {hint_ns} rollout restart deploy",
            warning=True,
        )


def run(s: Snapshot, now: dt.datetime, *, pre: bool = False, proxy: bool = False) -> list[Result]:
    """Every result in Linkerd's order; a category stops where its prerequisites failed."""
    results = list(kubernetes_checks(s))
    if any(not r.ok for r in results):
        return results
    if pre:
        return results + list(pre_checks(s))
    existence = list(existence_checks(s))
    results += existence
    if s.namespace_object is None:
        return results
    results += config_checks(s)
    results += identity_checks(s, now)
    results += webhook_checks(s, now)
    results += version_checks(s)
    if not s.local_mode:  # local mode's control plane runs as processes, without proxies
        results += proxy_checks(s, s.control_plane_pods, CP_PROXY, "control plane", s.namespace)
    if proxy:
        if not s.data_plane_namespace_exists:
            results.append(
                _r(DATA_PLANE, "data plane namespace exists")(
                    False,
                    f"namespace {s.data_plane_namespace} does not exist",
                    "check the -n/--namespace flag",
                )
            )
        else:
            where = s.data_plane_namespace or "<ns>"
            results += proxy_checks(s, s.data_plane_pods, DATA_PLANE, "data plane", where)
    return results


def failed(results: Sequence[Result]) -> bool:
    return any(not r.ok and not r.warning for r in results)
