"""Shared pieces of the benchmarks: statistics, a results table, and running the
two supervisors (factoryd and supervisord 4.x) as real processes side by side.

Measuring rules (see ../shared/reference/benchmarks.md): the peer runs in the
same invocation, alternating, several repetitions; timestamps come from
files, logs and /proc, never from a client polling the daemon (polling
wakes a daemon's loop and hides its real latency).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Row:
    bench: str
    metric: str
    ours: str
    peer: str
    ratio: str
    target: str
    met: bool | None = None


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        mark = {True: "ok", False: "MISSED", None: "-"}[row.met]
        print(
            f"  {row.metric}: factoryd {row.ours} | peer {row.peer} | {row.ratio} | "
            f"target {row.target} [{mark}]",
            flush=True,
        )


def summary(samples: Sequence[float], scale: float = 1.0, unit: str = "") -> str:
    """median [min..max] of samples, scaled."""
    s = sorted(samples)
    return f"{statistics.median(s) * scale:.3g}{unit} [{s[0] * scale:.3g}..{s[-1] * scale:.3g}]"


def paired(ours: Sequence[float], peers: Sequence[float]) -> float:
    """The median of the per-repetition ratios ours[i] / peers[i]. Each pair ran
    back to back, so a slow spell of a shared machine (this one's throughput
    moves by a third within minutes) divides out of the ratio instead of
    landing on one side of it."""
    return statistics.median(o / p for o, p in zip(ours, peers, strict=True))


def ratios(ours: Sequence[float], peers: Sequence[float], fmt: str) -> str:
    """Every per-repetition ratio, in run order, and the ratio of the medians."""
    each = " ".join(fmt.format(o / p) for o, p in zip(ours, peers, strict=True))
    whole = statistics.median(ours) / statistics.median(peers)
    return f"per repetition {each}; ratio of medians {fmt.format(whole)}"


def pct(samples: Sequence[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; pure Python: {reference_loop():.2f} s for a "
        f"10-million-step loop, one spawn {spawn_time() * 1e6:.0f} us "
        "(Popen(['/bin/true']).wait(), median of 200)"
    )


def reference_loop() -> float:
    """Seconds for a fixed pure-Python loop (best of 3): how fast this machine runs
    the daemon's kind of work. Ratios of Python work to kernel work (route vs
    spawn, runs/s vs a bare Popen loop) move with it, so RESULTS.md states it."""
    best = math.inf
    for _ in range(3):
        t0, i = time.perf_counter(), 0
        while i < 10_000_000:
            i += 1
        best = min(best, time.perf_counter() - t0)
    return best


def spawn_time() -> float:
    """Median seconds of one Popen(['/bin/true']).wait(): the kernel side's speed."""
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        subprocess.Popen(["/bin/true"]).wait()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def supervisord_bin() -> str:
    path = shutil.which(
        "supervisord", path=str(Path(PY).parent) + os.pathsep + os.environ.get("PATH", "")
    )
    if path is None:
        raise SystemExit(
            "supervisord is not installed: pip install 'factoryd[bench]' (make bench does this)"
        )
    return path


_TMPDIRS: list[Path] = []


def tmpdir(prefix: str) -> Path:
    """A scratch directory, removed by `cleanup` (and at exit): the output bench
    alone writes 400 MB per repetition, and a disk filling with dirty pages
    slows every later write, peers' included."""
    path = Path(tempfile.mkdtemp(prefix=f"factoryd-bench-{prefix}-"))
    _TMPDIRS.append(path)
    return path


def cleanup() -> None:
    while _TMPDIRS:
        shutil.rmtree(_TMPDIRS.pop(), ignore_errors=True)


atexit.register(cleanup)


# -- factoryd -----------------------------------------------------------------------


def factoryd_config(
    work: Path, tasks: Iterable[str], *, max_concurrent: int = 16, extra_daemon: str = ""
) -> Path:
    text = (
        f'[daemon]\nstate_dir = "{work / "state"}"\nlog_dir = "{work / "logs"}"\n'
        f'metrics_listen = "off"\nmax_concurrent = {max_concurrent}\n'
        f'loop_interval = "5s"\n{extra_daemon}\n'
        '[[pools]]\nname = "local"\nunit = "runs"\nlimit = 1000000000\n\n'
        '[[arms]]\nname = "local"\ncli = "command"\npools = ["local"]\n\n'
    )
    text += "".join(tasks)
    path = work / "factoryd.toml"
    path.write_text(text)
    return path


def factoryd_task(name: str, argv: Sequence[str], **keys: object) -> str:
    out = f'[[tasks]]\nname = "{name}"\nargv = {json.dumps(list(argv))}\n'
    for k, v in keys.items():
        out += f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}\n"
    return out + "\n"


def _inline(table: dict[str, object]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"


def start_factoryd(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "factoryd", "run", "--config", str(config), "--log-format", "json"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


def ts(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


# -- supervisord --------------------------------------------------------------------


def supervisord_config(work: Path, programs: dict[str, Sequence[str]], **options: object) -> Path:
    lines = [
        "[supervisord]",
        f"logfile={work / 'supervisord.log'}",
        "loglevel=info",
        f"pidfile={work / 'supervisord.pid'}",
        "nodaemon=true",
        "minfds=4096",
        f"childlogdir={work}",
        "",
        "[unix_http_server]",
        f"file={work / 'supervisor.sock'}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
    ]
    for name, argv in programs.items():
        lines += [
            f"[program:{name}]",
            f"command={shlex.join(argv)}",
            "autostart=true",
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
        ]
        lines += [f"{k}={v}" for k, v in options.items()]
        lines.append("")
    path = work / "supervisord.conf"
    path.write_text("\n".join(lines))
    return path


def start_supervisord(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [supervisord_bin(), "-n", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def supervisord_log_lines(work: Path) -> list[tuple[float, str]]:
    """(timestamp, message) from supervisord's log (millisecond timestamps)."""
    out = []
    path = work / "supervisord.log"
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        out.append((stamp, line[24:]))
    return out


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class BenchFailed(RuntimeError):
    """A benchmark could not reach the state it measures; the message says which."""


def expect(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    seen: Callable[[], object] | None = None,
    interval: float = 0.01,
) -> None:
    """Wait for a condition the measurement needs, or fail saying what was not reached.

    A bare `assert` here once stopped a whole run with an empty AssertionError
    under load, and nobody could tell which state was missing or how far off it was.
    """
    if not wait_until(predicate, timeout, interval):
        got = f" (saw {seen()})" if seen is not None else ""
        raise BenchFailed(f"{what}: not reached within {timeout:g} s{got}")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll a file-system or /proc condition (never the daemon's API)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
