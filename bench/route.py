"""Routing decision cost vs. the cost of one process spawn, measured in the same run.

Prints decisions/s and median/p99 microseconds per decision for 10, 50 and
200 arms over 10 pools, beside the median time of one
`subprocess.Popen(['/bin/true']).wait()`. Target: a 50-arm decision costs
at most 5% of that spawn.

Two figures per arm count: the router alone (`route`, timed; its `settle`
runs between decisions, untimed), and the decision as the daemon takes it
on every run start: `route`, the metrics and the web page's record of it
(`RecordingMetrics.decision`) and the `route.decision` log line's fields
(the chosen score, the rejections; its rationale paragraph only at debug).

    python bench/route.py [--decisions N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from factoryd.routing.engine import EngineSettings, RoutingEngine
from factoryd.routing.ledger import ScarcityPolicy
from factoryd.routing.model import ArmSpec, PoolSpec, PoolUnit, RouteRequest, TaskType, Usage
from factoryd.routing.quality import QualityPolicy
from factoryd.routing.scoring import RoutingPolicy
from factoryd.routing.telemetry import HealthPolicy, RunSample
from factoryd.service.web.hub import RecordingMetrics
from factoryd.units.durations import Period


def build(n_arms: int, n_pools: int = 10) -> RoutingEngine:
    pools = tuple(
        PoolSpec(name=f"p{i}", unit=list(PoolUnit)[i % 3], limit=1e12, window=Period(seconds=18000))
        for i in range(n_pools)
    )
    arms = tuple(
        ArmSpec(
            name=f"arm{i}",
            cli="command",
            pools=(f"p{i % n_pools}", f"p{(i * 7 + 3) % n_pools}")
            if i % 7
            else (f"p{i % n_pools}",),
            context_window=(i % 3) * 100_000,
            thinking=("high",) if i % 2 else (),
            cost_per_1k_input=0.001 * (i % 5),
            cost_per_1k_output=0.004 * (i % 5),
        )
        for i in range(n_arms)
    )
    engine = RoutingEngine(
        EngineSettings(
            arms, pools, RoutingPolicy(), ScarcityPolicy(), QualityPolicy(), HealthPolicy()
        )
    )
    now = time.time()
    for a in arms:  # every arm has telemetry, as in a daemon that has run a while
        for k in range(5):
            engine.telemetry.record(
                a.name, RunSample(at=now - k * 30, ok=k != 2, duration=40.0, tokens=5000)
            )
            engine.quality.observe(a.name, "debug", k != 2)
    return engine


def time_decisions(engine: RoutingEngine, count: int, daemon: bool = False) -> list[float]:
    """Seconds per decision; `daemon`: with what the daemon does beside it."""
    req = RouteRequest(task="t", type=TaskType.DEBUG, estimated_tokens=20_000)
    samples = []
    now = time.time()
    metrics = RecordingMetrics() if daemon else None
    for i in range(count):
        t0 = time.perf_counter()
        d = engine.route(req, now + i * 0.001)
        if metrics is not None:
            metrics.decision(d, 0.0)
            (d.score, len(d.rejections))  # what the route.decision line reads
        samples.append(time.perf_counter() - t0)
        engine.settle(
            d,
            now=now,
            usage=Usage(input_tokens=100, output_tokens=100),
            ok=True,
            duration=30.0,
            task_type="debug",
        )
    return samples


def time_spawn(count: int) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        subprocess.Popen(["/bin/true"]).wait()
        samples.append(time.perf_counter() - t0)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    spawn = statistics.median(time_spawn(300))
    print(f"baseline: Popen(['/bin/true']).wait() median {spawn * 1e6:.0f} us")
    print(
        f"{'arms':>5} {'path':<8} {'decisions/s':>12} {'median us':>10} {'p99 us':>8} "
        f"{'% of spawn':>11}"
    )
    for n in (10, 50, 200):
        for path in ("router", "daemon"):
            samples = time_decisions(build(n), args.decisions, daemon=path == "daemon")
            med = statistics.median(samples)
            print(
                f"{n:>5} {path:<8} {1 / statistics.mean(samples):>12.0f} {med * 1e6:>10.1f} "
                f"{pct(samples, 0.99) * 1e6:>8.1f} {100 * med / spawn:>10.1f}%"
            )
    print("target: a 50-arm decision costs at most 5% of one spawn")


if __name__ == "__main__":
    main()
