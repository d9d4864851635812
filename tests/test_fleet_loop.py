"""A silent fleet database never stalls the host: fleet calls are off the event loop.

A TCP proxy between one daemon and PostgreSQL stops forwarding (the calls
in flight and new connections hang: nothing fails fast). Meanwhile:

* a local task on an arm with no shared pool keeps restarting on its
  ~50 ms period (a loop blocked on a database call would stop it dead);
* the control socket answers `status` within 200 ms;
* the task on the shared pool starts nothing: its reservation waits for
  the fleet's answer, and once the link forwards again it starts again.
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import statistics
import time
from pathlib import Path

from fleet_host_kit import PY, Host, table, wait_for, when
from fleet_proxy_kit import FreezingProxy
from pg_kit import PgServer
from psycopg.conninfo import conninfo_to_dict

pytest_plugins = ["fleet_fixtures"]

FROZEN = 5.0


def _status_seconds(path: Path) -> float:
    """One `status` over the control socket, timed from connect to answer."""
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(path))
        sock.sendall(b'{"op": "status"}\n')
        got = b""
        while not got.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    assert json.loads(got)["ok"] is True
    return time.perf_counter() - started


def _starts(host: Host, task: str, after: float, before: float) -> list[float]:
    return sorted(
        t
        for e in host.events("route.decision")
        if e.get("task") == task and after <= (t := when(e)) <= before
    )


def test_a_silent_database_stalls_no_local_run_and_no_control_request(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    proxy = FreezingProxy(pg.port)
    url = pg.url(dbname, tcp=True).replace(f":{pg.port}/", f":{proxy.port}/")
    true = shutil.which("true") or "/bin/true"
    body = (
        table("[[pools]]", name="plan", unit="runs", limit=1000000)
        + table("[[arms]]", name="shared", cli="command", pools=["plan"])
        + table("[[arms]]", name="local", cli="command")
        + table(
            "[[tasks]]", name="tick", arms=["local"], restart="always", max_restarts=100000,
            argv=[true], backoff={"initial": "0.05s", "max": "0.05s", "jitter": False},
        )
        + table(
            "[[tasks]]", name="paid", arms=["shared"], restart="always", max_restarts=100000,
            argv=[PY, "-c", "import time; time.sleep(0.1)"],
            backoff={"initial": "0.1s", "max": "0.1s", "jitter": False},
        )
    )  # fmt: skip
    host = Host("solo", tmp_path / "solo", url, body, fleet={"lease": "6s"})
    try:
        host.start()
        wait_for(lambda: host.events("fleet.ready"), 30, "the host's fleet link")
        wait_for(lambda: len(_starts(host, "paid", 0, 1e12)) >= 3, 30, "shared-pool runs")
        proxy.freeze()
        frozen_at = time.time()
        latencies = []
        while time.time() < frozen_at + FROZEN:
            latencies.append(_status_seconds(host.socket))
            time.sleep(0.25)
        proxy.thaw()
        thawed_at = time.time()
        # Once the link forwards again, the blocked calls complete and shared runs resume.
        wait_for(
            lambda: _starts(host, "paid", thawed_at, 1e12), 30, "a shared-pool run after the thaw"
        )
        # The window: from 0.5 s into the freeze (a start already granted may still go).
        ticks = _starts(host, "tick", frozen_at + 0.5, thawed_at)
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert len(ticks) >= 10, f"the local task started {len(ticks)} times in {FROZEN - 0.5}s"
        assert max(gaps) < 1.0, f"the loop stalled {max(gaps):.2f}s while the database was silent"
        paid = _starts(host, "paid", frozen_at + 0.5, thawed_at)
        assert paid == [], "a run on the shared pool started without the fleet's answer"
        slow = [s for s in latencies if s >= 0.2]
        assert len(slow) <= len(latencies) // 10, f"status latencies {latencies}"
        assert max(latencies) < 1.0, f"status latencies {latencies}"
        print(
            f"frozen {FROZEN}s: {len(ticks)} local starts, median gap "
            f"{statistics.median(gaps) * 1000:.0f} ms, max gap {max(gaps) * 1000:.0f} ms; "
            f"status p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms over {len(latencies)}"
        )
    finally:
        host.stop()
        proxy.close()
    assert host.proc is not None and host.proc.returncode == 0, host.log.read_text()[-2000:]
