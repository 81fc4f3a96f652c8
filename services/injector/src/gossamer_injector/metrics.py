"""Every metric the injector exports, declared in one place."""

from __future__ import annotations

from gossamer_common.metrics import Counter, Family, Histogram, Registry

REVIEWS = "gossamer_injector_reviews_total"
REVIEW_LATENCY = "gossamer_injector_review_duration_ms"
BAD_REVIEWS = "gossamer_injector_bad_reviews_total"


class InjectorMetrics:
    def __init__(self, registry: Registry) -> None:
        self.reviews: Family[Counter] = registry.counter_family(
            REVIEWS, "AdmissionReviews answered, by object kind and result.", ("kind", "result")
        )
        self.latency: Histogram = registry.histogram(
            REVIEW_LATENCY, "Time to answer one AdmissionReview, in milliseconds."
        )
        self.bad_reviews: Counter = registry.counter(
            BAD_REVIEWS, "Requests that were not a valid AdmissionReview (answered 400)."
        )
