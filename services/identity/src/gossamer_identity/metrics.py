"""The identity service's metrics: issuance, refusals by reason, and the issuer's expiry.

``issuer_cert_ttl_seconds`` keeps Linkerd's name so existing dashboards and alerts work; the
``identity_*`` families are Gossamer's own.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from gossamer_common.metrics import Counter, Family, Gauge, Registry

from gossamer_identity.certify import Reason, Refusal, Status


class IdentityMetrics:
    """Families registered once; the servicer calls the ``record_*`` methods."""

    def __init__(self, registry: Registry, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._wall_clock = wall_clock
        self.issued: Counter = registry.counter(
            "identity_certificates_issued_total", "Leaf certificates issued by Certify."
        )
        self.refusals: Family[Counter] = registry.counter_family(
            "identity_certify_refusals_total",
            "Certify requests refused, by reason and gRPC status code.",
            ("reason", "code"),
        )
        self.issuer_expiry: Gauge = registry.gauge(
            "identity_issuer_expiry_timestamp_seconds",
            "Unix time after which the current issuer can no longer sign certificates.",
        )
        self.issuer_reloads: Family[Counter] = registry.counter_family(
            "identity_issuer_reloads_total",
            "Issuer material loads after start-up, by result.",
            ("result",),
        )
        registry.gauge_func(
            "issuer_cert_ttl_seconds",
            "Seconds until the issuer certificate expires (Linkerd's name).",
            lambda: max(self.issuer_expiry.value - self._wall_clock(), 0.0),
        )
        # Series that exist from the start so that rate() works before the first event.
        for reason in Reason:
            self.refusals.labels(reason.value, _status_for(reason).name)
        for result in ("success", "failure"):
            self.issuer_reloads.labels(result)

    def record_issued(self) -> None:
        self.issued.value += 1

    def record_refusal(self, refusal: Refusal) -> None:
        self.refusals.labels(refusal.reason.value, refusal.status.name).value += 1

    def record_issuer(self, expiry: dt.datetime) -> None:
        self.issuer_expiry.value = expiry.timestamp()

    def record_reload(self, *, ok: bool) -> None:
        self.issuer_reloads.labels("success" if ok else "failure").value += 1


def _status_for(reason: Reason) -> Status:
    """The status each reason is normally reported with (used only to pre-create series)."""
    return {
        Reason.ISSUER_NOT_READY: Status.UNAVAILABLE,
        Reason.ISSUER_INVALID: Status.UNKNOWN,
        Reason.OVERSIZED: Status.RESOURCE_EXHAUSTED,
        Reason.UNSUPPORTED_KEY: Status.FAILED_PRECONDITION,
        Reason.CSR_NAME_MISMATCH: Status.FAILED_PRECONDITION,
        Reason.UNAUTHENTICATED: Status.FAILED_PRECONDITION,
        Reason.INVALID_USERNAME: Status.FAILED_PRECONDITION,
        Reason.IDENTITY_MISMATCH: Status.FAILED_PRECONDITION,
        Reason.TOKEN_REVIEW_FAILED: Status.INTERNAL,
    }.get(reason, Status.INVALID_ARGUMENT)
