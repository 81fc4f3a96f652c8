"""A multi-core proxy's renewed certificate reaches every worker, once, as the same identity."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from gossamer_proxy.cores import FrameDecoder
from gossamer_proxy.local_identity import LocalIdentity
from gossamer_proxy.mesh.tls_contexts import Credentials
from gossamer_proxy.multicore import Supervisor, credentials_from_wire

NAME = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"


def _credentials(serial: int, name: str = NAME) -> Credentials:
    return Credentials(
        identity=name,
        key_pem=b"-----BEGIN PRIVATE KEY-----\n%d\n" % serial,
        chain_pem=b"-----BEGIN CERTIFICATE-----\n%d\n" % serial,
        leaf_der=bytes([serial, 0, 255]),
        not_before=1000.0 * serial,
        not_after=1000.0 * serial + 86400,
    )


class _Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def _supervisor(identity: Any) -> Supervisor:
    admin = SimpleNamespace(ready=lambda: True, render_metrics=None)
    proxy: Any = SimpleNamespace(identity=identity, admin=admin, ready=True, tap_server=None)
    return Supervisor(proxy, cores=3)


def test_renewals_are_pushed_to_every_worker_once() -> None:
    parent_identity = SimpleNamespace(credentials=_credentials(1))
    supervisor = _supervisor(parent_identity)
    writers = []
    for worker in supervisor.workers:
        worker.writer = writer = _Writer()  # type: ignore[assignment]
        worker.pushed = parent_identity.credentials  # sent in the start message
        writers.append(writer)

    asyncio.run(supervisor._push_credentials())
    assert [w.data for w in writers] == [b"", b""]  # nothing new: nothing sent

    parent_identity.credentials = _credentials(2)
    asyncio.run(supervisor._push_credentials())
    asyncio.run(supervisor._push_credentials())  # the same renewal is not sent twice
    for writer in writers:
        (message,) = FrameDecoder().feed(writer.data)
        assert message["type"] == "credentials"
        worker_identity = LocalIdentity(NAME, "anchors", pushed=True)
        worker_identity.install(credentials_from_wire(message))
        assert worker_identity.credentials == _credentials(2)
        assert worker_identity.ready


def test_a_worker_identity_refuses_credentials_for_another_name() -> None:
    identity = LocalIdentity(NAME, "anchors", pushed=True)
    assert not identity.ready
    with pytest.raises(ValueError, match="not"):
        identity.install(_credentials(1, name="other.ns.serviceaccount.identity.x.y"))
    assert identity.credentials is None


def test_only_a_worker_identity_takes_pushed_credentials() -> None:
    static = LocalIdentity(NAME, "anchors", static=_credentials(1))
    with pytest.raises(ValueError, match="worker"):
        static.install(_credentials(2))
    with pytest.raises(ValueError, match="parent"):
        LocalIdentity(NAME, "anchors", static=_credentials(1), pushed=True)


def test_a_supervisor_needs_two_cores() -> None:
    with pytest.raises(ValueError, match="two cores"):
        Supervisor(SimpleNamespace(), cores=1)  # type: ignore[arg-type]


def test_a_worker_that_cannot_be_started_stops_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    async def no_fds(self: Supervisor, worker: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Supervisor, "_start_worker", no_fds)
    reasons: list[str] = []
    supervisor = _supervisor(None)
    supervisor.proxy.shutdown_control = SimpleNamespace(request=reasons.append)
    asyncio.run(supervisor._spawn(supervisor.workers[0]))
    assert reasons == ["worker could not be started"]
    assert not supervisor.ready


def test_a_worker_answers_its_parent_and_stops_when_the_parent_goes() -> None:
    from gossamer_common.metrics import Registry
    from gossamer_proxy.cores import encode_frame
    from gossamer_proxy.multicore import credentials_to_wire
    from gossamer_proxy.worker import _serve_link

    async def scenario() -> tuple[list[dict[str, Any]], LocalIdentity, list[str]]:
        registry = Registry()
        registry.counter("request_total", "Requests.").inc()
        identity = LocalIdentity(NAME, "anchors", pushed=True)
        identity.install(_credentials(1))
        reasons: list[str] = []
        proxy: Any = SimpleNamespace(
            metrics=SimpleNamespace(registry=registry),
            identity=identity,
            shutdown_control=SimpleNamespace(request=reasons.append),
            taps=None,
        )
        reader = asyncio.StreamReader()
        reader.feed_data(encode_frame({"type": "metrics", "id": 7}))
        reader.feed_eof()
        writer: Any = _Writer()
        early = [{"type": "credentials", **credentials_to_wire(_credentials(2))}]
        await _serve_link(proxy, reader, writer, FrameDecoder(), early)
        return FrameDecoder().feed(writer.data), identity, reasons

    answers, identity, reasons = asyncio.run(scenario())
    assert identity.credentials == _credentials(2)  # read together with start, not dropped
    (answer,) = answers
    assert answer["type"] == "metrics"
    assert answer["id"] == 7
    assert "request_total 1" in answer["text"]
    assert reasons == ["parent proxy link closed"]


def test_a_worker_leaves_the_tap_server_and_admin_to_its_parent() -> None:
    from gossamer_common.settings import load
    from gossamer_proxy.app import Proxy
    from gossamer_proxy.config import ProxySettings

    settings = load(
        ProxySettings,
        [],
        {"LINKERD2_PROXY_TAP_SVC_NAME": "tap.linkerd-viz.serviceaccount.identity.gossamer.local"},
    )
    identity = LocalIdentity(NAME, "anchors", pushed=True)
    worker = Proxy(settings, worker=True, worker_identity=identity, process_metrics=False)
    assert worker.tap_server is None  # binding the control port would fail in every worker
    assert worker.reuse_port
    assert worker.identity is identity
    assert b"proxy_build_info" not in worker.metrics.registry.render()
