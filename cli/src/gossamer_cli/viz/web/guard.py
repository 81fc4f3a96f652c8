"""What the dashboard lets in from a URL (pure).

Namespace and resource names travel from the URL into PromQL and HTML, so they are checked
against Kubernetes's own naming rules first: a namespace is an RFC 1123 DNS label, a workload
or pod name an RFC 1123 DNS subdomain. Neither can hold a quote, a brace or a backslash.

The Host header is checked against an allow-list (Linkerd's ``-enforced-host``), so a page
on another site that rebinds its DNS name to the dashboard's address cannot read it.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_LABEL = re.compile(_LABEL)
_DNS_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_SUBDOMAIN = 253

#: Names and addresses a browser uses for the dashboard on this machine (any port).
LOCAL_HOSTS = r"localhost|127\.0\.0\.1|\[::1\]"


class BadNameError(ValueError):
    """A name from the URL is not a valid Kubernetes name."""


def namespace_name(text: str) -> str:
    if not _DNS_LABEL.fullmatch(text):
        raise BadNameError(f"invalid namespace name {text!r}: must be a DNS label (RFC 1123)")
    return text


def resource_name(text: str) -> str:
    if len(text) > MAX_SUBDOMAIN or not _DNS_SUBDOMAIN.fullmatch(text):
        raise BadNameError(f"invalid resource name {text!r}: must be a DNS subdomain (RFC 1123)")
    return text


def enforced_host_pattern(service_hosts: tuple[str, ...] = ()) -> str:
    """Linkerd's default ``-enforced-host``: loopback names, plus the dashboard Service's."""
    names = [LOCAL_HOSTS, *(re.escape(h) for h in service_hosts)]
    return rf"^({'|'.join(names)})(:\d+)?$"


def compile_host_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad --enforced-host pattern {pattern!r}: {exc}") from exc


def host_allowed(host: str | None, pattern: re.Pattern[str]) -> bool:
    """Exactly one Host header, matching ``pattern`` in full."""
    return host is not None and pattern.fullmatch(host) is not None
