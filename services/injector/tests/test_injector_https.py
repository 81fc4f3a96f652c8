"""The webhook over real TLS on loopback: answers, 400s, 413s and certificate rotation."""

from __future__ import annotations

import base64
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from gossamer_common.metrics import Registry
from gossamer_inject import MeshValues
from gossamer_injector.metrics import InjectorMetrics
from gossamer_injector.review import Context, Lookups
from gossamer_injector.server import Injector, serve
from gossamer_injector.tls_reload import ReloadingServerTLS
from gossamer_kube.testing.pki import IssuedCert, issue_cert, make_ca


class StaticResolver:
    async def resolve(self, lookups: Lookups) -> Context:
        return Context({"linkerd.io/inject": "enabled"} if lookups.namespace == "meshed" else {})


@dataclass
class Webhook:
    url: str
    tls: ReloadingServerTLS
    registry: Registry
    cert_file: Path
    key_file: Path


def write_pair(cert: IssuedCert, cert_file: Path, key_file: Path) -> None:
    key_file.write_bytes(cert.key_pem)
    cert_file.write_bytes(cert.cert_pem)


def client_ctx(ca: IssuedCert) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


CA = make_ca("injector-test-ca")


@pytest_asyncio.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[Webhook]:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_pair(
        issue_cert(CA, "injector", ip_addresses=("127.0.0.1",), server=True), cert_file, key_file
    )
    tls = ReloadingServerTLS(cert_file, key_file)
    registry = Registry()
    injector = Injector(
        mesh=MeshValues(trust_anchors_pem="pem"),
        created_by="test",
        resolver=StaticResolver(),
        metrics=InjectorMetrics(registry),
    )
    runner, port = await serve(injector, "127.0.0.1", 0, tls.context)
    try:
        yield Webhook(f"https://127.0.0.1:{port}", tls, registry, cert_file, key_file)
    finally:
        await runner.cleanup()


def pod_review(namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "abc",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": {
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }


async def post(url: str, ca: IssuedCert, data: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=data, ssl=client_ctx(ca), headers={"content-type": "application/json"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_injects_over_https(webhook: Webhook) -> None:
    status, body = await post(
        webhook.url + "/inject", CA, json.dumps(pod_review("meshed")).encode()
    )
    assert status == 200
    response = body["response"]
    assert isinstance(response, dict)
    assert response["uid"] == "abc"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert any(op["path"] == "/spec/initContainers" for op in ops)
    status, body = await post(webhook.url + "/", CA, json.dumps(pod_review("plain")).encode())
    assert status == 200
    assert "patch" not in body["response"]
    rendered = webhook.registry.render().decode()
    assert 'gossamer_injector_reviews_total{kind="Pod",result="injected"} 1' in rendered


async def test_garbage_gets_400_and_server_lives(webhook: Webhook) -> None:
    for garbage in (b"", b"{", b"\x00\xff", b'{"kind":"AdmissionReview"}'):
        status, body = await post(webhook.url + "/inject", CA, garbage)
        assert status == 400
        assert body["kind"] == "Status"
        assert body["code"] == 400
    status, _ = await post(webhook.url + "/inject", CA, json.dumps(pod_review("meshed")).encode())
    assert status == 200
    assert "gossamer_injector_bad_reviews_total 4" in webhook.registry.render().decode()


async def test_oversized_body_gets_413(webhook: Webhook) -> None:
    status, body = await post(webhook.url + "/inject", CA, b" " * (9 * 1024 * 1024))
    assert status == 413
    assert body["code"] == 413


async def test_certificate_rotation(webhook: Webhook) -> None:
    new_ca = make_ca("rotated-ca")
    assert not webhook.tls.reload_if_changed()
    # A half-rotated pair (new cert, old key) is refused; the old certificate keeps serving.
    webhook.cert_file.write_bytes(
        issue_cert(new_ca, "injector", ip_addresses=("127.0.0.1",), server=True).cert_pem
    )
    os.utime(webhook.cert_file, ns=(1, 1))
    assert not webhook.tls.reload_if_changed()
    status, _ = await post(webhook.url + "/inject", CA, json.dumps(pod_review("x")).encode())
    assert status == 200
    write_pair(
        issue_cert(new_ca, "injector", ip_addresses=("127.0.0.1",), server=True),
        webhook.cert_file,
        webhook.key_file,
    )
    assert webhook.tls.reload_if_changed()
    status, _ = await post(webhook.url + "/inject", new_ca, json.dumps(pod_review("x")).encode())
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(webhook.url + "/inject", CA, json.dumps(pod_review("x")).encode())
