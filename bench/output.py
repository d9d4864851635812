"""Output: one run writing 200 MB of JSON lines. Captured bytes and parse rate through
factoryd's capture (capped log + the claude stream-json parser on every line),
against `generator | cat > file` measured in the same run. Target >= 50% of cat.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import anyio
from common import Results, Row, cleanup, tmpdir
from factoryd.proc.capture import RunLog
from factoryd.proc.tree import become_subreaper
from factoryd.run.agents.claude import ClaudeParser
from factoryd.run.runner import Runner
from factoryd.run.runspec import RunSpec

MB = 200
LINE = '{"type":"assistant","message":{"content":[{"type":"text","text":"' + "x" * 180 + '"}]}}\n'
GENERATOR = [
    sys.executable,
    "-c",
    "import sys\n"
    f"line = {LINE!r}.encode()\n"
    "chunk = line * (1 << 20 // len(line))\n"
    f"n = {MB} * (1 << 20) // len(chunk)\n"
    "w = sys.stdout.buffer.write\n"
    "for _ in range(n):\n    w(chunk)\n",
]


def baseline() -> tuple[float, int]:
    out = tmpdir("cat") / "out"
    t0 = time.perf_counter()
    with out.open("wb") as f:
        gen = subprocess.Popen(GENERATOR, stdout=subprocess.PIPE)
        cat = subprocess.Popen(["cat"], stdin=gen.stdout, stdout=f)
        assert gen.stdout is not None
        gen.stdout.close()
        cat.wait()
        gen.wait()
    return time.perf_counter() - t0, out.stat().st_size


def factoryd() -> tuple[float, int, int]:
    become_subreaper()
    work = tmpdir("output")
    parser = ClaudeParser()
    spec = RunSpec(
        run_id="flood",
        task="flood",
        arm="a",
        cli="claude",
        argv=tuple(GENERATOR),
        env={"PATH": "/usr/bin:/bin"},
        cwd=str(work),
        log=RunLog(work / "flood.log", 1 << 30),
        parser=parser,
    )
    runner = Runner(spec)

    async def main() -> float:
        t0 = time.perf_counter()
        result = await runner.run()
        assert result.outcome.value == "succeeded", result.reason
        return time.perf_counter() - t0

    elapsed = anyio.run(main)
    return elapsed, spec.log.written, parser.summary.events


def run(results: Results, reps: int = 3) -> None:
    print(
        f"output: a run writing {MB} MB of JSON lines, {reps} alternating repetitions", flush=True
    )
    ours, peer, sizes, events = [], [], [], []
    for _ in range(reps):
        t, size = baseline()
        peer.append(size / t / 2**20)
        cleanup()
        t, written, parsed = factoryd()
        ours.append(written / t / 2**20)
        sizes.append(written)
        events.append(parsed / t)
        cleanup()
    o, p = statistics.median(ours), statistics.median(peer)
    results.add(
        Row(
            "output",
            f"{MB} MB of JSON lines captured and parsed",
            f"{o:.0f} MB/s ({statistics.median(events) / 1e3:.0f}k lines/s parsed, "
            f"{min(sizes) / 2**20:.0f} MB kept)",
            f"cat > file {p:.0f} MB/s",
            f"{o / p:.0%} of cat",
            ">= 50%",
            o / p >= 0.5,
        )
    )


if __name__ == "__main__":
    run(Results(), reps=1)
