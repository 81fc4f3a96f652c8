"""Callers that come through the kube-apiserver's aggregation layer (pure).

With the ``v1alpha1.tap.linkerd.io`` APIService, the apiserver authenticates and authorizes
the user, then proxies the call to the tap service over TLS with its front-proxy client
certificate (``--proxy-client-cert-file``) and names the user in request headers
(``X-Remote-User``, ``X-Remote-Group``, ``X-Remote-Extra-<key>``). As Kubernetes's
request-header authenticator, those headers are believed only on a connection whose client
certificate chains to the request-header CA (``requestheader-client-ca-file`` of
``kube-system/extension-apiserver-authentication``) and whose common name is one of
``requestheader-allowed-names`` (an empty list allows any). On any other connection they
are ignored, whatever they say.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gossamer_tls import ChainError, verify_chain

from gossamer_cli.viz.tap_service.authz import AuthError, Subject

__all__ = ["FrontProxy", "Headers", "chains_to", "front_proxy_from_config_map"]

#: Bounds of what a front proxy may name (the apiserver's own headers are far smaller).
MAX_GROUPS: Final = 256
MAX_EXTRA_KEYS: Final = 64
MAX_VALUES: Final = 64
MAX_VALUE_LENGTH: Final = 1024


class Headers(Protocol):
    """Case-insensitive request headers that may repeat (aiohttp's ``CIMultiDictProxy``)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...

    def __iter__(self) -> Iterator[str]: ...


def chains_to(certificate: x509.Certificate, anchors: Sequence[x509.Certificate],
              now: dt.datetime) -> bool:  # fmt: skip
    """Whether ``certificate`` is valid now, signed by one of ``anchors`` and, if it limits
    its use, usable as a TLS client (Go's verifier, which Kubernetes uses, asks the same)."""
    if not anchors:
        return False
    try:
        verify_chain(certificate, [], anchors, now=now)
    except (ChainError, ValueError):
        return False
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return (
        ExtendedKeyUsageOID.CLIENT_AUTH in usages
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    )


def _json_list(text: str | None, what: str) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not a JSON list: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a JSON list of strings")
    return tuple(value)


@dataclass(frozen=True)
class FrontProxy:
    """The request-header authentication settings the apiserver publishes."""

    ca: tuple[x509.Certificate, ...]
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @property
    def ca_pem(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding

        return "".join(c.public_bytes(Encoding.PEM).decode() for c in self.ca)

    def is_front_proxy(self, certificate: x509.Certificate, now: dt.datetime) -> bool:
        """Whether a connection with this (TLS-verified) client certificate is the proxy's."""
        if not chains_to(certificate, self.ca, now):
            return False
        if not self.allowed_names:
            return True
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return bool(names) and str(names[0].value) in self.allowed_names

    def subject(self, headers: Headers) -> Subject:
        """The user the front proxy names; 401 when it names none."""
        user = ""
        for header in self.username_headers:
            values = [v.strip() for v in headers.getall(header, []) if v.strip()]
            if values:
                user = values[0]
                break
        if not user:
            raise AuthError(401, "the front proxy named no user")
        groups = [v for h in self.group_headers for v in headers.getall(h, [])]
        if len(groups) > MAX_GROUPS:
            raise AuthError(400, f"the front proxy named more than {MAX_GROUPS} groups")
        extra: dict[str, list[str]] = {}
        for header in headers:
            for prefix in self.extra_prefixes:
                if header.lower().startswith(prefix.lower()) and len(header) > len(prefix):
                    # Kubernetes: the key is lower-cased, then percent-decoded.
                    key = urllib.parse.unquote(header[len(prefix) :].lower())
                    if key not in extra:
                        extra[key] = list(headers.getall(header, []))
        if len(extra) > MAX_EXTRA_KEYS or any(len(v) > MAX_VALUES for v in extra.values()):
            raise AuthError(400, "the front proxy sent too many extra user attributes")
        for value in [user, *groups, *(v for vs in extra.values() for v in vs)]:
            if len(value) > MAX_VALUE_LENGTH:
                raise AuthError(400, "the front proxy sent an overlong user attribute")
        return Subject(user, tuple(groups), "", extra)


def front_proxy_from_config_map(data: Mapping[str, str]) -> FrontProxy | None:
    """The settings of ``extension-apiserver-authentication``'s data; None when the apiserver
    runs no front proxy (no ``requestheader-client-ca-file``)."""
    pem = data.get("requestheader-client-ca-file") or ""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        return None
    ca = tuple(x509.load_pem_x509_certificates(pem.encode()))
    names = _json_list(data.get("requestheader-allowed-names"), "requestheader-allowed-names")
    users = _json_list(data.get("requestheader-username-headers"), "requestheader-username-headers")
    groups = _json_list(data.get("requestheader-group-headers"), "requestheader-group-headers")
    prefixes = _json_list(
        data.get("requestheader-extra-headers-prefix"), "requestheader-extra-headers-prefix"
    )
    if not users:
        raise ValueError("requestheader-username-headers names no header")
    return FrontProxy(ca, names, users, groups, prefixes)
