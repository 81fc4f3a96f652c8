"""The tap API through the real kube-apiserver's aggregation layer (Linkerd's APIService).

The test cluster's apiserver runs with a front proxy (``--requestheader-*``,
``--proxy-client-cert-file``). The tap service runs in this test on loopback; its Service is
an ``ExternalName`` for ``localhost``, so the aggregator (which routes to a Service's
ClusterIP, or for ExternalName to the name) dials it at the APIService's port, checking its
certificate for ``tap.<ns>.svc`` against the APIService's ``caBundle``. A fake proxy on
loopback answers ``Observe`` (only to the tap identity), as in the tap service's unit tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapBase
from gossamer_cli.viz import manifests
from gossamer_cli.viz.tap_identity import TapCredentials, tap_identity
from gossamer_cli.viz.tap_query import TapTarget
from gossamer_cli.viz.tap_service import api
from gossamer_cli.viz.tap_service.api import TapPath
from gossamer_cli.viz.tap_service.auth import Authenticator, cluster_authentication
from gossamer_cli.viz.tap_service.authz import Subject
from gossamer_cli.viz.tap_service.server import TapService, server_context
from gossamer_cli.viz.tap_service.serving import generate_serving
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeApiError
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.binaries import locate_kubectl
from gossamer_kube.testing.pki import PKIFiles
from gossamer_tls import (
    Issuer,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)
from grpclib.server import Server, Stream

pytestmark = pytest.mark.kube

TRUST_DOMAIN = "cluster.local"
API_SERVICE = "v1alpha1.tap.linkerd.io"
AVAILABLE_WITHIN = 60.0


class FakeProxy(TapBase):
    """A proxy's tap server: only the tap identity may observe; streams numbered requests."""

    def __init__(self, tap_name: str) -> None:
        self.tap_name = tap_name

    async def Observe(self, stream: Stream[tap_pb2.ObserveRequest, tap_pb2.TapEvent]) -> None:
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        cert = stream.peer.cert() or {}
        names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
        if self.tap_name not in names:
            raise GRPCError(Status.PERMISSION_DENIED, "not the tap service")
        await stream.recv_message()
        for n in range(100):
            event = tap_pb2.TapEvent(
                source=tcp_address_to_proto("10.0.0.1", 40000 + n),
                destination=tcp_address_to_proto("10.0.0.2", 8080),
                proxy_direction=tap_pb2.TapEvent.INBOUND,
            )
            event.http.request_init.id.stream = n + 1
            event.http.request_init.path = f"/item/{n}"
            await stream.send_message(event)


@dataclass
class Mesh:
    issuer: Issuer
    anchors_pem: bytes
    files: Path

    def leaf(self, identity: str) -> tuple[bytes, bytes]:
        key = generate_private_key()
        issued = self.issuer.sign_leaf(
            key.public_key(), identity, now=dt.datetime.now(dt.UTC), lifetime=dt.timedelta(hours=1)
        )
        chain = [issued.certificate] + [
            x509.load_der_x509_certificate(d) for d in issued.intermediates_der
        ]
        return certificates_to_pem(chain), private_key_to_pem(key)


@dataclass
class FixedCredentials:
    value: TapCredentials

    async def current(self) -> TapCredentials:
        return self.value


class RecordingAuthenticator(Authenticator):
    """The real delegated authentication and SubjectAccessReview, remembering who asked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authorized: list[Subject] = []

    async def authorize(self, subject: Subject, target: TapPath) -> None:
        await super().authorize(subject, target)
        self.authorized.append(subject)


@dataclass
class Setup:
    namespace: str
    tap_url: str
    serving_ca: bytes
    authenticator: RecordingAuthenticator
    tokens: dict[str, str] = field(default_factory=dict)


def _admin(cluster: KubeTestCluster, method: str, path: str, body: Any = None) -> Any:
    return asyncio.to_thread(cluster.admin().request, method, path, body)


def _kubectl(cluster: KubeTestCluster, *args: str) -> Any:
    argv = [str(locate_kubectl()), "--kubeconfig", str(cluster.kubeconfig), *args]
    return asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )


async def _api_service_available(cluster: KubeTestCluster) -> dict[str, Any]:
    deadline = time.monotonic() + AVAILABLE_WITHIN
    path = f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}"
    while True:
        obj = await _admin(cluster, "GET", path)
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        available = conditions.get("Available") or {}
        if available.get("status") == "True":
            return dict(obj)
        if time.monotonic() > deadline:
            raise AssertionError(f"the APIService never became Available: {available}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def setup(
    kube_cluster: KubeTestCluster, kube_namespace: str, tmp_path: Path
) -> AsyncIterator[Setup]:
    ns = kube_namespace
    material = generate_trust_anchor_and_issuer(
        trust_domain=TRUST_DOMAIN, control_plane_namespace="gossamer", now=dt.datetime.now(dt.UTC)
    )
    mesh = Mesh(
        Issuer(material.issuer.certificate, material.issuer.private_key),
        certificates_to_pem([material.trust_anchor.certificate]),
        tmp_path,
    )
    tap_name = tap_identity("gossamer", TRUST_DOMAIN)
    workload = f"web.{ns}.serviceaccount.identity.gossamer.{TRUST_DOMAIN}"
    chain, key = mesh.leaf(workload)
    (tmp_path / "proxy.crt").write_bytes(chain)
    (tmp_path / "proxy.key").write_bytes(key)
    proxy_tls = ssl.create_default_context(
        ssl.Purpose.CLIENT_AUTH, cadata=mesh.anchors_pem.decode()
    )
    proxy_tls.verify_mode = ssl.CERT_REQUIRED
    proxy_tls.load_cert_chain(tmp_path / "proxy.crt", tmp_path / "proxy.key")
    proxy_tls.set_alpn_protocols(["h2"])
    proxy = Server([FakeProxy(tap_name)])
    await proxy.start("127.0.0.1", 0, ssl=proxy_tls)
    proxy_port = proxy._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tap_chain, tap_key = mesh.leaf(tap_name)
    credentials = FixedCredentials(TapCredentials(tap_name, tap_chain, tap_key, mesh.anchors_pem))

    async def resolve(resource: Any, namespace: str) -> list[TapTarget]:
        return [TapTarget(ns, "web-0", "127.0.0.1", workload)]

    serving = generate_serving(viz_namespace=ns, now=dt.datetime.now(dt.UTC))
    (tmp_path / "tls.crt").write_bytes(serving.crt_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    async with KubeClient(KubeConfig.from_kubeconfig(kube_cluster.kubeconfig)) as kube:
        client_ca, front_proxy = await cluster_authentication(kube)
        assert front_proxy is not None, "the test apiserver publishes no front proxy"
        assert front_proxy.allowed_names == ("front-proxy-client",)
        authenticator = RecordingAuthenticator(
            kube, client_ca_pem=client_ca, front_proxy=front_proxy
        )
        service = TapService(authenticator, resolve, credentials, port=proxy_port)
        runner = web.AppRunner(service.app())
        await runner.setup()
        context = server_context(
            str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), client_ca, front_proxy.ca_pem
        )
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        labels = {"component": "tap"}
        try:
            await _admin(
                kube_cluster, "POST", f"/api/v1/namespaces/{ns}/services",
                {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "tap", "namespace": ns},
                 "spec": {"type": "ExternalName", "externalName": "localhost",
                          "ports": [{"name": "https", "port": port}]}},
            )  # fmt: skip
            await _admin(
                kube_cluster, "POST", "/apis/apiregistration.k8s.io/v1/apiservices",
                manifests.tap_api_service(ns, labels, serving.ca_pem, port=port),
            )  # fmt: skip
            setup = Setup(ns, f"https://127.0.0.1:{port}", serving.ca_pem, authenticator)
            admin_role = next(
                o for o in manifests.render(namespace=ns, control_plane_namespace="gossamer")
                if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("-tap-admin")
            )  # fmt: skip
            admin_role["metadata"] = {"name": f"{ns}-tap-admin"}
            await _admin(
                kube_cluster, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", admin_role
            )
            for account in ("tapper", "nobody"):
                await _admin(
                    kube_cluster, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
                )  # fmt: skip
                review = await _admin(
                    kube_cluster, "POST",
                    f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token",
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": 600}},
                )  # fmt: skip
                setup.tokens[account] = review["status"]["token"]
            await _admin(
                kube_cluster, "POST",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "tapper-taps"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": f"{ns}-tap-admin"},
                 "subjects": [{"kind": "ServiceAccount", "name": "tapper", "namespace": ns}]},
            )  # fmt: skip
            yield setup
        finally:
            for path in (
                f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}",
                f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{ns}-tap-admin",
            ):
                try:
                    await _admin(kube_cluster, "DELETE", path)
                except KubeApiError as exc:
                    if not exc.not_found:
                        raise
            await runner.cleanup()
            proxy.close()
            await proxy.wait_closed()


async def _post(
    url: str,
    ca_pem: bytes,
    *,
    server_name: str | None = None,
    token: str | None = None,
    cert: tuple[Path, Path] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if cert is not None:
        context.load_cert_chain(*cert)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = api.TapQuery(max_rps=0, seconds=20, max_events=3).body()
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), timeout=timeout) as http,
        http.post(url, data=body, headers=sent, server_hostname=server_name) as response,
    ):
        return response.status, await response.text()


async def test_the_tap_api_is_served_through_the_apiserver(
    kube_cluster: KubeTestCluster, setup: Setup
) -> None:
    ns = setup.namespace
    await _api_service_available(kube_cluster)
    # Discovery through the aggregator (what `kubectl api-resources` reads).
    listed = await _kubectl(kube_cluster, "get", "--raw", "/apis/tap.linkerd.io/v1alpha1")
    assert listed.returncode == 0, listed.stderr
    resources = {r["name"]: r for r in json.loads(listed.stdout)["resources"]}
    assert resources["deployments/tap"]["verbs"] == ["watch"]

    path = f"/apis/tap.linkerd.io/v1alpha1/watch/namespaces/{ns}/deployments/web/tap"
    ca = kube_cluster.ca_file.read_bytes()
    status, text = await _post(kube_cluster.server + path, ca, token=setup.tokens["tapper"])
    assert status == 200, text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len([line for line in lines if "event" in line]) == 3, text
    assert lines[-1] == {"end": "max-events", "errors": []}
    subject = setup.authenticator.authorized[-1]
    assert subject.user == f"system:serviceaccount:{ns}:tapper"
    assert "system:serviceaccounts" in subject.groups

    # Without tap-admin: the apiserver refuses before the tap service is asked.
    asked = len(setup.authenticator.authorized)
    status, text = await _post(kube_cluster.server + path, ca, token=setup.tokens["nobody"])
    assert status == 403, text
    assert len(setup.authenticator.authorized) == asked


async def test_the_tap_service_trusts_remote_user_headers_only_from_the_front_proxy(
    kube_cluster: KubeTestCluster, setup: Setup
) -> None:
    ns = setup.namespace
    url = setup.tap_url + f"/apis/tap.linkerd.io/v1alpha1/watch/namespaces/{ns}/deployments/web/tap"
    name = f"tap.{ns}.svc"
    tapper = {"X-Remote-User": f"system:serviceaccount:{ns}:tapper"}
    forged = {"X-Remote-User": "someone", "X-Remote-Group": "system:masters"}
    # Forged headers, no front-proxy certificate: not a user at all.
    status, _ = await _post(url, setup.serving_ca, server_name=name, headers=forged)
    assert status == 401
    # A token and forged headers: the token's user, refused by the real review.
    status, _ = await _post(
        url, setup.serving_ca, server_name=name, headers=forged, token=setup.tokens["nobody"]
    )
    assert status == 403
    # The apiserver's own front-proxy certificate: the headers name the user, and the
    # service still asks the apiserver whether that user may tap.
    pki = PKIFiles(kube_cluster.state_dir / "pki")
    proxy_cert = (pki.front_proxy_client_cert, pki.front_proxy_client_key)
    status, text = await _post(
        url, setup.serving_ca, server_name=name, headers=tapper, cert=proxy_cert
    )
    assert status == 200, text
    nobody = {"X-Remote-User": f"system:serviceaccount:{ns}:nobody"}
    status, _ = await _post(
        url, setup.serving_ca, server_name=name, headers=nobody, cert=proxy_cert
    )
    assert status == 403
    # A user's client certificate (the admin's, from the cluster CA) is that user: its
    # forged headers are ignored.
    admin = (pki.admin_cert, pki.admin_key)
    status, text = await _post(url, setup.serving_ca, server_name=name, headers=forged, cert=admin)
    assert status == 200, text
    assert setup.authenticator.authorized[-1].user == "gossamer-admin"
