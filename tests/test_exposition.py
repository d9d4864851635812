"""Our fast text exposition is byte-for-byte what prometheus_client renders."""

from __future__ import annotations

from factoryd.observe.exposition import Renderer
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.parser import text_string_to_metric_families


class Fixed:
    def collect(self):
        g = GaugeMetricFamily("fixed_gauge", "A gauge\nwith a newline.", labels=["pool", "unit"])
        g.add_metric(["p\\1", 'u"x'], 3.5)
        g.add_metric(["p2", "runs"], float("inf"))
        yield g
        c = CounterMetricFamily("fixed_things", "Things.", labels=["kind"])
        c.add_metric(["a"], 7)
        yield c
        i = InfoMetricFamily("fixed_build", "Build.")
        i.add_metric([], {"version": "1.2"})
        yield i


def test_renderer_matches_generate_latest() -> None:
    disable_created_metrics()
    reg = CollectorRegistry()
    c = Counter("t_runs", "Runs.", ["task", "arm"], registry=reg)
    c.labels("a", "x").inc(3)
    c.labels('we"ird\\name', "y\nz").inc()
    Counter("t_plain", "Unlabelled counter.", registry=reg).inc(2.5)
    g = Gauge("t_level", "Level.", ["pool"], registry=reg)
    g.labels("p").set(-1e-7)
    g.labels("q").set(12345678901234.0)
    h = Histogram("t_seconds", "Durations.", ["task"], buckets=(0.5, 1, 60), registry=reg)
    for v in (0.1, 0.7, 3, 100):
        h.labels("a").observe(v)
    Histogram("t_plain_seconds", "Plain.", registry=reg).observe(2)
    reg.register(Fixed())
    ours = Renderer().render(reg)
    assert ours == generate_latest(reg)
    # and it parses back
    names = {f.name for f in text_string_to_metric_families(ours.decode())}
    assert {"t_runs", "t_level", "t_seconds", "fixed_gauge", "fixed_build_info"} <= names
    renderer = Renderer()
    assert renderer.render(reg) == renderer.render(reg)  # the cache changes nothing
