"""The test cluster's own PKI: a CA, the apiserver's serving cert, an admin client cert, SA keys,
and the aggregation layer's front-proxy CA and client cert.

Made fresh for every cluster with :mod:`cryptography`, so no key material is ever committed
and two clusters on one machine never trust each other.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClusterPKI", "IssuedCert", "PKIFiles", "issue_cert", "make_ca"]

_VALIDITY = dt.timedelta(days=30)
#: The front proxy's certificate name (``--requestheader-allowed-names``), kubeadm's.
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"


@dataclass(frozen=True)
class IssuedCert:
    """A PEM certificate and its PEM (PKCS#8) private key."""

    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str, now: dt.datetime | None = None) -> IssuedCert:
    """A self-signed P-256 CA certificate."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_cert(
    ca: IssuedCert,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
    now: dt.datetime | None = None,
) -> IssuedCert:
    """A P-256 leaf certificate signed by ``ca`` (for servers, clients, or both)."""
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class ClusterPKI:
    """Every credential one test cluster needs, and where they are written."""

    ca: IssuedCert
    apiserver: IssuedCert
    admin: IssuedCert
    sa_private_pem: bytes
    sa_public_pem: bytes
    front_proxy_ca: IssuedCert
    front_proxy_client: IssuedCert

    @classmethod
    def generate(cls, service_ip: str = "10.96.0.1", api_address: str = "127.0.0.1") -> ClusterPKI:
        ca = make_ca("gossamer-test-cluster-ca")
        apiserver = issue_cert(
            ca,
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=tuple(dict.fromkeys(("127.0.0.1", "::1", service_ip, api_address))),
            server=True,
        )
        # system:masters bypasses RBAC: the admin, the controller-manager, the scheduler and
        # kwok share it, since the test cluster exercises Gossamer's RBAC, not their own.
        admin = issue_cert(ca, "gossamer-admin", organizations=("system:masters",), client=True)
        # RSA like kubeadm's sa.key, so tokens are RS256 as on most real clusters.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_pub = sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # The aggregation layer's own CA and client, as kubeadm's front-proxy-ca: the
        # apiserver proxies to APIService backends with it, naming users in X-Remote-*.
        front_proxy_ca = make_ca("gossamer-test-front-proxy-ca")
        front_proxy_client = issue_cert(front_proxy_ca, FRONT_PROXY_CLIENT_NAME, client=True)
        return cls(
            ca, apiserver, admin, _key_pem(sa_key), sa_pub, front_proxy_ca, front_proxy_client
        )

    def write(self, directory: Path) -> PKIFiles:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = PKIFiles(directory)
        for path, data in (
            (files.ca_cert, self.ca.cert_pem),
            (files.ca_key, self.ca.key_pem),
            (files.apiserver_cert, self.apiserver.cert_pem),
            (files.apiserver_key, self.apiserver.key_pem),
            (files.admin_cert, self.admin.cert_pem),
            (files.admin_key, self.admin.key_pem),
            (files.sa_key, self.sa_private_pem),
            (files.sa_pub, self.sa_public_pem),
            (files.front_proxy_ca_cert, self.front_proxy_ca.cert_pem),
            (files.front_proxy_client_cert, self.front_proxy_client.cert_pem),
            (files.front_proxy_client_key, self.front_proxy_client.key_pem),
        ):
            path.write_bytes(data)
            path.chmod(0o600)
        return files


@dataclass(frozen=True)
class PKIFiles:
    """Paths of the PKI files inside a cluster's state directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.directory / "front-proxy-ca.crt"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.directory / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.directory / "front-proxy-client.key"
