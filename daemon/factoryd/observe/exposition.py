"""Prometheus text exposition (format 0.0.4), rendered fast.

prometheus_client's `generate_latest` builds a Sample tuple and escapes
every label name and value for every series on every scrape; with a few
thousand series that is a 20 ms scrape. This renderer reads the values of
our own Counter/Gauge/Histogram/Tally objects directly and caches the rendered
`{k="v",...}` block per label set (label values come from the config and
repeat on every scrape). Other collectors (process, platform, the
scrape-time state collector) go through their normal `collect()`.

The output is byte-for-byte what `generate_latest` produces: a test
compares the two on a populated registry, so a prometheus-client upgrade
that changes its internals fails loudly instead of silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString as _untyped_go_float

from factoryd.observe.tally import Tally

#: prometheus_client's own number format ("+Inf", "1e+06"), which it leaves unannotated.
_go_float: Callable[[float], str] = _untyped_go_float

_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class Renderer:
    """Renders a registry; keeps a bounded cache of rendered label sets."""

    MAX_CACHE = 100_000

    def __init__(self) -> None:
        self._blocks: dict[tuple[Any, ...], str] = {}

    def _block(self, names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
        key = (names, values, extra)
        block = self._blocks.get(key)
        if block is None:
            pairs = sorted(zip(names, values, strict=True))
            if extra:
                pairs = sorted([*pairs, ("le", extra)])
            block = "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in pairs) + "}"
            if len(self._blocks) >= self.MAX_CACHE:
                self._blocks.clear()
            self._blocks[key] = block
        return block

    def render(self, registry: CollectorRegistry) -> bytes:
        out: list[str] = []
        collectors = list(registry._collector_to_names)
        for collector in collectors:
            if type(collector) in (Counter, Gauge, Histogram):
                self._fast(collector, out)
            elif type(collector) is Tally:
                self._tally(collector, out)
            else:
                self._slow(collector, out)
        return "".join(out).encode()

    # -- our own metric objects ---------------------------------------------

    def _fast(self, metric: Any, out: list[str]) -> None:
        kind = metric._type
        name = metric._name + ("_total" if kind == "counter" else "")
        out.append(f"# HELP {name} {_escape_help(metric._documentation)}\n# TYPE {name} {kind}\n")
        names = tuple(metric._labelnames)
        children = list(metric._metrics.items()) if names else [((), metric)]
        for values, child in children:
            if kind == "histogram":
                self._histogram(metric._name, names, values, child, out)
                continue
            block = self._block(names, values) if names else ""
            out.append(f"{name}{block} {_go_float(child._value.get())}\n")

    def _tally(self, tally: Tally, out: list[str]) -> None:
        name = tally.name + "_total"
        out.append(f"# HELP {name} {_escape_help(tally.documentation)}\n# TYPE {name} counter\n")
        names = tally.labelnames
        for values, count in tally.counts.copy().items():
            out.append(f"{name}{self._block(names, values)} {_go_float(count)}\n")

    def _histogram(
        self, base: str, names: tuple[str, ...], values: tuple[str, ...], child: Any, out: list[str]
    ) -> None:
        acc = 0.0
        for bound, bucket in zip(child._upper_bounds, child._buckets, strict=True):
            acc += bucket.get()
            le = _go_float(bound)
            out.append(f"{base}_bucket{self._block(names, values, le)} {_go_float(acc)}\n")
        block = self._block(names, values) if names else ""
        out.append(f"{base}_count{block} {_go_float(acc)}\n")
        out.append(f"{base}_sum{block} {_go_float(child._sum.get())}\n")

    # -- everything else ----------------------------------------------------------

    def _slow(self, collector: Collector, out: list[str]) -> None:
        for metric in collector.collect():
            name, kind = metric.name, metric.type
            if kind == "counter":
                name += "_total"
            elif kind == "info":
                name += "_info"
            kind = _TYPES.get(kind, kind)
            out.append(
                f"# HELP {name} {_escape_help(metric.documentation)}\n# TYPE {name} {kind}\n"
            )
            skip = (metric.name + "_created", metric.name + "_gsum", metric.name + "_gcount")
            for s in metric.samples:
                if s.name in skip:
                    continue
                block = ""
                if s.labels:
                    keys = tuple(s.labels)
                    block = self._block(keys, tuple(s.labels[k] for k in keys))
                stamp = "" if s.timestamp is None else f" {int(float(s.timestamp) * 1000):d}"
                out.append(f"{s.name}{block} {_go_float(s.value)}{stamp}\n")
