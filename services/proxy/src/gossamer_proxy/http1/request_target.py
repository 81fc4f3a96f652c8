"""Which authority an HTTP/1 request is for (sans-io; RFC 9112 §3.2, §3.2.2).

Routing, authorization and metrics must all see the same authority as the upstream does,
or a request can be authorized as one host and delivered as another. The rules:

- more than one ``Host`` field is a 400, and so is an HTTP/1.1 request without one;
- a ``Host`` value must be ``uri-host [":" port]`` (an empty value is allowed: the target
  URI has no authority);
- an absolute-form target (``GET http://a.example/x``) names the authority itself: it wins
  over ``Host``, and the forwarded request carries ``Host`` = that authority (a proxy
  "MUST ignore the received Host header field ... and instead replace it", §3.2.2). Its
  scheme must be ``http`` or ``https`` and it must have a non-empty authority without
  userinfo (RFC 9110 §4.2.4);
- any other target must be origin-form (``/…``) or ``*``; authority-form (CONNECT) never
  gets here.

The result is written into :class:`~.headers.MessageInfo` (``host`` and ``forward``), the
one place the rest of the data path reads it from.
"""

from __future__ import annotations

import re

from .headers import HeaderError, MessageInfo

__all__ = ["VERDICTS", "apply_request_authority", "target_authority", "valid_authority"]

# uri-host = IP-literal / IPv4address / reg-name (RFC 3986 §3.2.2), then an optional port.
_REG_NAME = rb"[A-Za-z0-9\-._~%!$&'()*+,;=]*"
_IP_LITERAL = rb"\[[A-Za-z0-9\-._~%!$&'()*+,;=:]+\]"
_AUTHORITY = re.compile(rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")(?::[0-9]{0,5})?")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*")
_SCHEMES = frozenset({b"http", b"https"})

#: Verdicts of :func:`valid_authority` by value. A client sends the same few ``Host`` values
#: over and over, so the regex runs once per value; the cache is bounded (emptied when full)
#: because the values come from the network. Read-only outside this module: the HTTP/1
#: server skips :func:`apply_request_authority` for an origin-form request whose one
#: ``Host`` value is in here as valid (what that call would conclude).
VERDICTS: dict[bytes, bool] = {}
VERDICTS_MAX = 256


def valid_authority(value: bytes) -> bool:
    """Whether ``value`` is ``uri-host [":" port]`` (no userinfo, port at most 65535)."""
    verdict = VERDICTS.get(value)
    if verdict is None:
        verdict = _check_authority(value)
        if len(VERDICTS) >= VERDICTS_MAX:
            VERDICTS.clear()
        VERDICTS[value] = verdict
    return verdict


def _check_authority(value: bytes) -> bool:
    if _AUTHORITY.fullmatch(value) is None:
        return False
    if value.startswith(b"["):
        port = value.rpartition(b"]")[2][1:]
    else:
        port = value.rpartition(b":")[2] if b":" in value else b""
    return not port or int(port) <= 65535


def target_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form ``target``; ``None`` for origin-form and ``*``.

    Raises :class:`HeaderError` for a target of no acceptable form.
    """
    if target.startswith(b"/") or target == b"*":
        return None
    scheme, sep, rest = target.partition(b"://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        raise HeaderError("malformed request target")
    if scheme.lower() not in _SCHEMES:
        raise HeaderError(f"unsupported scheme {scheme.decode('latin-1')!r} in request target")
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    if b"@" in authority:
        raise HeaderError("userinfo in the request target is not accepted")
    if not authority or not valid_authority(authority):
        raise HeaderError("invalid authority in the request target")
    return authority


def apply_request_authority(info: MessageInfo, target: bytes, *, http10: bool) -> None:
    """Settle ``info.host`` (and the forwarded ``Host``) for a request to ``target``.

    Raises :class:`HeaderError` (a 400) for several ``Host`` fields, a missing one on
    HTTP/1.1, an invalid value or an unacceptable target.
    """
    if info.host_count > 1:
        raise HeaderError("more than one Host header")
    if info.host_count == 0 and not http10:
        raise HeaderError("missing Host header")
    if target[:1] == b"/":  # origin-form, the usual case: Host names the authority
        if info.host is not None and not valid_authority(info.host):
            raise HeaderError("invalid Host header")
        return
    authority = target_authority(target)
    if authority is None:
        if info.host is not None and not valid_authority(info.host):
            raise HeaderError("invalid Host header")
        return
    info.host = authority
    forward: list[tuple[bytes, bytes]] = []
    replaced = False
    for name, value in info.forward:
        if name.lower() == b"host":
            if not replaced:
                forward.append((name, authority))
                replaced = True
            continue
        forward.append((name, value))
    if not replaced:
        forward.insert(0, (b"host", authority))
    info.forward = forward
