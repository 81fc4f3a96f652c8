"""ServiceProfiles from a template, an OpenAPI (Swagger) spec or a ``.proto`` file (pure).

``linkerd profile``'s three sources:

- ``--template``: a commented ServiceProfile to edit, with one example route.
- ``--open-api``: one route per path and method, named ``METHOD /path``; the path's
  ``{param}`` segments match any one segment (``[^/]*``), the rest is matched literally. A
  Swagger 2.0 ``basePath`` is prefixed. An operation's ``x-linkerd-retryable: true`` and
  ``x-linkerd-timeout: 30s`` extensions set the route's ``isRetryable`` and ``timeout``.
- ``--proto``: one route per ``rpc`` of every ``service``, named after the method, matching
  ``POST /package.Service/Method``, as gRPC calls it.

A ServiceProfile's ``pathRegex`` is anchored at both ends by the mesh, so none is added.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TEMPLATED = re.compile(r"\{[^{}/]*\}")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")
#: A .proto larger than this is not a service definition someone wrote.
MAX_SOURCE_BYTES = 4 * 1024 * 1024


class ProfileError(ValueError):
    """The input cannot become a ServiceProfile; the message says why and where."""


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path_regex: str
    retryable: bool = False
    timeout: str | None = None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "condition": {"method": self.method, "pathRegex": self.path_regex},
        }
        if self.retryable:
            out["isRetryable"] = True
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


def check_names(service: str, namespace: str) -> None:
    if not _DNS_LABEL.match(service):
        raise ProfileError(
            f"service name {service!r} is not a DNS-1035 label (lowercase letters, digits and "
            "'-', starting with a letter, at most 63 characters)"
        )
    if not _NAMESPACE.match(namespace):
        raise ProfileError(f"namespace {namespace!r} is not a DNS-1123 label")


def profile_name(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def service_profile(
    service: str, namespace: str, routes: list[Route], cluster_domain: str = "cluster.local"
) -> dict[str, Any]:
    check_names(service, namespace)
    return {
        "apiVersion": "linkerd.io/v1alpha2",
        "kind": "ServiceProfile",
        "metadata": {
            "name": profile_name(service, namespace, cluster_domain),
            "namespace": namespace,
        },
        "spec": {"routes": [r.spec() for r in routes]},
    }


def path_regex(path: str) -> str:
    """``/books/{id}/pages`` → ``/books/[^/]*/pages`` (literal parts escaped)."""
    out, last = [], 0
    for match in _TEMPLATED.finditer(path):
        out.append(re.escape(path[last : match.start()]))
        out.append("[^/]*")
        last = match.end()
    out.append(re.escape(path[last:]))
    return "".join(out)


# -- OpenAPI --------------------------------------------------------------------------------


def parse_openapi(text: str, source: str) -> list[Route]:
    """Routes of a Swagger 2.0 or OpenAPI 3 document (JSON or YAML)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ProfileError(f"{source}: an OpenAPI document is a mapping, not {_kind(doc)}")
    if "swagger" not in doc and "openapi" not in doc:
        raise ProfileError(f"{source}: no 'swagger' or 'openapi' field: not an OpenAPI document")
    paths = doc.get("paths")
    if not isinstance(paths, Mapping):
        raise ProfileError(f"{source}: 'paths' must be a mapping of paths to operations")
    base = doc.get("basePath", "") if "swagger" in doc else ""
    if not isinstance(base, str) or (base and not base.startswith("/")):
        raise ProfileError(f"{source}: basePath {base!r} must start with '/'")
    base = base.rstrip("/")
    routes = []
    for path in sorted(paths, key=str):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ProfileError(f"{source}: path {path!r} must start with '/'")
        if path.count("{") != path.count("}"):
            raise ProfileError(f"{source}: path {path!r} has unbalanced braces")
        operations = paths[path]
        if operations is None:
            continue
        if not isinstance(operations, Mapping):
            raise ProfileError(f"{source}: {path}: operations must be a mapping")
        full = base + path
        for method in HTTP_METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            if not isinstance(operation, Mapping):
                raise ProfileError(f"{source}: {method} {path}: an operation must be a mapping")
            routes.append(_operation_route(method.upper(), full, operation, source))
    if not routes:
        raise ProfileError(f"{source}: no operations under 'paths'")
    return routes


def _operation_route(method: str, path: str, operation: Mapping[str, Any], source: str) -> Route:
    retryable = operation.get("x-linkerd-retryable", False)
    if not isinstance(retryable, bool):
        raise ProfileError(f"{source}: {method} {path}: x-linkerd-retryable must be true/false")
    timeout = operation.get("x-linkerd-timeout")
    if timeout is not None and not (isinstance(timeout, str) and _DURATION.match(timeout)):
        raise ProfileError(
            f"{source}: {method} {path}: x-linkerd-timeout {timeout!r} is not a duration (e.g. 30s)"
        )
    return Route(f"{method} {path}", method, path_regex(path), retryable, timeout)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


# -- .proto ---------------------------------------------------------------------------------

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_STRING_LITERAL = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_PACKAGE = re.compile(r"\bpackage\s+([A-Za-z_][\w.]*)\s*;")
_SERVICE = re.compile(r"\bservice\s+([A-Za-z_]\w*)\s*\{")
_RPC = re.compile(r"\brpc\s+([A-Za-z_]\w*)\s*\(")


def parse_proto(text: str, source: str) -> list[Route]:
    """Routes for every ``rpc`` of every ``service`` in a ``.proto`` file."""
    if len(text) > MAX_SOURCE_BYTES:
        raise ProfileError(f"{source}: larger than {MAX_SOURCE_BYTES} bytes")
    # Strings first (a "//" inside one is not a comment), then comments.
    stripped = _COMMENT.sub(" ", _STRING_LITERAL.sub('""', text))
    if "/*" in stripped:
        raise ProfileError(f"{source}: unterminated /* comment")
    packages = _PACKAGE.findall(stripped)
    if len(packages) > 1:
        raise ProfileError(f"{source}: more than one package statement")
    prefix = f"{packages[0]}." if packages else ""
    found: list[tuple[str, str]] = []
    for service in _SERVICE.finditer(stripped):
        body = _block(stripped, service.end() - 1, source, f"service {service.group(1)}")
        methods = _RPC.findall(body)
        if not methods:
            raise ProfileError(f"{source}: service {service.group(1)} has no rpc")
        found += [(f"{prefix}{service.group(1)}", m) for m in methods]
    if not found:
        raise ProfileError(f"{source}: no service definition (service Name {{ rpc ... }})")
    names = [m for _, m in found]
    routes = []
    for service_name, method in found:
        path = f"/{service_name}/{method}"
        # Linkerd names a route after its method; two services sharing one get full paths.
        name = method if names.count(method) == 1 else f"{service_name}/{method}"
        routes.append(Route(name, "POST", re.escape(path)))
    return routes


def _block(text: str, open_at: int, source: str, what: str) -> str:
    """The text between the brace at ``open_at`` and its match."""
    depth = 0
    for index in range(open_at, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : index]
    raise ProfileError(f"{source}: {what}: no closing brace")


# -- template -------------------------------------------------------------------------------

_TEMPLATE = """\
### ServiceProfile for {service}.{namespace} ###
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: {name}
  namespace: {namespace}
spec:
  # A service profile lists routes. The mesh aggregates metrics (request volume, success
  # rate, latency) per route, and applies each route's retries and timeout.
  routes:
  - name: '/authors/{{id}}'
    # Requests matching the condition belong to this route; the first matching route wins.
    condition:
      # The path, as a regular expression anchored at both ends.
      pathRegex: '/authors/\\d+'
      # The request's method.
      method: POST
      # Conditions combine with all, any and not:
      # all:
      # - condition:
      #     method: POST
      # - condition:
      #     pathRegex: '/authors/\\d+'
      # - not:
      #     condition:
      #       pathRegex: '/authors/admin'
      # - any:
      #   - condition:
      #       method: GET
      #   - condition:
      #       method: POST
    # Response classes say which responses count as failures (by default 5xx do).
    responseClasses:
    - condition:
        status:
          min: 500
          max: 599
      isFailure: true
    # A retryable route is retried on failure, within the retry budget.
    isRetryable: false
    # A request on this route that takes longer fails with 504.
    timeout: 10s
  # How many retries may be added on top of the original requests.
  retryBudget:
    # At most this share of the requests may be retries.
    retryRatio: 0.2
    # Retries always allowed per second, whatever the ratio.
    minRetriesPerSecond: 10
    # The window the ratio is computed over.
    ttl: 10s
"""


def template(service: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    check_names(service, namespace)
    name = profile_name(service, namespace, cluster_domain)
    return _TEMPLATE.format(service=service, namespace=namespace, name=name)
