"""grpclib stubs (``<name>_grpc.py``): grpcio-free, complete, exact paths, and interoperable.

The proxy's control-plane clients use these so that a sidecar never loads grpcio's C core;
the control-plane servers stay on grpcio (``<name>_pb2_grpc.py``). Both are generated from the
same protos by ``generate.py``, whose ``--check`` covers both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from gossamer_api import grpc_paths
from gossamer_api.proxy import (
    destination_grpc,
    destination_pb2,
    destination_pb2_grpc,
    identity_grpc,
    inbound_grpc,
    outbound_grpc,
    tap_grpc,
)
from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

API_DIR = Path(__file__).resolve().parents[1]
COMMITTED = API_DIR / "src" / "gossamer_api" / "proxy"


def test_every_proto_has_a_grpclib_module() -> None:
    protos = sorted(p.stem for p in (API_DIR / "proto" / "gossamer_api" / "proxy").glob("*.proto"))
    assert protos
    assert (
        sorted(
            p.name.removesuffix("_grpc.py")
            for p in COMMITTED.glob("*_grpc.py")
            if not p.name.endswith("_pb2_grpc.py")
        )
        == protos
    )


def test_grpclib_stubs_do_not_import_grpcio() -> None:
    names = sorted(
        p.stem for p in COMMITTED.glob("*_grpc.py") if not p.name.endswith("_pb2_grpc.py")
    )
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module('gossamer_api.proxy.' + name)\n"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))\n"
        "print('grpclib' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["[]", "True"], result.stdout + result.stderr


async def test_stub_methods_have_the_wire_paths_and_cardinalities() -> None:
    channel = Channel("127.0.0.1", 1)
    try:
        found: dict[str, Cardinality] = {}
        for stub in (
            destination_grpc.DestinationStub(channel),
            identity_grpc.IdentityStub(channel),
            inbound_grpc.InboundServerPoliciesStub(channel),
            outbound_grpc.OutboundPoliciesStub(channel),
            tap_grpc.TapStub(channel),
        ):
            for method in vars(stub).values():
                assert isinstance(method, UnaryUnaryMethod | UnaryStreamMethod)
                found[method.name] = method._cardinality
    finally:
        channel.close()
    assert set(found) == grpc_paths.ALL_METHOD_PATHS
    assert found[grpc_paths.IDENTITY_CERTIFY] is Cardinality.UNARY_UNARY
    for path in (
        grpc_paths.DESTINATION_GET,
        grpc_paths.DESTINATION_GET_PROFILE,
        grpc_paths.INBOUND_WATCH_PORT,
        grpc_paths.OUTBOUND_WATCH,
        grpc_paths.TAP_OBSERVE,
    ):
        assert found[path] is Cardinality.UNARY_STREAM, path


class _Destination(destination_pb2_grpc.DestinationServicer):
    async def Get(self, request: Any, context: Any) -> AsyncIterator[destination_pb2.Update]:
        yield destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=True))
        yield destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=False))

    async def GetProfile(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no profile for {request.path}")
        yield  # pragma: no cover - makes this an async generator


async def test_grpclib_client_interoperates_with_a_grpcio_server() -> None:
    server = grpc.aio.server()
    destination_pb2_grpc.add_DestinationServicer_to_server(_Destination(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = Channel("127.0.0.1", port)
    try:
        stub = destination_grpc.DestinationStub(channel)
        request = destination_pb2.GetDestination(path="web.ns.svc.cluster.local:80")
        updates = await stub.Get(request, timeout=10)
        assert [u.no_endpoints.exists for u in updates] == [True, False]
        with pytest.raises(GRPCError) as info:
            await stub.GetProfile(request, timeout=10)
        assert info.value.status is Status.INVALID_ARGUMENT
        assert info.value.message == "no profile for web.ns.svc.cluster.local:80"
    finally:
        channel.close()
        await server.stop(None)


def test_check_reports_a_stale_grpclib_stub(tmp_path: Path) -> None:
    stale = tmp_path / "gossamer_api" / "proxy"
    shutil.copytree(COMMITTED, stale, ignore=shutil.ignore_patterns("__pycache__"))
    (stale / "destination_grpc.py").write_text("# edited by hand\n")
    (stale / "identity_grpc.py").unlink()
    result = subprocess.run(
        [sys.executable, str(API_DIR / "generate.py"), "--check", "--output-root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "out of date: destination_grpc.py" in result.stderr
    assert "missing: identity_grpc.py" in result.stderr
    assert "destination_pb2_grpc.py" not in result.stderr
