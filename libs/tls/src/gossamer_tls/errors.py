"""Typed errors for everything that can go wrong with mesh certificates.

Callers (the identity service, the injector, the CLI) need to tell *what* was wrong so that
they can answer with the right gRPC status or exit message, so every failure is a distinct
subclass of :class:`TlsError` with a human-readable message and nothing secret in it.
"""

from __future__ import annotations


class TlsError(Exception):
    """Base class of every error raised by :mod:`gossamer_tls`."""


class PemError(TlsError):
    """Bytes that should hold PEM or DER objects do not (garbage, wrong type, truncated)."""


class KeyMaterialError(TlsError):
    """A private or public key is missing, malformed or of the wrong type."""


class UnsupportedKeyError(KeyMaterialError):
    """A well-formed key that the mesh refuses: anything but ECDSA P-256."""


class IdentityNameError(TlsError):
    """A string is not a well-formed mesh identity name (or service-account username)."""


class CsrError(TlsError):
    """A certificate signing request is malformed, badly signed or asks for the wrong name."""


class CertificateError(TlsError):
    """A certificate cannot be issued or does not have the shape its role requires."""


class ChainError(TlsError):
    """A certificate chain does not verify against the trust anchors at the given time."""


class MalformedCsrError(CsrError):
    """The bytes are not a parseable PKCS#10 request (DER, or PEM where allowed)."""


class CsrSignatureError(CsrError):
    """The request's self-signature does not verify: it was not made with the enclosed key."""


class CsrNameError(CsrError):
    """The request asks for names other than exactly the expected identity."""
