"""Log lines are written once per turn of the loop while the daemon's loop runs.

observe/linewriter.py gathers the lines a turn of the reconciler's loop logs
and writes them in one write. None may be lost or reordered, lines from other
threads and from outside the loop go out at once, leaving the loop (even by
an exception) writes what is kept, and a log that cannot be written does not
raise into whatever was logging.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from daemon_kit import ROOT, free_port, header, task, write_config
from factoryd.observe import logs
from factoryd.observe.linewriter import LineWriter
from proc_kit import wait_for


class Recording(io.StringIO):
    """A stream that remembers each write, and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.failing: OSError | None = None

    def write(self, text: str) -> int:
        if self.failing is not None:
            raise self.failing
        self.writes.append(text)
        return super().write(text)


def test_off_the_loop_every_line_is_written_at_once() -> None:
    stream = Recording()
    writer = LineWriter(stream)
    writer.info("one")
    assert stream.writes == ["one\n"]
    writer.error("two")
    assert stream.writes == ["one\n", "two\n"]


@pytest.mark.anyio
async def test_a_turns_lines_go_out_together_at_its_end_in_order() -> None:
    stream = Recording()
    writer = LineWriter(stream)
    with writer.per_turn():
        for i in range(5):
            writer.info(f"line {i}")
        assert stream.writes == []  # kept until the turn ends
        await asyncio.sleep(0)
        assert stream.writes == ["line 0\nline 1\nline 2\nline 3\nline 4\n"]
        writer.warning("next turn")
        await asyncio.sleep(0)
        assert stream.writes[-1] == "next turn\n"
    writer.info("after")
    assert stream.writes[-1] == "after\n"  # outside the loop's watch: at once


@pytest.mark.anyio
async def test_leaving_the_loop_even_by_an_exception_writes_what_is_kept() -> None:
    stream = Recording()
    writer = LineWriter(stream)
    with pytest.raises(RuntimeError), writer.per_turn():
        writer.info("kept")
        raise RuntimeError("the loop failed")
    assert stream.getvalue() == "kept\n"


@pytest.mark.anyio
async def test_another_threads_lines_are_not_held_for_the_loop() -> None:
    stream = Recording()
    writer = LineWriter(stream)
    with writer.per_turn():
        writer.info("on the loop")
        thread = threading.Thread(target=writer.error, args=("from a thread",))
        thread.start()
        thread.join()
        assert stream.writes == ["from a thread\n"]
        await asyncio.sleep(0)
        assert stream.writes == ["from a thread\n", "on the loop\n"]


@pytest.mark.anyio
async def test_a_log_that_cannot_be_written_drops_lines_and_raises_nothing() -> None:
    stream = Recording()
    writer = LineWriter(stream)
    stream.failing = OSError(28, "No space left on device")
    writer.info("lost off the loop")  # no exception into the caller
    with writer.per_turn():
        writer.info("lost on the loop")
        writer.info("and its neighbour")
        await asyncio.sleep(0)
    assert writer.dropped == 3
    stream.failing = None
    writer.info("back")
    assert stream.getvalue() == "back\n"
    stream.close()
    writer.info("closed stream")  # ValueError from a closed stream: counted too
    assert writer.dropped == 4


@pytest.mark.anyio
async def test_the_daemons_json_lines_go_through_the_writer_unchanged() -> None:
    stream = Recording()
    logs.configure("json", "info", stream=stream)
    try:
        log = logs.get_logger(task="t")
        with logs.lines_per_turn():
            log.info("run.started", pid=7)
            log.warning("limit.hit", raw="429")
            await asyncio.sleep(0)
        assert len(stream.writes) == 1
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["event"] == "run.started" and first["pid"] == 7 and first["task"] == "t"
        assert second["event"] == "limit.hit" and second["level"] == "warning"
    finally:
        logs.configure("json", "info", stream=io.StringIO())


def test_a_daemon_whose_log_is_on_a_full_disk_runs_on_and_counts_what_it_lost(
    tmp_path: Path,
) -> None:
    """stderr on /dev/full (every write: ENOSPC): the daemon must start, run its
    tasks and answer scrapes; the lines it could not write are counted."""
    port = free_port()
    text = header(tmp_path, metrics_listen=f"127.0.0.1:{port}")
    for i in range(5):
        text += task(f"t{i}", f"open({str(tmp_path / f'ran{i}')!r}, 'w')", kind="oneshot")
    with open("/dev/full", "wb") as full:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "factoryd",
                "run",
                "--config",
                str(write_config(tmp_path, text)),
            ],
            stdout=full,
            stderr=full,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    try:
        wait_for(
            lambda: all((tmp_path / f"ran{i}").exists() for i in range(5)),
            timeout=30,
            what="five runs",
        )

        def counted() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                return None
            finished = re.findall(
                r"factoryd_runs_finished_total\{[^}]*succeeded[^}]*\} (\S+)", body
            )
            return body if len(finished) == 5 else None

        wait_for(lambda: counted() is not None, timeout=30, what="five runs counted")
        body = counted()
        assert body is not None
        dropped = re.search(r"^factoryd_log_lines_dropped_total (\S+)$", body, re.M)
        assert dropped is not None and float(dropped.group(1)) >= 15  # 3+ lines a run, and more
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=20) == 0
