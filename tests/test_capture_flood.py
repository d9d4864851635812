"""Output capture under a flood: every line reaches the parser, every byte the
log, and the read buffers are not faulted in afresh for every chunk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LINE = b'{"type":"assistant","text":"' + b"x" * 200 + b'"}\n'
MIB = 48

#: Run in a fresh interpreter, as a daemon starts: how glibc places and trims
#: the chunk buffers depends on the heap's history, which pytest's own is not.
READER = """
import asyncio, json, os, resource, subprocess, sys
from pathlib import Path
from factoryd.proc.capture import PipeReader, RunLog

async def main():
    r, w = os.pipe()
    os.set_blocking(r, False)
    gen = "import sys\\nsys.stdout.buffer.write(%r * %d)\\n" % (LINE, LINES)
    child = subprocess.Popen([sys.executable, "-c", gen], stdout=w)
    os.close(w)
    counts = []
    log = RunLog(Path(sys.argv[1]), 1 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    await PipeReader(r, log, lambda _block, n: counts.append(n), lambda: None).wait()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    log.close()
    print(json.dumps({"lines": sum(counts), "written": log.written, "faults": faults,
                      "exit": child.wait(timeout=60)}))

asyncio.run(main())
"""


def test_a_flood_keeps_every_line_without_faulting_its_buffers_per_chunk(tmp_path: Path) -> None:
    """With glibc's default thresholds each chunk's buffers went back to the
    kernel and were faulted in again for the next chunk: about 380 page faults
    per MiB captured, a third of the daemon's CPU for a flood. With the heap
    kept (capture.keep_heap, turned on by the first flood) a few remain."""
    lines = MIB * (1 << 20) // len(LINE)
    code = f"LINE = {LINE!r}\nLINES = {lines}\n" + READER
    log = tmp_path / "flood.log"
    out = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, check=True, timeout=120
    )
    got = json.loads(out.stdout)
    assert got["exit"] == 0
    assert got["lines"] == lines  # no line lost or split
    assert got["written"] == lines * len(LINE) == log.stat().st_size
    assert got["faults"] / MIB < 40, f"{got['faults']} page faults for {MIB} MiB"
