"""Per-taxonomy metrics: coverage and measured precision per route, correction rate per
label, the confidence histogram and the label distribution; as JSON for the API and as
Prometheus families for ``/metrics``.

Precision per route is what reviewers accepted of the results they reviewed: every
``human`` result, the sampled part of the ``review`` band, and the quality samples of the
``auto`` route (``thresholds.auto_sample_rate``), which stay automated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from appliance.services import Services

BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """What a taxonomy's results and reviews say (from ``LabelStore.route_stats``)."""
    routes: dict[str, int] = stats["routes"]
    total = sum(routes.values())
    reviewed: list[tuple[str, str, str]] = stats["reviewed"]
    queued: dict[str, int] = stats["queued"]
    per_route: dict[str, Any] = {}
    for route in ("auto", "review", "human"):
        decided = [d for r, _, d in reviewed if r == route]
        per_route[route] = {
            "results": routes.get(route, 0),
            "coverage": round(routes.get(route, 0) / total, 4) if total else None,
            "sent_to_review": queued.get(route, 0),
            "reviewed": len(decided),
            "precision": round(decided.count("accept") / len(decided), 4) if decided else None,
        }
    corrections: dict[str, Any] = {}
    for label in sorted({lab for _, lab, _ in reviewed}):
        decided = [d for _, lab, d in reviewed if lab == label]
        corrections[label] = {
            "reviewed": len(decided),
            "correction_rate": round(decided.count("correct") / len(decided), 4),
        }
    confidences: list[float] = stats["confidences"]
    histogram = {f"<={b}": sum(1 for c in confidences if c <= b) for b in BUCKETS}
    return {
        "results": total,
        "routes": per_route,
        "corrections": corrections,
        "confidence_histogram": histogram,
        "labels": stats["labels"],
        "labels_by_day": stats["labels_by_day"],
    }


class ClassificationCollector:
    """Prometheus families for the taxonomies of every tenant open in this process."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        from appliance.review.label_store import LabelStore

        results = GaugeMetricFamily(
            "appliance_classification_results",
            "Classification results by route.",
            labels=["tenant", "taxonomy", "route"],
        )
        reviewed = GaugeMetricFamily(
            "appliance_classification_reviewed_results",
            "Results a reviewer decided, by route (the sample behind the precision).",
            labels=["tenant", "taxonomy", "route"],
        )
        precision = GaugeMetricFamily(
            "appliance_classification_reviewed_precision",
            "Share of reviewed results a reviewer accepted, by route.",
            labels=["tenant", "taxonomy", "route"],
        )
        correction = GaugeMetricFamily(
            "appliance_classification_correction_rate",
            "Share of reviewed results a reviewer corrected, by predicted label.",
            labels=["tenant", "taxonomy", "label"],
        )
        for (tenant, _), store in self._services.open_tenant_states("classification"):
            assert isinstance(store, LabelStore)
            for taxonomy in store.taxonomies():
                s = summary(store.route_stats(taxonomy.name))
                for route, figures in s["routes"].items():
                    results.add_metric([tenant, taxonomy.name, route], figures["results"])
                    reviewed.add_metric([tenant, taxonomy.name, route], figures["reviewed"])
                    if figures["precision"] is not None:
                        precision.add_metric([tenant, taxonomy.name, route], figures["precision"])
                for label, figures in s["corrections"].items():
                    correction.add_metric(
                        [tenant, taxonomy.name, label], figures["correction_rate"]
                    )
        yield results
        yield reviewed
        yield precision
        yield correction
