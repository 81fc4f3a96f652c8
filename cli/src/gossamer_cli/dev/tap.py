"""Local mode's viz tap service: ``python -m gossamer_cli.viz.tap_service`` as a process in the
node namespace, on its loopback (``https://127.0.0.1:8089``), where the pod addresses are
reachable. Its serving certificate and CA are written under the state directory (the CA is
what ``gossamer viz tap`` and the dashboard trust it by); its tap certificate is signed by
the local issuer in memory."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ssl
import sys
from pathlib import Path

import structlog
from cryptography import x509

from gossamer_cli.dev.service_process import start_until_ready, stop_process_group

log = structlog.get_logger("gossamer.dev.tap")

HOST = "127.0.0.1"
PORT = 8089  # Linkerd's tap port
URL = f"https://{HOST}:{PORT}"


def tap_ready(url: str, ca_file: Path, server_name: str, timeout: float = 2.0) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False  # the name is checked below, against the Service name
    try:
        import http.client

        host, _, port = url.removeprefix("https://").rpartition(":")
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=context)
        try:
            conn.connect()
            sock = conn.sock
            assert isinstance(sock, ssl.SSLSocket)
            der = sock.getpeercert(binary_form=True)
            if not der:
                return False
            san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
            names = san.value.get_values_for_type(x509.DNSName)
            if server_name not in names:
                return False
            conn.request("GET", "/ready")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, ssl.SSLError, ValueError, x509.ExtensionNotFound):
        return False


class LocalTapService:
    def __init__(self, state_dir: Path, mesh_state_dir: Path, kubeconfig: Path) -> None:
        self.state_dir = state_dir
        self.mesh_state_dir = mesh_state_dir
        self.kubeconfig = kubeconfig
        self.log_file = state_dir / "tap.log"
        self.ca_file = state_dir / "ca.crt"
        self.url = URL
        self._proc: asyncio.subprocess.Process | None = None

    def write_certificates(self, now: dt.datetime) -> None:
        from gossamer_cli.private_files import write_private_file
        from gossamer_cli.viz.tap_identity import VIZ_NAMESPACE
        from gossamer_cli.viz.tap_service.serving import generate_serving

        pems = generate_serving(viz_namespace=VIZ_NAMESPACE, now=now)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(pems.ca_pem)
        (self.state_dir / "tls.crt").write_bytes(pems.crt_pem)
        write_private_file(self.state_dir / "tls.key", pems.key_pem)

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "gossamer_cli.viz.tap_service",
            "--addr", f"{HOST}:{PORT}",
            "--tls-cert", str(self.state_dir / "tls.crt"),
            "--tls-key", str(self.state_dir / "tls.key"),
            "--kubeconfig", str(self.kubeconfig),
            "--local-state-dir", str(self.mesh_state_dir),
        ]  # fmt: skip

    async def start(self, limit: float = 60.0) -> None:
        from gossamer_cli.viz.tap_identity import VIZ_NAMESPACE
        from gossamer_cli.viz.tap_service.client import service_name

        self.write_certificates(dt.datetime.now(dt.UTC))
        name = service_name(VIZ_NAMESPACE)
        self._proc = await start_until_ready(
            self.argv(),
            log_file=self.log_file,
            ready=functools.partial(tap_ready, self.url, self.ca_file, name),
            what="viz tap service",
            limit=limit,
        )
        log.info("viz tap service is up", url=self.url)

    async def stop(self, grace: float = 10.0) -> None:
        if self._proc is not None:
            await stop_process_group(self._proc, grace)
