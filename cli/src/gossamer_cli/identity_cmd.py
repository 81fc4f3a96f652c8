"""``gossamer identity``: show the certificate chain a proxy presents, like ``linkerd identity``.

Connects with TLS to a proxy port (inbound 4143 or admin 4191 both terminate TLS for the
proxy's own identity), sends SNI = the expected identity when one is given, and prints every
certificate the server presented: subject, SANs, validity, issuer. With ``--trust-anchors`` the
chain is also verified (against the anchors, the identity, and the current time).

Two forms:

- by address: ``gossamer identity 10.0.0.7:4143 [--identity NAME]``;
- by pod, as ``linkerd identity``: ``gossamer identity -n ns pod/web-0`` (or a bare pod name,
  or ``-l app=web`` for every pod a selector picks). The pod's proxy is dialled on its pod IP
  and admin port with SNI set to the identity the injector gave it
  (``LINKERD2_PROXY_IDENTITY_LOCAL_NAME``, service account and namespace filled in), so the
  command runs where pod IPs are reachable: in the cluster, or in local mode's node namespace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
PROXY_CONTAINER = "linkerd-proxy"
LOCAL_NAME_ENV = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"
ADMIN_PORT_NAME = "linkerd-admin"
DEFAULT_ADMIN_PORT = 4191
_POD_PREFIXES = ("pod/", "pods/", "po/")


@dataclass(frozen=True)
class PodTarget:
    """Where a pod's proxy is dialled, and the identity it must present."""

    pod: str
    host: str
    port: int
    identity: str


class PodTargetError(ValueError):
    """The pod cannot be asked for its certificate; the message says why."""


def is_address(target: str) -> bool:
    """``host:port`` (or ``[v6]:port``) rather than a pod name, which has no colon."""
    return ":" in target


def pod_name(target: str) -> str:
    """``pod/web-0``, ``po/web-0`` or ``web-0`` → ``web-0``; other kinds are refused."""
    for prefix in _POD_PREFIXES:
        if target.startswith(prefix):
            target = target[len(prefix) :]
            break
    else:
        if "/" in target:
            raise click.BadParameter(
                f"{target!r}: only pods are supported (pod/NAME, or a bare pod name)",
                param_hint="PODS",
            )
    if not target or "/" in target:
        raise click.BadParameter(f"{target!r} is not a pod name", param_hint="PODS")
    return target


def pod_target(pod: Mapping[str, Any], port: int | None) -> PodTarget:
    """The proxy's address and identity in ``pod`` (its ``linkerd-proxy`` container)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = str(meta.get("name") or "")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    proxy = next((c for c in containers if c.get("name") == PROXY_CONTAINER), None)
    if proxy is None:
        raise PodTargetError(f"pod {name} has no {PROXY_CONTAINER} container: is it meshed?")
    template = next(
        (
            str(e.get("value") or "")
            for e in proxy.get("env") or []
            if e.get("name") == LOCAL_NAME_ENV
        ),
        "",
    )
    if not template:
        raise PodTargetError(f"pod {name}: its proxy has no identity ({LOCAL_NAME_ENV} unset)")
    identity = template.replace(
        "$(_pod_sa)", str(spec.get("serviceAccountName") or "default")
    ).replace("$(_pod_ns)", str(meta.get("namespace") or ""))
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise PodTargetError(f"pod {name} has no IP yet")
    if port is None:
        port = next(
            (
                int(p["containerPort"])
                for p in proxy.get("ports") or []
                if p.get("name") == ADMIN_PORT_NAME and isinstance(p.get("containerPort"), int)
            ),
            DEFAULT_ADMIN_PORT,
        )
    return PodTarget(name, str(ip), port, identity)


async def _pods(
    kubeconfig: str | None, namespace: str, names: Sequence[str], selector: str | None
) -> list[dict[str, Any]]:
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeApiError
    from gossamer_kube.resources import PODS

    try:
        config = KubeConfig.load(kubeconfig)
    except Exception as exc:
        raise click.ClickException(f"cannot load kubeconfig: {exc}") from None
    async with KubeClient(config) as client:
        found: list[dict[str, Any]] = []
        try:
            for name in names:
                found.append(await client.get(PODS, name, namespace))
            if selector is not None:
                listed, _ = await client.list(PODS, namespace, label_selector=selector)
                found += [p for p in listed if p["metadata"]["name"] not in names]
        except KubeApiError as exc:
            if exc.status == 404:
                raise click.ClickException(
                    f'pod "{exc.details.get("name", "")}" not found in namespace {namespace}'
                ) from None
            raise click.ClickException(str(exc)) from None
    return found


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
@click.argument("targets", nargs=-1, metavar="[ADDRESS | PODS...]")
@click.option("-n", "--namespace", default="default", show_default=True, help="Pods' namespace.")
@click.option("-l", "--selector", help="Label selector: every pod it picks (-n's namespace).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help=f"Proxy port to dial on a pod (default: its admin port, {DEFAULT_ADMIN_PORT}).",
)
@click.option(
    "--identity",
    "expected_identity",
    help="Expected identity of the proxy at ADDRESS; sent as SNI (a meshed proxy only "
    "terminates TLS for its own name) and checked against the certificate.",
)
@click.option(
    "--trust-anchors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM bundle of trust anchors: also verify the presented chain against it.",
)
@click.option("--pem", "as_pem", is_flag=True, help="Print the chain as PEM after the summary.")
@click.option("--timeout", default=5.0, show_default=True, help="Connect/handshake timeout (s).")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
def identity_command(
    targets: tuple[str, ...],
    namespace: str,
    selector: str | None,
    port: int | None,
    expected_identity: str | None,
    trust_anchors: Path | None,
    as_pem: bool,
    timeout: float,
    kubeconfig: str | None,
) -> None:
    """Print the certificate chain a proxy presents: at ADDRESS (default 127.0.0.1:4143), or
    of each of PODS (pod/NAME or NAME, with -n; or -l SELECTOR)."""
    addresses = [t for t in targets if is_address(t)]
    pods = [pod_name(t) for t in targets if not is_address(t)]
    if addresses and (pods or selector):
        raise click.UsageError("give either one ADDRESS or pods (PODS / -l), not both")
    if len(addresses) > 1:
        raise click.UsageError("give one ADDRESS at a time")
    anchors = _load_anchors(trust_anchors)
    if not pods and selector is None:
        address = addresses[0] if addresses else DEFAULT_ADDRESS
        host, addr_port = split_address(address)
        if expected_identity is not None:
            try:
                parse_identity_name(expected_identity)
            except TlsError as exc:
                raise click.BadParameter(str(exc), param_hint="--identity") from None
        _show(address, host, addr_port, expected_identity, anchors, as_pem, timeout)
        return
    if expected_identity is not None:
        raise click.UsageError("--identity is for ADDRESS; a pod's identity comes from its spec")
    found = asyncio.run(_pods(kubeconfig, namespace, pods, selector))
    if not found:
        raise click.ClickException(f"no pods match {selector!r} in namespace {namespace}")
    failed = []
    for index, pod in enumerate(found, 1):
        if index > 1:
            click.echo("")
        name = pod["metadata"]["name"]
        click.echo(f"POD {name} ({index} of {len(found)})")
        click.echo("")
        try:
            target = pod_target(pod, port)
            _show(
                f"{target.host}:{target.port}", target.host, target.port, target.identity,
                anchors, as_pem, timeout,
            )  # fmt: skip
        except (PodTargetError, click.ClickException) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            click.echo(f"error: {message}", err=True)
            failed.append(name)
    if failed:
        raise click.ClickException(f"failed for {len(failed)} pod(s): {', '.join(failed)}")


def _load_anchors(trust_anchors: Path | None) -> list[x509.Certificate] | None:
    if trust_anchors is None:
        return None
    try:
        return load_certificates(trust_anchors.read_bytes(), what=str(trust_anchors))
    except TlsError as exc:
        raise click.ClickException(str(exc)) from None


def _show(
    address: str,
    host: str,
    port: int,
    expected_identity: str | None,
    anchors: list[x509.Certificate] | None,
    as_pem: bool,
    timeout: float,
) -> None:
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
