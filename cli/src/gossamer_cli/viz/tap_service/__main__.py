"""``python -m gossamer_cli.viz.tap_service``: run the viz tap service (the ``tap`` component)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gossamer_cli.viz.tap_identity import VIZ_NAMESPACE, tap_identity
from gossamer_cli.viz.web.__main__ import split_addr

DEFAULT_ADDR = "0.0.0.0:8089"  # Linkerd's tap APIService port
TOKEN_FILE = "/var/run/secrets/tokens/gossamer-identity-token"  # noqa: S105 - a path


@click.command()
@click.option("--addr", default=DEFAULT_ADDR, show_default=True, help="Where to listen (HTTPS).")
@click.option("--tls-cert", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--client-ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
    help="CA of client certificates (default: the cluster's, from "
    "kube-system/extension-apiserver-authentication).",
)  # fmt: skip
@click.option("--kubeconfig", default=None, help="Kubeconfig (in a cluster: the pod's account).")
@click.option("--control-plane-namespace", default="gossamer", show_default=True)
@click.option("--viz-namespace", default=VIZ_NAMESPACE, show_default=True)
@click.option("--trust-domain", default="cluster.local", show_default=True)
@click.option(
    "--local-state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Local mode: sign the tap certificate with this state directory's issuer.",
)  # fmt: skip
@click.option("--identity-addr", default=None, help="The identity service (HOST:PORT).")
@click.option("--trust-anchors-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--trust-anchors-configmap", default=None,
    help="NAMESPACE/NAME of the ConfigMap with the trust anchors (key ca-bundle.crt).",
)  # fmt: skip
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=TOKEN_FILE)
@click.option("--proxy-tap-port", type=int, default=4190, show_default=True, hidden=True)
@click.option("--log-level", default="info", show_default=True)
def main(
    addr: str,
    tls_cert: str,
    tls_key: str,
    client_ca_file: str | None,
    kubeconfig: str | None,
    control_plane_namespace: str,
    viz_namespace: str,
    trust_domain: str,
    local_state_dir: Path | None,
    identity_addr: str | None,
    trust_anchors_file: Path | None,
    trust_anchors_configmap: str | None,
    token_file: Path,
    proxy_tap_port: int,
    log_level: str,
) -> None:
    """Serve the viz tap service."""
    from gossamer_common.logging import configure_logging

    from gossamer_cli.viz.tap_service.credentials import (
        CertifyCredentials,
        CredentialSource,
        LocalIssuerCredentials,
    )

    configure_logging(log_level, component="viz-tap")
    host, port = split_addr(addr)
    identity = tap_identity(control_plane_namespace, trust_domain, viz_namespace)
    credentials: CredentialSource | Callable[[bytes], CredentialSource]
    if local_state_dir is not None:
        credentials = LocalIssuerCredentials(local_state_dir, identity)
    else:
        if identity_addr is None or (trust_anchors_file is None) == (
            trust_anchors_configmap is None
        ):
            raise click.UsageError(
                "give --identity-addr and one of --trust-anchors-file and "
                "--trust-anchors-configmap (or --local-state-dir)"
            )
        identity_name = (
            f"identity.{control_plane_namespace}.serviceaccount.identity."
            f"{control_plane_namespace}.{trust_domain}"
        )
        addr = identity_addr

        def certify(anchors: bytes) -> CredentialSource:
            return CertifyCredentials(
                identity=identity,
                identity_addr=addr,
                identity_name=identity_name,
                trust_anchors_pem=anchors,
                token_file=token_file,
            )

        try:
            if trust_anchors_file is not None:
                credentials = certify(trust_anchors_file.read_bytes())
            else:
                credentials = certify
        except (OSError, ValueError) as exc:
            raise click.UsageError(str(exc)) from exc
    if trust_anchors_configmap is not None and trust_anchors_configmap.count("/") != 1:
        raise click.BadParameter("want NAMESPACE/NAME", param_hint="--trust-anchors-configmap")
    options = {
        "control_plane_namespace": control_plane_namespace,
        "trust_domain": trust_domain,
        "proxy_tap_port": proxy_tap_port,
        "trust_anchors_configmap": trust_anchors_configmap,
    }
    sys.exit(
        asyncio.run(
            _run(host, port, tls_cert, tls_key, client_ca_file, kubeconfig, credentials, options)
        )
    )


async def _run(
    host: str,
    port: int,
    tls_cert: str,
    tls_key: str,
    client_ca_file: str | None,
    kubeconfig: str | None,
    credentials: Any,
    options: dict[str, Any],
) -> int:
    import structlog
    from aiohttp import web
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.resources import CONFIGMAPS

    from gossamer_cli.viz.tap_service.auth import Authenticator, cluster_authentication
    from gossamer_cli.viz.tap_service.resolve import pod_resolver
    from gossamer_cli.viz.tap_service.server import TapService, server_context

    log = structlog.get_logger("gossamer.viz.tap")
    async with KubeClient(KubeConfig.load(kubeconfig)) as kube:
        # The client CA names users by certificate; the front proxy (the apiserver, through
        # the APIService) names them in headers. A given --client-ca-file runs no front proxy.
        if client_ca_file is not None:
            client_ca = await asyncio.to_thread(Path(client_ca_file).read_text)
            front_proxy = None
        else:
            client_ca, front_proxy = await cluster_authentication(kube)
        if front_proxy is None:
            log.info("no front proxy: callers reach the tap service directly only")
        if callable(credentials):
            namespace, name = options["trust_anchors_configmap"].split("/")
            config_map = await kube.get(CONFIGMAPS, name, namespace=namespace)
            anchors = (config_map.get("data") or {}).get("ca-bundle.crt") or ""
            if "-----BEGIN CERTIFICATE-----" not in anchors:
                raise SystemExit(f"{namespace}/{name} has no ca-bundle.crt with certificates")
            credentials = credentials(anchors.encode())
        await credentials.current()  # fail at start, not on the first tap
        service = TapService(
            Authenticator(kube, client_ca_pem=client_ca, front_proxy=front_proxy),
            pod_resolver(
                kube,
                control_plane_namespace=options["control_plane_namespace"],
                trust_domain=options["trust_domain"],
            ),
            credentials,
            port=options["proxy_tap_port"],
        )
        runner = web.AppRunner(service.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner,
            host,
            port,
            ssl_context=server_context(
                tls_cert, tls_key, client_ca, front_proxy.ca_pem if front_proxy else None
            ),
        )
        await site.start()
        log.info("tap service listening", address=f"{host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    return 0


if __name__ == "__main__":
    main()
