"""Scale: one reconcile pass with 10,000 desired tasks and 500 running (target
<= 20 ms median), and the routing decision cost for 10, 50 and 200 arms (from
route.py): the router alone (the target, for 50 arms) and as the daemon takes
it, with its metrics, the web page's record and the log line's fields.

The daemon runs in-process here so that single passes can be timed; the 500
runs are real processes (`sleep`).
"""

from __future__ import annotations

import io
import statistics
import time

import anyio
from common import Results, Row, factoryd_config, factoryd_task, summary, tmpdir
from factoryd.config.loader import load_config
from factoryd.observe.logs import configure
from factoryd.reconcile.reconciler import Reconciler

TASKS, RUNNING = 10_000, 500


def pass_times(samples: int = 30) -> list[float]:
    configure("json", "warning", stream=io.StringIO())
    work = tmpdir("scale")
    tasks = [factoryd_task(f"t{i:05}", ["sleep", "3600"], kind="oneshot") for i in range(TASKS)]
    rec = Reconciler(load_config(factoryd_config(work, tasks, max_concurrent=RUNNING)))
    times: list[float] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rec.run)
            with anyio.fail_after(120):
                while sum(1 for r in rec.runs.values() if r.pid) < RUNNING:
                    await anyio.sleep(0.05)
            for _ in range(samples):
                t0 = time.perf_counter()
                rec.reconcile_pass()
                times.append(time.perf_counter() - t0)
                await anyio.sleep(0.01)
            rec.request_stop()

    anyio.run(main)
    return times


def run(results: Results) -> None:
    print(f"scale: one pass with {TASKS} tasks, {RUNNING} running", flush=True)
    times = pass_times()
    med = statistics.median(times)
    results.add(
        Row(
            "scale",
            f"reconcile pass, {TASKS} tasks / {RUNNING} running",
            summary(times, 1e3, " ms"),
            "-",
            "-",
            "<= 20 ms median",
            med <= 0.020,
        )
    )
    route_rows(results)


def route_rows(results: Results) -> None:
    """The route decision's rows: the router alone and as the daemon takes it, each
    beside one spawn timed in the same process (bench/slow_machine.py takes these
    too, under the slower interpreter)."""
    import route

    spawn = statistics.median(route.time_spawn(200))
    for daemon in (False, True):
        for arms in (10, 50, 200):
            decisions = route.time_decisions(route.build(arms), 2000, daemon=daemon)
            d = statistics.median(decisions)
            # The target is the router's (as the issue set it); the daemon's path
            # adds its metrics, the page's record and the log line's fields.
            target = arms == 50 and not daemon
            results.add(
                Row(
                    "scale",
                    f"route decision, {arms} arms x 10 pools"
                    + (", as the daemon takes it" if daemon else ""),
                    summary(decisions, 1e6, " us"),
                    f"Popen(['/bin/true']).wait() {spawn * 1e6:.0f} us",
                    f"{d / spawn:.1%} of a spawn",
                    "<= 5% of a spawn" if target else "-",
                    d / spawn <= 0.05 if target else None,
                )
            )


if __name__ == "__main__":
    run(Results())
