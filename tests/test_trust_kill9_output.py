"""No output line lost across kill -9: many writers, many kill rounds.

Each run writes numbered lines as fast as a chatty agent does; the daemon
is killed with SIGKILL at random moments and restarted, again and again.
Every line a run wrote must be in its log at the end, in order, none
missing: a byte is either still in the pipe or already in the file, never
only in a dead daemon's memory.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path

from daemon_kit import count_events, header, start_daemon, tagged, task, write_config
from proc_kit import wait_for

WRITERS = 12
ROUNDS = 8

# Fifty lines are one write(2); the count of lines written goes to a side file when
# the run is stopped (SIGTERM), so the test knows what the log must hold.
WRITER = """
import os, signal, sys, time
count = 0
def done(*_):
    with open({marks!r} + "/" + os.environ["FACTORYD_TASK"], "w") as f:
        f.write(str(count))
    os._exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    os.write(1, b"".join(b"n %d\\n" % i for i in range(count, count + 50)))
    count += 50
    time.sleep(0.005)
"""


def _numbers(directory: Path) -> list[int]:
    """The numbered lines the logs hold, complete ones only: a log read while the
    daemon writes it may end in the middle of a line (e.g. `n `)."""
    texts = [p.read_text(errors="replace") for p in sorted(directory.glob("*.log"))]
    text = "".join(t[: t.rfind("\n") + 1] for t in texts)
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("n ")]


def _lines_in(logs: Path) -> int:
    return sum(len(_numbers(logs / f"w{i:02}")) for i in range(WRITERS))


def test_no_line_is_lost_when_the_daemon_is_killed_at_any_moment(tmp_path: Path) -> None:
    rng = random.Random(20261202)
    tag = uuid.uuid4().hex
    marks = tmp_path / "marks"
    marks.mkdir()
    text = header(tmp_path, max_concurrent=WRITERS, run_log_max_bytes="64MiB")
    for i in range(WRITERS):
        text += task(
            f"w{i:02}", WRITER.format(marks=str(marks)), env={"TEST_TAG": tag}, stop_grace="5s"
        )
    config = write_config(tmp_path, text)
    pids: list[int] = []
    for round_no in range(ROUNDS):
        log = tmp_path / f"round{round_no:02}.log"
        daemon = start_daemon(config, log)
        try:
            if round_no == 0:
                wait_for(lambda: len(tagged(tag)) == WRITERS, timeout=30, what="writers up")
                pids = sorted(p.pid for p in tagged(tag))
            wait_for(
                lambda log=log: count_events(log, "control.listening") == 1,
                timeout=30,
                what="daemon up (runs adopted)",
            )
            time.sleep(rng.uniform(0.05, 0.6))  # the kill lands anywhere in the flow
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
    assert sorted(p.pid for p in tagged(tag)) == pids  # the same writers throughout
    final_log = tmp_path / "final.log"
    final = start_daemon(config, final_log)
    try:
        wait_for(lambda: count_events(final_log, "control.listening") == 1, timeout=30, what="up")
        # The final daemon must have captured output of its own before it stops: the
        # writers' logs grow past what they held when it started.
        held = _lines_in(tmp_path / "logs")
        wait_for(
            lambda: _lines_in(tmp_path / "logs") > held + WRITERS * 50,
            timeout=30,
            what="output captured by the final daemon",
        )
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=30) == 0
    finally:
        if final.poll() is None:
            final.kill()
            final.wait()
    wait_for(lambda: tagged(tag) == [], timeout=10, what="writers stopped")
    total = 0
    for i in range(WRITERS):
        name = f"w{i:02}"
        written = int((marks / name).read_text())
        numbers = _numbers(tmp_path / "logs" / name)
        missing = sorted(set(range(written)) - set(numbers))
        assert missing == [], (name, len(missing), missing[:10])
        assert numbers == list(range(len(numbers))), name  # in order, no duplicates
        assert len(numbers) in (written, written + 50)  # killed between write and count
        total += len(numbers)
    assert total > WRITERS * 100
    print(f"kill -9 rounds: {ROUNDS}, writers: {WRITERS}, lines checked: {total}, lost: 0")
