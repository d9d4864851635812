"""The fleet measured with whole daemons: three real factoryd hosts on one throwaway PostgreSQL.

bench/fleet.py measures the storage layer (clients calling the queue and the
ledger directly). These are the same questions asked of the daemons an
operator runs, each host with its own state dir, log and control socket:

* claim latency: `factoryd submit` on host A to the run started on whichever
  host claimed it (LISTEN/NOTIFY wakes the idle hosts; the daemon has no
  switch to turn NOTIFY off, so the polling fallback, every min(lease/3,
  5 s), is not measured here), p50 / p99, both from the submit command's
  start and from the daemon's `submission.accepted` (the enqueue committed);
* takeover: kill -9 of the host running a claimed item to the item's run
  started on another host, against the lease;
* overspend under contention: 30 submissions spread over the three hosts
  against a runs pool of 12; how many runs started beyond 12 (must be 0);
* reserve + settle per second across three hosts: services of `/bin/true`
  restarted at once on every host, each run one reservation in the fleet's
  ledger and one settlement; counted from the ledger's `used`, beside the
  same three daemons without `[fleet]` (runs counted from their logs).

Timestamps come from the daemons' JSON logs and the database, never from
polling a daemon. Figures, not a timed test: `python bench/fleet_daemons.py
[--quick]`; `run(results)` adds rows to bench/run_all.py's table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import common  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
from pg_kit import PgServer  # noqa: E402

DSN_ENV = "FACTORYD_BENCH_FLEET_DB"
TAG_ENV = "FACTORYD_BENCH_TAG"


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def table(header: str, **keys: Any) -> str:
    return "\n".join([header, *(f"{k} = {_toml(v)}" for k, v in keys.items())]) + "\n\n"


@dataclass
class Daemon:
    """One host: config, log (read incrementally), control socket."""

    name: str
    root: Path
    dsn: str | None
    body: str
    lease: float = 3.0
    proc: subprocess.Popen[bytes] | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def socket(self) -> Path:
        return self.root / "control.sock"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = table(
            "[daemon]", state_dir=str(self.root / "state"), log_dir=str(self.root / "logs"),
            control_socket=str(self.socket), metrics_listen="off", loop_interval="5s",
        )  # fmt: skip
        if self.dsn is not None:
            text += table(
                "[fleet]", database=f"env:{DSN_ENV}", host=self.name, lease=f"{self.lease:g}s"
            )
        config = self.root / "factoryd.toml"
        config.write_text(text + self.body)
        env = {**os.environ, DSN_ENV: self.dsn or ""}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [common.PY, "-m", "factoryd", "run", "--config", str(config),
                 "--log-format", "json"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=common.ROOT, env=env,
            )  # fmt: skip

    def events(self, name: str, task: str | None = None) -> list[dict[str, Any]]:
        """Events so far named `name` (for `task`), reading only what is new."""
        if self.log.exists():
            with self.log.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offset += end
            for line in chunk[:end].splitlines():
                with contextlib.suppress(ValueError):
                    self.seen.append(json.loads(line))
        return [
            e
            for e in self.seen
            if e.get("event") == name and (task is None or e.get("task") == task)
        ]

    def submit(self, template: str) -> str:
        done = subprocess.run(
            [common.PY, "-m", "factoryd", "submit", "--template", template,
             "--socket", str(self.socket)],
            capture_output=True, text=True, timeout=60, cwd=common.ROOT,
        )  # fmt: skip
        if done.returncode != 0:
            raise common.BenchFailed(f"submit on {self.name}: {done.stderr.strip()[:300]}")
        return done.stdout.strip()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def anchor() -> str:
    return datetime.fromtimestamp(time.time() - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shared(limit: float = 1e9, window: bool = False) -> str:
    extra = {"window": "1h", "anchor": anchor()} if window else {}
    return table("[[pools]]", name="plan", unit="runs", limit=limit, **extra) + table(
        "[[arms]]", name="plan", cli="command", pools=["plan"]
    )


def template(argv: list[str], tag: str = "") -> str:
    return table(
        "[[templates]]", name="work", kind="oneshot", restart="on-failure", argv=argv,
        env={TAG_ENV: tag},
    )  # fmt: skip


class Fleet:
    """Three daemons on one fresh schema (or none, for the single-host baseline)."""

    def __init__(self, pg: PgServer | None, body: str, lease: float = 3.0) -> None:
        work = common.tmpdir("fleet-daemons")
        dsn = pg.fresh_db() if pg is not None else None
        self.dsn = dsn
        self.hosts = [Daemon(n, work / n, dsn, body, lease) for n in ("a", "b", "c")]

    def __enter__(self) -> Fleet:
        for host in self.hosts:
            host.start()
        ready = "fleet.ready" if self.dsn is not None else "control.listening"
        common.expect(
            lambda: all(h.events(ready) for h in self.hosts), 60, f"three daemons {ready}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            host.stop()

    def started(self, task: str) -> list[tuple[Daemon, dict[str, Any]]]:
        return [(h, e) for h in self.hosts for e in h.events("run.started", task)]

    def used(self) -> float:
        assert self.dsn is not None
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT used FROM fleet_pools WHERE name = 'plan'").fetchone()
        return float(row[0]) if row else 0.0


def kill_tagged(tag: str) -> None:
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(TAG_ENV) == tag:
                proc.kill()


def claim_latency(pg: PgServer, n: int) -> tuple[list[float], list[float]]:
    """(submit command start -> run started, submission.accepted -> run started), s."""
    from_cli, from_accept = [], []
    with Fleet(pg, shared() + template(["/bin/true"])) as fleet:
        a = fleet.hosts[0]
        for _ in range(n):
            time.sleep(0.2)  # every host idle again: each claim is a wake-up
            t0 = time.time()
            sub = a.submit("work")
            common.expect(lambda s=sub: fleet.started(s), 30, f"{sub} started")
            (_, started), *_ = fleet.started(sub)
            accepted = [e for e in a.events("submission.accepted") if e["id"] == sub]
            from_cli.append(common.ts(started) - t0)
            from_accept.append(common.ts(started) - common.ts(accepted[0]))
    return from_cli, from_accept


def takeover(pg: PgServer, lease: float) -> float:
    """Seconds from kill -9 of the host running an item to its run on another host."""
    tag = f"takeover-{os.getpid()}-{time.monotonic_ns()}"
    body = shared() + template([common.PY, "-c", "import time; time.sleep(600)"], tag)
    try:
        with Fleet(pg, body, lease) as fleet:
            sub = fleet.hosts[0].submit("work")
            common.expect(lambda: fleet.started(sub), 30, "the item running")
            victim = fleet.started(sub)[0][0]
            time.sleep(lease)  # its claim renewed at least twice
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)
            killed = time.time()
            victim.proc.wait()

            def elsewhere() -> list[dict[str, Any]]:
                return [e for h, e in fleet.started(sub) if h is not victim]

            common.expect(lambda: elsewhere(), lease + 30, "the item running elsewhere")
            return common.ts(elsewhere()[0]) - killed
    finally:
        kill_tagged(tag)


def overspend(pg: PgServer, limit: int, submissions: int) -> tuple[int, float]:
    """(runs started, ledger used) for `submissions` spread over 3 hosts on a pool of `limit`."""
    body = shared(limit, window=True) + template([common.PY, "-c", "import time; time.sleep(0.5)"])
    with Fleet(pg, body) as fleet:
        errors: list[BaseException] = []

        def submit_on(host: Daemon, count: int) -> None:
            try:
                for _ in range(count):
                    host.submit("work")
            except BaseException as exc:
                errors.append(exc)

        share = [submissions // 3 + (i < submissions % 3) for i in range(3)]
        threads = [
            threading.Thread(target=submit_on, args=(h, k))
            for h, k in zip(fleet.hosts, share, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise common.BenchFailed(f"submitting: {errors[0]}")

        def finished() -> int:
            return sum(len(h.events("run.finished")) for h in fleet.hosts)

        common.expect(lambda: finished() >= limit, 60, f"{limit} runs finished", finished)
        time.sleep(2.0)  # room for any run beyond the limit to show
        started = sum(len(h.events("run.started")) for h in fleet.hosts)
        return started, fleet.used()


def throughput(pg: PgServer | None, seconds: float, services: int = 6) -> float:
    """Runs reserved and settled per second, all three hosts together."""
    now = {"initial": "0s", "max": "0s", "jitter": False}
    service = {"argv": ["/bin/true"], "restart": "always", "max_restarts": 100000, "backoff": now}
    body = shared() + "".join(table("[[tasks]]", name=f"s{i}", **service) for i in range(services))
    with Fleet(pg, body) as fleet:

        def count() -> float:
            if pg is not None:
                return fleet.used()
            return float(sum(len(h.events("run.finished")) for h in fleet.hosts))

        time.sleep(2.0)  # past the start-up burst
        c0, t0 = count(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = count(), time.monotonic()
        return (c1 - c0) / (t1 - t0)


def run(results: common.Results, quick: bool = False) -> None:
    print("fleet with whole daemons (3 factoryd hosts, PostgreSQL, one machine)", flush=True)
    pg = PgServer()
    try:
        cli, accept = claim_latency(pg, 10 if quick else 40)
        p = common.pct
        results.add(common.Row(
            "fleet daemons", "claim latency with NOTIFY p50 / p99: submit command to run started",
            f"{p(cli, 0.5) * 1e3:.0f} / {p(cli, 0.99) * 1e3:.0f} ms", "-", "-", "-",
        ))  # fmt: skip
        results.add(common.Row(
            "fleet daemons", "claim latency with NOTIFY p50 / p99: enqueued to run started",
            f"{p(accept, 0.5) * 1e3:.0f} / {p(accept, 0.99) * 1e3:.0f} ms", "-", "-", "-",
        ))  # fmt: skip
        lease = 3.0
        took = [takeover(pg, lease) for _ in range(1 if quick else 3)]
        results.add(common.Row(
            "fleet daemons", f"kill -9 of a host to its item running elsewhere (lease {lease:g} s)",
            common.summary(took, unit=" s"), "-", "-", "< lease + 5 s", max(took) < lease + 5,
        ))  # fmt: skip
        limit, subs = 12, 30
        started, used = overspend(pg, limit, subs)
        results.add(common.Row(
            "fleet daemons", f"overspend under contention ({subs} submissions on 3 hosts, "
            f"pool of {limit} runs)", f"{started - limit} ({started} started, ledger {used:g})",
            "-", "-", "0", started == limit and used == limit,
        ))  # fmt: skip
        window = 5.0 if quick else 15.0
        fleet_rates = [throughput(pg, window) for _ in range(1 if quick else 2)]
        alone_rates = [throughput(None, window) for _ in range(1 if quick else 2)]
        results.add(common.Row(
            "fleet daemons", "reserve + settle /s across 3 hosts (runs of /bin/true through "
            "the shared ledger; the storage-level figure is the fleet row above)",
            common.summary(fleet_rates), common.summary(alone_rates) + " (3 hosts, no [fleet])",
            f"{statistics.median(fleet_rates) / statistics.median(alone_rates):.2f}", "-",
        ))  # fmt: skip
    finally:
        pg.destroy()
        common.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(common.Results(), quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
