"""Every metric the destination service exports, declared in one place."""

from __future__ import annotations

from collections.abc import Iterable

from gossamer_common.metrics import Counter, Family, Gauge, MetricSnapshot, Registry, Sample

from gossamer_destination.cluster import Cluster


class DestinationMetrics:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.invalid: Family[Counter] = registry.counter_family(
            "gossamer_destination_invalid_resources_total",
            "Resources (or parts of them) skipped because they cannot be translated",
            ("kind",),
        )
        self.streams: Family[Gauge] = registry.gauge_family(
            "gossamer_destination_streams", "Open streams by RPC", ("rpc",)
        )
        self.stream_errors: Family[Counter] = registry.counter_family(
            "gossamer_destination_stream_errors_total",
            "Streams refused or aborted, by RPC and gRPC status",
            ("rpc", "code"),
        )
        self.route_status_writes: Family[Counter] = registry.counter_family(
            "gossamer_destination_route_status_writes_total",
            "Route status patches, by result (written, conflict, error)",
            ("result",),
        )

    def watch_cluster(self, cluster: Cluster) -> None:
        cluster.on_invalid = lambda kind, _msg: self.invalid.labels(kind).inc()

        def collect() -> Iterable[MetricSnapshot]:
            infs = cluster.informers.items()
            yield MetricSnapshot(
                "gossamer_informer_objects",
                "Objects held by each informer cache",
                "gauge",
                tuple(Sample(len(i.store), (("kind", k),)) for k, i in infs),
            )
            for name, attr, help_ in (
                ("gossamer_informer_events_total", "events", "Watch events applied"),
                ("gossamer_informer_relists_total", "relists_gone", "Relists after 410 Gone"),
                ("gossamer_informer_errors_total", "errors", "List/watch failures (backed off)"),
                ("gossamer_informer_bookmarks_total", "bookmarks", "Watch bookmarks received"),
            ):
                yield MetricSnapshot(
                    name,
                    help_,
                    "counter",
                    tuple(Sample(getattr(i.stats, attr), (("kind", k),)) for k, i in infs),
                )

        self.registry.register_collector(
            collect,
            names=(
                "gossamer_informer_objects",
                "gossamer_informer_events_total",
                "gossamer_informer_relists_total",
                "gossamer_informer_errors_total",
                "gossamer_informer_bookmarks_total",
            ),
        )
