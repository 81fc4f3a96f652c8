"""The few DER encodings the leaf fast path needs (X.690), as pure functions over bytes.

Why this exists: ``cryptography``'s ``CertificateBuilder`` re-encodes every name and extension
from Python objects on each call, which costs about three times the ECDSA signature itself. A
leaf differs from the previous one only in a handful of fields, so :mod:`gossamer_tls.leaf`
assembles it from pre-encoded parts with these helpers. Only definite-length, primitive or
constructed-from-bytes encodings are provided; nothing here parses.
"""

from __future__ import annotations

import datetime as dt

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OBJECT_IDENTIFIER = 0x06
BOOLEAN = 0x01
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
CONTEXT_DNS_NAME = 0x82
"""``[2] IMPLICIT IA5String``: the dNSName choice of GeneralName."""

BOOLEAN_TRUE = b"\x01\x01\xff"


def length(size: int) -> bytes:
    """The definite-form length octets for ``size`` content bytes."""
    if size < 0:
        raise ValueError("a DER length cannot be negative")
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, content: bytes) -> bytes:
    """One element: tag, length, content."""
    return bytes((tag,)) + length(len(content)) + content


def integer(value: int) -> bytes:
    """A non-negative INTEGER, minimal two's complement (leading 0 when the top bit is set)."""
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    content = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return tlv(INTEGER, content)


def bit_string(content: bytes) -> bytes:
    """A BIT STRING of whole octets (zero unused bits)."""
    return tlv(BIT_STRING, b"\x00" + content)


def time(value: dt.datetime) -> bytes:
    """RFC 5280 §4.1.2.5 Time: UTCTime through 2049, GeneralizedTime from 2050, whole seconds."""
    value = value.astimezone(dt.UTC)
    if 1950 <= value.year < 2050:
        # Formatted by hand: strftime cost a leaf more than the rest of its TBS encoding.
        text = "%02d%02d%02d%02d%02d%02dZ" % (  # noqa: UP031 - the fastest way here
            value.year % 100,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
        )
        return tlv(UTC_TIME, text.encode("ascii"))
    return tlv(GENERALIZED_TIME, f"{value.year:04d}{value:%m%d%H%M%S}Z".encode("ascii"))


def extension(oid_der: bytes, value_der: bytes, *, critical: bool) -> bytes:
    """One X.509 ``Extension``: ``SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }``.

    ``oid_der`` is the complete OBJECT IDENTIFIER element; a false ``critical`` is omitted, as
    DER requires for a DEFAULT value.
    """
    return tlv(
        SEQUENCE,
        oid_der + (BOOLEAN_TRUE if critical else b"") + tlv(OCTET_STRING, value_der),
    )
