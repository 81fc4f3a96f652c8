"""The mesh's one key type: ECDSA on P-256.

Linkerd's proxies generate ECDSA P-256 keys and its issuer only signs those, so Gossamer does
the same: every key that enters the CA (CSR public keys, issuer keys, anchors) is checked here
and anything else is refused with a message naming what was found instead.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gossamer_tls.errors import UnsupportedKeyError

CURVE_NAME = "secp256r1"


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key (kept in memory; callers decide whether to persist it)."""
    return ec.generate_private_key(ec.SECP256R1())


def describe_key(key: object) -> str:
    """A short human description of a key's algorithm, for error messages."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def require_p256_public_key(key: object, *, what: str = "key") -> ec.EllipticCurvePublicKey:
    """Return ``key`` as a P-256 public key or raise :class:`UnsupportedKeyError`."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise UnsupportedKeyError(f"{what} must be ECDSA P-256, got {describe_key(key)}")


def require_p256_private_key(key: object, *, what: str = "key") -> ec.EllipticCurvePrivateKey:
    """Return ``key`` as a P-256 private key or raise :class:`UnsupportedKeyError`."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise UnsupportedKeyError(f"{what} must be ECDSA P-256, got {describe_key(key)}")


def public_keys_equal(a: ec.EllipticCurvePublicKey, b: ec.EllipticCurvePublicKey) -> bool:
    """Whether two P-256 public keys are the same point (used to pair certificates with keys)."""
    return a.public_numbers() == b.public_numbers()
