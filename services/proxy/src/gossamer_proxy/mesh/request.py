"""The read-only view of an HTTP request that routing and authorization decide on.

Route matching (:mod:`.routes`, :mod:`.profile`) and inbound authorization (:mod:`.authz`)
look at the method, path, query string, authority and headers and nothing else; the data
path builds one :class:`RequestView` per request from what its HTTP/1 or HTTP/2 parser
produced (header names as lower-case bytes, in wire order).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit

__all__ = ["MEMO_AUTHORITY_CHARS", "RequestView", "split_host_port"]


#: Longer authorities are split afresh each time, never memoized: a DNS name has at most 253
#: characters, so this leaves room for a port and IPv6 brackets, and the memo's 1024
#: entries hold under 1 MB whatever the clients send (a Host may have ~64 KiB).
MEMO_AUTHORITY_CHARS: Final = 300


def split_host_port(authority: str) -> tuple[str, int | None]:
    """``"web.ns.svc:8080"`` → ``("web.ns.svc", 8080)``; IPv6 literals keep their brackets off."""
    if len(authority) <= MEMO_AUTHORITY_CHARS:
        return _split_memo(authority)
    return _split(authority)


def _split(authority: str) -> tuple[str, int | None]:
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return authority.lower(), None
        host, rest = authority[1:end], authority[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep or not (port_text.isascii() and port_text.isdigit()):
            host, port_text = authority, ""
    digits = port_text.isascii() and port_text.isdigit()
    port = int(port_text) if digits and int(port_text) <= 65535 else None
    return host.lower().rstrip("."), port


# Routing and authorization ask this of every request, and clients send the same few
# authorities again and again: a memo turns about 70 bytecodes per request into one C-level
# lookup. The authorities come from the network, so it is bounded in entries and (through
# MEMO_AUTHORITY_CHARS, checked by its callers) in the size of each.
_split_memo = functools.lru_cache(maxsize=1024)(_split)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a request looks like to routing and policy."""

    method: str
    path: str
    query: str = ""
    authority: str = ""
    headers: Sequence[tuple[bytes, bytes]] = ()
    _query_pairs: list[tuple[str, str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_target(
        cls,
        method: str | bytes,
        target: str | bytes,
        *,
        authority: str | bytes = "",
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> RequestView:
        """Build from a request target in origin form (``/a?b``) or absolute form."""
        if isinstance(method, bytes):
            method = method.decode("latin-1")
        if isinstance(target, bytes):
            target = target.decode("latin-1")
        if isinstance(authority, bytes):
            authority = authority.decode("latin-1")
        if "://" in target.split("?", 1)[0]:
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
            # An absolute-form target names the authority; it wins over Host (RFC 9112 §3.2.2).
            authority = parts.netloc or authority
        else:
            path, _, query = target.partition("?")
        return cls(
            method=method.upper(), path=path, query=query, authority=authority, headers=headers
        )

    @property
    def host(self) -> str:
        """The authority's host, lower-case, without port or trailing dot."""
        authority = self.authority  # split_host_port, inline: no extra call per request
        if len(authority) <= MEMO_AUTHORITY_CHARS:
            return _split_memo(authority)[0]
        return _split(authority)[0]

    def header_values(self, name: bytes) -> list[bytes]:
        """All values of header ``name`` (case-insensitive), in order."""
        lowered = name.lower()
        return [v for n, v in self.headers if n.lower() == lowered]

    def query_values(self, name: str) -> list[str]:
        """All (percent-decoded) values of query parameter ``name``."""
        pairs = self._query_pairs
        if pairs is None:
            pairs = parse_qsl(self.query, keep_blank_values=True)
            object.__setattr__(self, "_query_pairs", pairs)
        return [v for k, v in pairs if k == name]
