"""``gossamer identity``: show the certificate chain a proxy presents, like ``linkerd identity``.

Connects with TLS to a proxy port (inbound 4143 or admin 4191 both terminate TLS for the
proxy's own identity), sends SNI = the expected identity when one is given, and prints every
certificate the server presented: subject, SANs, validity, issuer. With ``--trust-anchors`` the
chain is also verified (against the anchors, the identity, and the current time).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from gossamer_tls import (
    ChainError,
    TlsError,
    certificates_to_pem,
    load_certificate,
    load_certificates,
    parse_identity_name,
    verify_chain,
)

DEFAULT_ADDRESS = "127.0.0.1:4143"


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); raises click.BadParameter."""
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{address!r} is not host:port", param_hint="ADDRESS")
    return host, int(port)


def _peer_chain_der(sock: ssl.SSLSocket) -> list[bytes]:
    """Every certificate the server sent, leaf first.

    Python 3.13 has ``get_unverified_chain()``; 3.11 keeps the same call on the private
    ``_sslobj``. Without either, only the leaf is available.
    """
    getter = getattr(sock, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return [
            c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
            for c in chain
        ]
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def fetch_chain(
    host: str, port: int, *, server_name: str | None, timeout: float
) -> tuple[list[x509.Certificate], str]:
    """TLS-dial ``host:port`` and return the presented chain and the negotiated TLS version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we print whatever is presented; --trust-anchors verifies
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        ders = _peer_chain_der(tls)
        version = tls.version() or "unknown"
    return [load_certificate(der, what=f"certificate {i}") for i, der in enumerate(ders)], version


def _key_description(certificate: x509.Certificate) -> str:
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _sans(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for name in san:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        else:
            out.append(f"{type(name).__name__}:{name.value}")
    return out


def describe_certificate(index: int, certificate: x509.Certificate, now: dt.datetime) -> str:
    before, after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    state = "valid" if before <= now <= after else ("expired" if now > after else "not yet valid")
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    lines = [
        f"Certificate {index}{' (CA)' if is_ca else ''}:",
        f"  Subject:      {certificate.subject.rfc4514_string() or '(empty)'}",
        f"  SANs:         {', '.join(_sans(certificate)) or '(none)'}",
        f"  Issuer:       {certificate.issuer.rfc4514_string() or '(empty)'}",
        f"  Not before:   {before.isoformat()}",
        f"  Not after:    {after.isoformat()} ({state})",
        f"  Serial:       {certificate.serial_number:x}",
        f"  Key:          {_key_description(certificate)}",
        f"  SHA-256:      {fingerprint}",
    ]
    return "\n".join(lines)


def render(
    chain: Sequence[x509.Certificate], *, address: str, version: str, now: dt.datetime
) -> str:
    header = f"{address} presented {len(chain)} certificate(s) over {version}"
    return "\n\n".join([header, *(describe_certificate(i, c, now) for i, c in enumerate(chain))])


@click.command("identity")
@click.argument("address", default=DEFAULT_ADDRESS)
@click.option(
    "--identity",
    "expected_identity",
    help="Expected identity of the proxy; sent as SNI (a meshed proxy only terminates TLS for "
    "its own name) and checked against the certificate.",
)
@click.option(
    "--trust-anchors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM bundle of trust anchors: also verify the presented chain against it.",
)
@click.option("--pem", "as_pem", is_flag=True, help="Print the chain as PEM after the summary.")
@click.option("--timeout", default=5.0, show_default=True, help="Connect/handshake timeout (s).")
def identity_command(
    address: str,
    expected_identity: str | None,
    trust_anchors: Path | None,
    as_pem: bool,
    timeout: float,
) -> None:
    """Print the certificate chain a proxy presents at ADDRESS (default 127.0.0.1:4143)."""
    host, port = split_address(address)
    if expected_identity is not None:
        try:
            parse_identity_name(expected_identity)
        except TlsError as exc:
            raise click.BadParameter(str(exc), param_hint="--identity") from None
    anchors = None
    if trust_anchors is not None:
        try:
            anchors = load_certificates(trust_anchors.read_bytes(), what=str(trust_anchors))
        except TlsError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        chain, version = fetch_chain(host, port, server_name=expected_identity, timeout=timeout)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"TLS connection to {address} failed: {exc}") from None
    except TlsError as exc:
        raise click.ClickException(
            f"{address} presented an unparseable certificate: {exc}"
        ) from None
    if not chain:
        raise click.ClickException(f"{address} presented no certificate")
    now = dt.datetime.now(dt.UTC)
    click.echo(render(chain, address=address, version=version, now=now))
    if as_pem:
        click.echo("")
        click.echo(certificates_to_pem(chain).decode(), nl=False)
    if anchors is not None:
        try:
            verified = verify_chain(
                chain[0], chain[1:], anchors, now=now, dns_name=expected_identity
            )
        except ChainError as exc:
            raise click.ClickException(f"chain does NOT verify: {exc}") from None
        click.echo("")
        click.echo(
            f"Verified: chains to trust anchor {verified.anchor.subject.rfc4514_string()}"
            + (f" and is valid for {expected_identity}" if expected_identity else "")
        )


def register(group: click.Group) -> None:
    group.add_command(identity_command)
