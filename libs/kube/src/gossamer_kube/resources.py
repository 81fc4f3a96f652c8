"""Which Kubernetes resources Gossamer talks to, and how their REST paths are spelled.

A :class:`ResourceRef` is the (group, version, plural, namespaced) quadruple the apiserver routes
on. Keeping it as plain data, rather than a generated model class per kind, is what lets one small
client serve core kinds and Linkerd's CRDs alike: every object stays a JSON ``dict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "AUTHORIZATIONPOLICIES",
    "CONFIGMAPS",
    "CRONJOBS",
    "CUSTOMRESOURCEDEFINITIONS",
    "DAEMONSETS",
    "DEPLOYMENTS",
    "EGRESSNETWORKS",
    "ENDPOINTSLICES",
    "EVENTS",
    "EXTERNALWORKLOADS",
    "GATEWAY_GRPCROUTES",
    "GATEWAY_HTTPROUTES",
    "GATEWAY_TCPROUTES",
    "GATEWAY_TLSROUTES",
    "HTTPLOCALRATELIMITPOLICIES",
    "HTTPROUTES",
    "JOBS",
    "LEASES",
    "MESHTLSAUTHENTICATIONS",
    "MUTATINGWEBHOOKCONFIGURATIONS",
    "NAMESPACES",
    "NETWORKAUTHENTICATIONS",
    "NODES",
    "PODS",
    "REPLICASETS",
    "SECRETS",
    "SELFSUBJECTACCESSREVIEWS",
    "SERVERAUTHORIZATIONS",
    "SERVERS",
    "SERVICEACCOUNTS",
    "SERVICEPROFILES",
    "SERVICES",
    "STATEFULSETS",
    "TOKENREVIEWS",
    "VALIDATINGWEBHOOKCONFIGURATIONS",
    "ResourceRef",
]


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One REST resource of the apiserver (``group`` is ``""`` for the core ``v1`` API)."""

    group: str
    version: str
    plural: str
    namespaced: bool
    kind: str = ""

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field objects of this resource carry."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path for the collection, or for one object when ``name`` is given.

        A namespaced resource without ``namespace`` addresses the all-namespaces collection
        (valid for list and watch only); a cluster-scoped resource refuses a namespace, because
        the apiserver would answer 404 and hide the caller's mistake.
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace is not None:
            if not self.namespaced:
                raise ValueError(f"{self.plural} is cluster-scoped; got namespace {namespace!r}")
            if not namespace:
                raise ValueError("namespace must not be empty")
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        elif name is not None and self.namespaced:
            raise ValueError(f"{self.plural} is namespaced; a namespace is needed for {name!r}")
        parts.append(self.plural)
        if name is not None:
            if not name:
                raise ValueError("name must not be empty")
            parts.append(quote(name, safe=""))
        if subresource is not None:
            if name is None:
                raise ValueError("a subresource needs an object name")
            parts.append(subresource)
        return "/".join(parts)


# Core and built-in kinds.
NAMESPACES = ResourceRef("", "v1", "namespaces", False, "Namespace")
PODS = ResourceRef("", "v1", "pods", True, "Pod")
SERVICES = ResourceRef("", "v1", "services", True, "Service")
NODES = ResourceRef("", "v1", "nodes", False, "Node")
SERVICEACCOUNTS = ResourceRef("", "v1", "serviceaccounts", True, "ServiceAccount")
SECRETS = ResourceRef("", "v1", "secrets", True, "Secret")
CONFIGMAPS = ResourceRef("", "v1", "configmaps", True, "ConfigMap")
EVENTS = ResourceRef("", "v1", "events", True, "Event")
ENDPOINTSLICES = ResourceRef("discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice")
DEPLOYMENTS = ResourceRef("apps", "v1", "deployments", True, "Deployment")
REPLICASETS = ResourceRef("apps", "v1", "replicasets", True, "ReplicaSet")
STATEFULSETS = ResourceRef("apps", "v1", "statefulsets", True, "StatefulSet")
DAEMONSETS = ResourceRef("apps", "v1", "daemonsets", True, "DaemonSet")
JOBS = ResourceRef("batch", "v1", "jobs", True, "Job")
CRONJOBS = ResourceRef("batch", "v1", "cronjobs", True, "CronJob")
LEASES = ResourceRef("coordination.k8s.io", "v1", "leases", True, "Lease")
MUTATINGWEBHOOKCONFIGURATIONS = ResourceRef(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    False,
    "MutatingWebhookConfiguration",
)
VALIDATINGWEBHOOKCONFIGURATIONS = ResourceRef(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    False,
    "ValidatingWebhookConfiguration",
)
CUSTOMRESOURCEDEFINITIONS = ResourceRef(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)
TOKENREVIEWS = ResourceRef("authentication.k8s.io", "v1", "tokenreviews", False, "TokenReview")
SELFSUBJECTACCESSREVIEWS = ResourceRef(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", False, "SelfSubjectAccessReview"
)

# Linkerd CRDs, at the storage versions listed in linkerd-wire.md.
SERVICEPROFILES = ResourceRef("linkerd.io", "v1alpha2", "serviceprofiles", True, "ServiceProfile")
SERVERS = ResourceRef("policy.linkerd.io", "v1beta3", "servers", True, "Server")
SERVERAUTHORIZATIONS = ResourceRef(
    "policy.linkerd.io", "v1beta1", "serverauthorizations", True, "ServerAuthorization"
)
AUTHORIZATIONPOLICIES = ResourceRef(
    "policy.linkerd.io", "v1alpha1", "authorizationpolicies", True, "AuthorizationPolicy"
)
MESHTLSAUTHENTICATIONS = ResourceRef(
    "policy.linkerd.io", "v1alpha1", "meshtlsauthentications", True, "MeshTLSAuthentication"
)
NETWORKAUTHENTICATIONS = ResourceRef(
    "policy.linkerd.io", "v1alpha1", "networkauthentications", True, "NetworkAuthentication"
)
HTTPROUTES = ResourceRef("policy.linkerd.io", "v1beta3", "httproutes", True, "HTTPRoute")
HTTPLOCALRATELIMITPOLICIES = ResourceRef(
    "policy.linkerd.io", "v1alpha1", "httplocalratelimitpolicies", True, "HTTPLocalRateLimitPolicy"
)
EGRESSNETWORKS = ResourceRef(
    "policy.linkerd.io", "v1alpha1", "egressnetworks", True, "EgressNetwork"
)
EXTERNALWORKLOADS = ResourceRef(
    "workload.linkerd.io", "v1beta1", "externalworkloads", True, "ExternalWorkload"
)
GATEWAY_HTTPROUTES = ResourceRef("gateway.networking.k8s.io", "v1", "httproutes", True, "HTTPRoute")
GATEWAY_GRPCROUTES = ResourceRef("gateway.networking.k8s.io", "v1", "grpcroutes", True, "GRPCRoute")
#: TCPRoute is still experimental in the Gateway API (v1alpha2).
GATEWAY_TCPROUTES = ResourceRef(
    "gateway.networking.k8s.io", "v1alpha2", "tcproutes", True, "TCPRoute"
)
#: TLSRoute is still experimental in the Gateway API (v1alpha2).
GATEWAY_TLSROUTES = ResourceRef(
    "gateway.networking.k8s.io", "v1alpha2", "tlsroutes", True, "TLSRoute"
)
