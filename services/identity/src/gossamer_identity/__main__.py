"""``python -m gossamer_identity``: wire settings, issuer, kube client, gRPC and admin together.

Refuses to start (exit 1, one clear line on stderr and in the log) when the issuer material is
unusable or the service may not create TokenReviews; exits 2 on bad settings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

import structlog
from gossamer_common.admin import AdminServer
from gossamer_common.logging import configure_logging
from gossamer_common.metrics import Registry
from gossamer_common.process_metrics import register_process_metrics
from gossamer_common.runtime import run
from gossamer_common.settings import describe, load_or_exit
from gossamer_common.shutdown import Shutdown
from gossamer_kube.client import KubeClient, KubeConfig

from gossamer_identity.certify import Certifier, CertifyConfig
from gossamer_identity.issuer import IssuerError, IssuerFiles, IssuerReloader, LoadedIssuer, utc_now
from gossamer_identity.metrics import IdentityMetrics
from gossamer_identity.server import IdentityService, create_server
from gossamer_identity.settings import IdentitySettings

PROG = "python -m gossamer_identity"
_log = structlog.get_logger("gossamer.identity")


class StartupError(Exception):
    """The service cannot run as configured; the message is what the operator must fix."""


async def check_token_review_permission(client: KubeClient) -> None:
    """SelfSubjectAccessReview for ``create tokenreviews``, as Linkerd checks at start-up."""
    review = await client.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "group": "authentication.k8s.io",
                    "resource": "tokenreviews",
                    "verb": "create",
                }
            },
        },
    )
    if not (review.get("status") or {}).get("allowed"):
        raise StartupError(
            "this service account may not create tokenreviews.authentication.k8s.io; "
            "bind it to the system:auth-delegator ClusterRole"
        )


async def serve(settings: IdentitySettings) -> int:
    registry = Registry()
    register_process_metrics(registry)
    metrics = IdentityMetrics(registry)

    def installed(loaded: LoadedIssuer) -> None:
        metrics.record_issuer(loaded.expiry)

    def reloaded(loaded: LoadedIssuer) -> None:
        installed(loaded)
        metrics.record_reload(ok=True)

    files = IssuerFiles(issuer_dir=settings.issuer_dir, trust_anchors=settings.trust_anchors_path)
    try:
        reloader = IssuerReloader.start(
            files, on_change=reloaded, on_failure=lambda _msg: metrics.record_reload(ok=False)
        )
    except IssuerError as exc:
        raise StartupError(f"cannot use the issuer: {exc}") from None
    installed(reloader.current)
    _log.info(
        "issuer_loaded",
        subject=reloader.current.subject,
        expiry=reloader.current.expiry.isoformat(),
    )

    config = KubeConfig.load(settings.kubeconfig)
    async with KubeClient(config) as kube:
        if settings.check_token_review_permission:
            await check_token_review_permission(kube)
        certifier = Certifier(
            CertifyConfig(
                control_plane_namespace=settings.controller_namespace,
                trust_domain=settings.trust_domain,
                lifetime=dt.timedelta(seconds=settings.issuance_lifetime),
                clock_skew=dt.timedelta(seconds=settings.clock_skew_allowance),
                legacy_audience_fallback=settings.legacy_token_audience_fallback,
            )
        )

        service = IdentityService(
            certifier,
            issuer=lambda: reloader.issuer,
            reviewer=kube,
            metrics=metrics,
            review_timeout=settings.token_review_timeout,
        )
        server = create_server(service)
        try:
            grpc_port = await server.listen(settings.grpc_addr.host, settings.grpc_addr.port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {settings.grpc_addr}: {exc.strerror or exc}"
            ) from None
        admin = AdminServer(registry=registry, ready=lambda: utc_now() < reloader.current.expiry)
        await admin.start(settings.admin_addr.host, settings.admin_addr.port)
        shutdown = Shutdown(grace=settings.shutdown_grace_period)
        shutdown.install_signal_handlers()
        poller = asyncio.create_task(reloader.run(settings.issuer_poll_interval))
        _log.info(
            "identity_serving",
            grpc_addr=f"{settings.grpc_addr.host}:{grpc_port}",
            admin_addr=f"{settings.admin_addr.host}:{admin.port}",
        )
        try:
            await shutdown.wait()
        finally:
            poller.cancel()
            await server.stop(settings.shutdown_grace_period)
            await admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = load_or_exit(
        IdentitySettings,
        prog=PROG,
        description="Gossamer identity: issues mesh certificates to proxies (Certify).",
        argv=argv,
    )
    configure_logging(settings.log_level, component="identity")
    _log.info("identity_starting", **describe(settings))
    try:
        return run(serve(settings))
    except StartupError as exc:
        _log.error("identity_start_failed", error=str(exc))
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
