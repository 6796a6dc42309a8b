"""The Prometheus text we write parses with Prometheus' own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from roost.metrics import Registry
from roost.proxy.metrics import ProxyMetrics


async def test_registry_renders_valid_exposition() -> None:
    registry = Registry()
    counter = registry.counter("things_total", "Things.", "kind")
    counter.inc('a "quoted"\nkind')
    counter.inc("b", amount=2.5)
    latency = registry.histogram("took_seconds", "Time.")
    for value in (0.003, 0.2, 42.0):
        latency.observe(value)

    async def collect() -> list[tuple[dict[str, str], float]]:
        return [({"state": "started"}, 3), ({}, 1)]

    registry.collected("machines", "Machines.", collect)
    families = {f.name: f for f in text_string_to_metric_families(await registry.render())}
    things = {s.labels["kind"]: s.value for s in families["things"].samples}
    assert things == {'a "quoted"\nkind': 1.0, "b": 2.5}
    buckets = {
        s.labels["le"]: s.value
        for s in families["took_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.01"] == 1 and buckets["0.25"] == 2 and buckets["+Inf"] == 3
    assert [s.value for s in families["machines"].samples] == [3, 1]


def test_proxy_metrics_parse() -> None:
    metrics = ProxyMetrics()
    metrics.requests[("web", "m1")] += 3
    metrics.wake_latency["web"].observe(0.2)
    metrics.rejected["web"] += 1
    families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
    assert families["roost_proxy_requests"].samples[0].value == 3
    assert families["roost_proxy_wake_seconds"].type == "histogram"
