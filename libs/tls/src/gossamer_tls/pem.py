"""PEM and DER encoding helpers: certificate bundles, keys and the trust-root digest.

Trust anchors travel as PEM bundle *text* (in a ConfigMap and in the proxy's environment), while
the Certify exchange uses DER. These helpers accept either encoding where that is unambiguous and
report which block of a bundle is broken, so an operator can fix the right file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gossamer_tls.errors import KeyMaterialError, PemError
from gossamer_tls.keys import require_p256_private_key

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_END_TEMPLATE = b"-----END %s-----"

CERTIFICATE = "CERTIFICATE"
PRIVATE_KEY_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY")


@dataclass(frozen=True, slots=True)
class PemBlock:
    """One ``-----BEGIN <label>-----`` block, decoded to its DER payload."""

    label: str
    der: bytes


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("ascii", errors="replace") if isinstance(data, str) else data


def looks_like_pem(data: bytes | str) -> bool:
    """Whether ``data`` contains a PEM armour line (as opposed to raw DER)."""
    return _BEGIN.search(_as_bytes(data)) is not None


def parse_pem_blocks(data: bytes | str) -> list[PemBlock]:
    """Split PEM text into its blocks; text outside blocks (comments) is ignored.

    Raises :class:`PemError` for an unterminated block or a body that is not base64.
    """
    raw = _as_bytes(data)
    blocks: list[PemBlock] = []
    position = 0
    while True:
        begin = _BEGIN.search(raw, position)
        if begin is None:
            break
        label = begin.group(1)
        end_marker = _END_TEMPLATE % label
        end = raw.find(end_marker, begin.end())
        if end < 0:
            raise PemError(
                f"PEM block {len(blocks) + 1} ({label.decode()}) has no matching END line"
            )
        body = b"".join(raw[begin.end() : end].split())
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PemError(
                f"PEM block {len(blocks) + 1} ({label.decode()}) is not valid base64: {exc}"
            ) from None
        if not der:
            raise PemError(f"PEM block {len(blocks) + 1} ({label.decode()}) is empty")
        blocks.append(PemBlock(label=label.decode(), der=der))
        position = end + len(end_marker)
    return blocks


def encode_pem(label: str, der: bytes) -> bytes:
    """Armour ``der`` as a PEM block with 64-column base64 lines."""
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    head = f"-----BEGIN {label}-----\n".encode()
    tail = f"-----END {label}-----\n".encode()
    return b"".join([head, *(line + b"\n" for line in lines), tail])


def load_der_certificate(der: bytes, *, what: str = "certificate") -> x509.Certificate:
    """Parse one DER certificate, raising :class:`PemError` on garbage."""
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise PemError(f"{what} is not a valid DER X.509 certificate: {exc}") from None


def load_certificates(
    data: bytes | str, *, what: str = "certificate bundle"
) -> list[x509.Certificate]:
    """Load every certificate from a PEM bundle, or the single certificate in raw DER.

    Raises :class:`PemError` if there is no certificate, a block is not a CERTIFICATE, or a
    certificate does not parse; the message names the offending block.
    """
    raw = _as_bytes(data)
    if not raw.strip():
        raise PemError(f"{what} is empty")
    if not looks_like_pem(raw):
        return [load_der_certificate(raw, what=what)]
    try:
        blocks = parse_pem_blocks(raw)
    except PemError as exc:
        raise PemError(f"{what}: {exc}") from None
    certificates: list[x509.Certificate] = []
    for index, block in enumerate(blocks, start=1):
        if block.label != CERTIFICATE:
            raise PemError(f"{what}: PEM block {index} is {block.label!r}, expected CERTIFICATE")
        certificates.append(load_der_certificate(block.der, what=f"{what}: PEM block {index}"))
    if not certificates:
        raise PemError(f"{what} contains no certificates")
    return certificates


def load_certificate(data: bytes | str, *, what: str = "certificate") -> x509.Certificate:
    """Load exactly one certificate (PEM or DER)."""
    certificates = load_certificates(data, what=what)
    if len(certificates) != 1:
        raise PemError(f"{what}: expected exactly one certificate, found {len(certificates)}")
    return certificates[0]


def certificates_to_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Concatenate certificates as a PEM bundle, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def certificate_to_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def certificates_to_der(certificates: Sequence[x509.Certificate]) -> list[bytes]:
    return [certificate_to_der(c) for c in certificates]


def load_private_key(data: bytes | str, *, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted ECDSA P-256 private key from PEM (PKCS#8 or SEC1) or PKCS#8 DER.

    Raises :class:`KeyMaterialError` for malformed or encrypted keys and
    :class:`~gossamer_tls.errors.UnsupportedKeyError` for keys of another type.
    """
    raw = _as_bytes(data)
    if not raw.strip():
        raise KeyMaterialError(f"{what} is empty")
    try:
        if looks_like_pem(raw):
            blocks = parse_pem_blocks(raw)
            keys = [b for b in blocks if b.label in PRIVATE_KEY_LABELS or "PRIVATE KEY" in b.label]
            if len(keys) != 1:
                raise KeyMaterialError(
                    f"{what}: expected exactly one PRIVATE KEY PEM block, found {len(keys)}"
                )
            key = serialization.load_pem_private_key(
                encode_pem(keys[0].label, keys[0].der), password=None
            )
        else:
            key = serialization.load_der_private_key(raw, password=None)
    except KeyMaterialError:
        raise
    except PemError as exc:
        raise KeyMaterialError(f"{what}: {exc}") from None
    except TypeError as exc:  # encrypted key without password
        raise KeyMaterialError(f"{what} is encrypted; Gossamer needs an unencrypted key") from exc
    except (ValueError, binascii.Error) as exc:
        raise KeyMaterialError(f"{what} is not a valid private key: {exc}") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for odd key types
        raise KeyMaterialError(f"{what} is not a supported private key: {exc}") from None
    return require_p256_private_key(key, what=what)


def private_key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (what ``key.pem`` / ``tls.key`` hold)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_to_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER (the proxy's ``key.p8``)."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def trust_root_sha256(trust_roots_pem: bytes | str) -> str:
    """Hex SHA-256 of the trust-root PEM text, as the ``linkerd.io/trust-root-sha256`` annotation.

    The digest is over the exact text (the injector copies the text verbatim into the proxy's
    environment), so whitespace differences change it on purpose.
    """
    raw = trust_roots_pem.encode() if isinstance(trust_roots_pem, str) else trust_roots_pem
    return hashlib.sha256(raw).hexdigest()
