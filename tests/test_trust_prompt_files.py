"""Hostile `prompt_file`s fail their own run, never the daemon or its other runs.

A FIFO (and a symlink to one), /dev/zero, a 1 GB sparse file, a missing
file, and a file over `prompt_max_bytes`: each ends in `spawn_failed`
naming the file, with the task's backoff, and the daemon's memory does not
grow (the cap is checked before a byte is read). A healthy service run
beside them keeps its one run; a good prompt file is read and fed.
Before, a FIFO or /dev/zero hung or killed the daemon and the sparse file
took its RSS to 2 GB, all on the loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import psutil
import pytest
from daemon_kit import header, running, task, until
from factoryd.config.loader import load_config
from factoryd.core.lifecycle import TaskPhase
from factoryd.run.promptfile import PromptFileError, read_prompt_file

pytestmark = pytest.mark.anyio

SERVICE = "import time\nwhile True: time.sleep(1)"


def _hostile(tmp_path: Path) -> dict[str, str]:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "fifo-link").symlink_to(tmp_path / "fifo")
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(1 << 30)
    (tmp_path / "big").write_text("x" * 5000)
    (tmp_path / "nul").write_bytes(b"a\0b")
    return {
        "fifo": str(tmp_path / "fifo"),
        "fifo_link": str(tmp_path / "fifo-link"),
        "zero": "/dev/zero",
        "sparse": str(tmp_path / "sparse"),
        "missing": str(tmp_path / "missing"),
        "big": str(tmp_path / "big"),
        "nul": str(tmp_path / "nul"),
        "dir": str(tmp_path),
    }


async def test_bad_prompt_files_fail_their_run_only(tmp_path: Path) -> None:
    bad = _hostile(tmp_path)
    (tmp_path / "good").write_text("hello prompt")
    text = header(tmp_path, max_concurrent=20, prompt_max_bytes="4KiB")
    text += task("svc", SERVICE)
    for name, path in bad.items():
        text += task(name, "print('ran')", kind="oneshot", prompt_file=path)
    text += task(
        "good",
        "import sys; print('got', sys.stdin.read())",
        kind="oneshot",
        prompt_file=str(tmp_path / "good"),
        stdin_prompt=True,
    )
    me = psutil.Process()
    rss0 = me.memory_info().rss
    with anyio.fail_after(30):
        async with running(tmp_path, text) as rec:
            tasks = rec.tasks
            await until(lambda: tasks["svc"].run is not None, what="service running")
            svc_run = tasks["svc"].run
            await until(
                lambda: all(tasks[n].last_outcome == "spawn_failed" for n in bad),
                what="every bad prompt file failed its run",
            )
            await until(lambda: tasks["good"].phase is TaskPhase.SUCCEEDED, what="good ran")
            for name, path in bad.items():
                rt = tasks[name]
                assert rt.phase in (TaskPhase.BACKING_OFF, TaskPhase.GAVE_UP), (name, rt.reason)
                assert path in rt.reason, (name, rt.reason)
                assert rt.runs == 0  # no arm was chosen, no process started
            assert "FIFO" in tasks["fifo"].reason and "FIFO" in tasks["fifo_link"].reason
            assert "character device" in tasks["zero"].reason
            assert "over prompt_max_bytes" in tasks["sparse"].reason
            assert "No such file" in tasks["missing"].reason
            assert tasks["svc"].run == svc_run and tasks["svc"].runs == 1
            assert rec.runs[svc_run].state == "running"
    logs = list((tmp_path / "logs" / "good").glob("*.log"))
    assert any("got hello prompt" in p.read_text() for p in logs)
    assert me.memory_info().rss - rss0 < 64 << 20  # nothing of the 1 GB was read


def test_the_reader_refuses_before_reading_and_reads_what_fits(tmp_path: Path) -> None:
    bad = _hostile(tmp_path)
    for path in bad.values():
        with pytest.raises(PromptFileError, match="prompt_file " + path):
            read_prompt_file(path, 4096)
    (tmp_path / "ok").write_text("é" * 10)
    assert read_prompt_file(str(tmp_path / "ok"), 20) == "é" * 10
    with pytest.raises(PromptFileError, match="over prompt_max_bytes"):
        read_prompt_file(str(tmp_path / "ok"), 19)


def test_prompt_max_bytes_defaults_to_one_mebibyte(tmp_path: Path) -> None:
    from daemon_kit import write_config

    config = load_config(write_config(tmp_path, header(tmp_path) + task("t", "pass")))
    assert config.daemon.prompt_max_bytes == 1 << 20
