"""The one authority of an HTTP/2 request (sans-io; RFC 9113 §8.3.1).

``:authority`` is the request's authority when present; a ``host`` field beside it must
not name another one. The codec refuses a header block whose ``host`` differs from
``:authority`` (a connection error); a header block with two ``host`` fields is refused
the same way by the bridge (:func:`repeats_host`), since jh2, unlike h2, lets it through.
The data path does not lean on either: :func:`settle_authority` applies the same rule
itself, so that routing, authorization, metrics and the upstream all see one authority:

- with ``:authority``: it wins; ``host`` fields naming anything else are dropped;
- without it: exactly one ``host`` field is the authority (several differing ones make
  the request malformed: :class:`AuthorityError`).
"""

from __future__ import annotations

__all__ = ["AuthorityError", "repeats_host", "settle_authority"]

Headers = list[tuple[bytes, bytes]]


class AuthorityError(ValueError):
    """The request names more than one authority (answered with 400)."""


def settle_authority(headers: Headers) -> tuple[bytes | None, Headers]:
    """The request's authority and its headers with any conflicting ``host`` removed."""
    authority: bytes | None = None
    hosts: list[bytes] = []
    for name, value in headers:
        if name == b":authority":
            authority = value
        elif name == b"host":
            hosts.append(value)
    if not hosts:
        return authority, headers
    if authority is None:
        if any(value != hosts[0] for value in hosts):
            raise AuthorityError("conflicting host fields")
        authority = hosts[0]
    if all(value == authority for value in hosts) and len(hosts) == 1:
        return authority, headers
    kept: Headers = []
    host_kept = False
    for name, value in headers:
        if name == b"host":
            if value != authority or host_kept:
                continue
            host_kept = True
        kept.append((name, value))
    return authority, kept


def repeats_host(headers: Headers) -> bool:
    """Whether a request header block has more than one ``host`` field (malformed)."""
    seen = False
    for name, _ in headers:
        if name == b"host":
            if seen:
                return True
            seen = True
    return False
