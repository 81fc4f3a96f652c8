"""The sidecar keeps heavy packages out of its process, and checks credentials without them.

``cryptography`` (~13 MB resident: a second OpenSSL and a Rust module) and ``grpcio`` must not
be imported by the proxy: the key and CSR come from a short-lived helper process, and the
chain checks use the stdlib :mod:`ssl`. RE2 (~1.7 MB) loads only when a route has a regex.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gossamer_proxy.build_info import installed_version
from gossamer_proxy.mesh import credential_helper
from gossamer_proxy.mesh.credential_check import CredentialRejected, check_credentials
from gossamer_tls import (
    certificates_to_pem,
    check_csr,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    load_csr,
    load_private_key,
    private_key_to_pem,
)
from gossamer_tls.authority import IssuedCertificate, Issuer, TrustMaterial

WEB = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
HEAVY = ("cryptography", "grpc", "gossamer_tls", "re2")


def test_the_proxy_process_does_not_import_heavy_packages() -> None:
    code = (
        "import sys, gossamer_proxy.__main__, gossamer_proxy.app\n"
        "import gossamer_proxy.local_identity, gossamer_proxy.mesh.identity\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )


def _anchors_pem(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


def _issue(
    trust: TrustMaterial, name: str
) -> tuple[ec.EllipticCurvePrivateKey, IssuedCertificate, bytes]:
    key = generate_private_key()
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    issued = issuer.sign_leaf(key.public_key(), name, now=dt.datetime.now(dt.UTC))
    chain = certificates_to_pem([issued.certificate, trust.issuer.certificate])
    return key, issued, chain


def test_a_good_chain_and_key_give_credentials(trust: TrustMaterial) -> None:
    key, issued, chain = _issue(trust, WEB)
    credentials = check_credentials(WEB, private_key_to_pem(key), chain, _anchors_pem(trust))
    assert credentials.identity == WEB
    assert credentials.leaf_der == issued.leaf_der
    assert credentials.not_after == issued.certificate.not_valid_after_utc.timestamp()
    assert credentials.not_before == issued.certificate.not_valid_before_utc.timestamp()


def test_a_key_that_is_not_the_leafs_is_refused(trust: TrustMaterial) -> None:
    _, _, chain = _issue(trust, WEB)
    other = private_key_to_pem(generate_private_key())
    with pytest.raises(CredentialRejected, match="do not load together"):
        check_credentials(WEB, other, chain, _anchors_pem(trust))


def test_a_certificate_for_another_name_is_refused(trust: TrustMaterial) -> None:
    key, _, chain = _issue(trust, "emoji.emojivoto.serviceaccount.identity.gossamer.cluster.local")
    with pytest.raises(CredentialRejected, match="rejected: Hostname mismatch"):
        check_credentials(WEB, private_key_to_pem(key), chain, _anchors_pem(trust))


def test_a_chain_to_other_anchors_is_refused(trust: TrustMaterial) -> None:
    key, _, chain = _issue(trust, WEB)
    other = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )
    with pytest.raises(CredentialRejected, match="does not chain to the trust anchors"):
        check_credentials(WEB, private_key_to_pem(key), chain, _anchors_pem(other))


def test_the_helper_makes_a_p256_key_and_a_csr_for_the_name() -> None:
    key_pem, csr_der = asyncio.run(credential_helper.new_key_and_csr(WEB))
    key = load_private_key(key_pem)
    checked = check_csr(load_csr(csr_der, allow_pem=False), WEB)
    assert checked.public_key == key.public_key()


def test_the_data_path_uses_the_compiled_http2_codec_and_loads_it_on_first_use() -> None:
    code = (
        "import sys, gossamer_proxy.__main__, gossamer_proxy.app, gossamer_proxy.accept\n"
        "loaded_at_start = 'jh2' in sys.modules\n"
        "from gossamer_proxy.http2 import bridge\n"
        "print(loaded_at_start, bridge.h2.connection.H2Connection.__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "jh2.connection"], result.stdout


def test_the_compiled_codec_leaves_jh2s_pure_python_hpack_out() -> None:
    """jh2's pure-Python HPACK (0.7 MB with its Huffman tables) is never used beside the
    compiled one, so it is not loaded; header blocks still encode and decode."""
    code = (
        "import sys\n"
        "from gossamer_proxy.h2codec import h2, new_connection\n"
        "from gossamer_proxy.http2.bridge import _config\n"
        "client, server = new_connection(_config(True)), new_connection(_config(False))\n"
        "client.initiate_connection(); server.initiate_connection()\n"
        "server.receive_data(client.data_to_send()); client.receive_data(server.data_to_send())\n"
        "client.send_headers(1, [(b':method', b'GET'), (b':scheme', b'http'), (b':path', b'/x'),"
        " (b':authority', b'web.emojivoto.svc'), (b'user-agent', b'grpc-go/1.64.0')])\n"
        "events = server.receive_data(client.data_to_send())\n"
        "request = next(e for e in events if isinstance(e, h2.events.RequestReceived))\n"
        "print(dict(request.headers)[b':authority'].decode())\n"
        "print(sorted(m for m in sys.modules if 'huffman' in m or m == 'jh2.hpack.table'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split("\n")[:2] == ["web.emojivoto.svc", "[]"], result.stdout


# What a started sidecar must not hold: besides the heavy packages above, importlib.metadata
# (and the email/zipfile/csv it loads, ~3 MB) for the one version string build_info reads;
# and without a control plane (static identity, fixed targets) the gRPC client and protobuf
# (grpclib, h2, multidict, protobuf's runtime: ~8 MB), which only its clients need.
NOT_AFTER_START = (
    *HEAVY,
    "importlib.metadata",
    "email",
    "zipfile",
    "csv",
    "google.protobuf",
    "grpclib",
    "h2",
    "multidict",
)

# Runs the real entry point (settings, logging, Proxy.start(), listeners, admin); when start-up
# is over (the moment the proxy freezes its start-up objects) it reports what is loaded and
# asks itself to stop, the way a kubelet would.
_STARTED_PROBE = """
import os, signal, sys
import gossamer_proxy.__main__ as entry

not_after_start = {names!r}
freeze = entry.freeze_startup_objects

def started():
    freeze()
    loaded = sorted(n for n in not_after_start if n in sys.modules)
    print("loaded-after-start", loaded, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

entry.freeze_startup_objects = started
sys.argv = ["gossamer-proxy"]
entry.main()
"""


def _modules_after_start(env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _STARTED_PROBE.format(names=NOT_AFTER_START)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "1s",
            "LINKERD2_PROXY_LOG": "warn",
            **env,
        },
        check=False,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("loaded-after-start")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines, result.stdout + result.stderr
    loaded: list[str] = ast.literal_eval(lines[0].removeprefix("loaded-after-start "))
    return loaded


def test_a_started_plaintext_proxy_holds_no_start_up_only_packages() -> None:
    assert _modules_after_start({}) == []


def test_a_started_static_mtls_proxy_holds_no_start_up_only_packages(
    trust: TrustMaterial, tmp_path: Path
) -> None:
    key, _, chain = _issue(trust, WEB)
    (tmp_path / "key.pem").write_bytes(private_key_to_pem(key))
    (tmp_path / "chain.pem").write_bytes(chain)
    env = {
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(tmp_path / "chain.pem"),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(tmp_path / "key.pem"),
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": _anchors_pem(trust),
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": WEB,
        "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": "127.0.0.1:4143",
        "GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY": WEB,
    }
    assert _modules_after_start(env) == []


def test_the_version_comes_from_the_dist_info_metadata(tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "gossamer_proxy_extra-9.9.dist-info").mkdir(parents=True)
    (other / "gossamer_proxy_extra-9.9.dist-info" / "METADATA").write_text("Version: 9.9\n")
    site = tmp_path / "site"
    info = site / "gossamer_proxy-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.4\nName: gossamer-proxy\nVersion: 1.2.3\n\nVersion: 0.0.0 (body)\n"
    )
    missing = str(tmp_path / "nowhere")
    assert installed_version(path=[missing, str(other), str(site)]) == "1.2.3"
    assert installed_version(path=[missing, str(other)]) == "unknown"


def test_the_version_agrees_with_importlib_metadata() -> None:
    import importlib.metadata

    assert installed_version() == importlib.metadata.version("gossamer-proxy")
