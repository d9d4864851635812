"""One run, real processes: outcomes, timeouts, stalls, escalation, escaped descendants."""

from __future__ import annotations

from pathlib import Path

import pytest
from factoryd.core.outcome import Outcome, StopRequest
from factoryd.proc.tree import become_subreaper
from hypothesis import given, settings
from hypothesis import strategies as st
from proc_kit import processes_with_marker, py, run_to_end, spec, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, scope="module")
def _subreaper() -> None:
    assert become_subreaper()


async def test_exit_zero_succeeds_and_output_is_logged(tmp_path: Path) -> None:
    s = spec(tmp_path, py("print('hello'); import sys; print('oops', file=sys.stderr)"))
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.SUCCEEDED and result.exit_status == 0
    log = s.log.path.read_bytes()
    assert b"hello" in log and b"oops" in log


async def test_a_silent_run_leaves_no_log_file_and_a_chatty_one_does(tmp_path: Path) -> None:
    silent, _ = await run_to_end(spec(tmp_path, ("true",), run_id="quiet"))
    assert silent.outcome is Outcome.SUCCEEDED and not silent.log_kept
    assert not (tmp_path / "quiet.log").exists()
    chatty = spec(tmp_path, py("print('hi')"), run_id="chatty")
    chatty.log.path = tmp_path / "removed-by-an-operator" / "chatty.log"
    result, _ = await run_to_end(chatty)
    assert result.log_kept and result.log_error is None
    assert chatty.log.path.read_bytes() == b"hi\n"  # its directory was made when missing


async def test_an_unwritable_log_loses_the_bytes_not_the_run(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    s = spec(tmp_path, py("print('x' * 100)"))
    s.log.path = tmp_path / "a-file" / "x.log"
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.SUCCEEDED and not result.log_kept
    assert result.bytes_dropped == 101 and result.bytes_logged == 0
    assert result.log_error is not None and "cannot write run log" in result.log_error


async def test_nonzero_exit_fails_with_status(tmp_path: Path) -> None:
    result, _ = await run_to_end(spec(tmp_path, py("raise SystemExit(3)")))
    assert result.outcome is Outcome.FAILED and result.reason == "exit status 3"


async def test_missing_binary_and_bad_workdir_fail_to_spawn(tmp_path: Path) -> None:
    result, _ = await run_to_end(spec(tmp_path, ("/nonexistent/agent", "x")))
    assert result.outcome is Outcome.SPAWN_FAILED
    assert "executable not found: /nonexistent/agent" in result.reason
    s = spec(tmp_path, ("true",), run_id="r2")
    s.cwd = str(tmp_path / "nope")
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.SPAWN_FAILED and "workdir" in result.reason


async def test_timeout_kills_a_sleep(tmp_path: Path) -> None:
    s = spec(tmp_path, ("sleep", "30"), timeout=0.3)
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.TIMED_OUT
    assert 0.3 <= result.duration < 5
    assert not processes_with_marker(s.run_id)


async def test_stall_kills_the_silent_process_but_not_the_chatty_one(tmp_path: Path) -> None:
    import anyio

    chatty = spec(
        tmp_path,
        py("import time\nfor i in range(12):\n    print(i, flush=True); time.sleep(0.1)"),
        run_id="chatty",
        stall_timeout=0.5,
    )
    silent = spec(tmp_path, ("sleep", "30"), run_id="silent", stall_timeout=0.5)
    results = {}

    async def go(s) -> None:
        results[s.run_id] = (await run_to_end(s))[0]

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, chatty)
        tg.start_soon(go, silent)
    assert results["silent"].outcome is Outcome.STALLED
    assert results["chatty"].outcome is Outcome.SUCCEEDED
    assert results["chatty"].duration > results["silent"].duration


async def test_sigterm_ignorer_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"
    )
    s = spec(tmp_path, py(code), stop_grace=0.3)
    result, _ = await run_to_end(s, 0.5, StopRequest(Outcome.CANCELLED, "test"))
    assert result.outcome is Outcome.CANCELLED
    assert result.sigkilled
    assert not processes_with_marker(s.run_id)


async def test_double_forked_setsid_grandchild_is_reaped(tmp_path: Path) -> None:
    # The child forks, the fork calls setsid and forks again, the middle exits:
    # the grandchild is in another session and has lost its parent.
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('forked', flush=True)\ntime.sleep(60)"
    )
    s = spec(tmp_path, py(code), stop_grace=1.0)
    result, _ = await run_to_end(s, 0.5, StopRequest(Outcome.CANCELLED, "test"))
    assert result.outcome is Outcome.CANCELLED
    assert result.orphans_killed >= 1
    assert not processes_with_marker(s.run_id)


async def test_leader_exit_does_not_leave_its_group_behind(tmp_path: Path) -> None:
    code = "import subprocess\nsubprocess.Popen(['sleep', '60'])\nprint('bye')"
    s = spec(tmp_path, py(code))
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.SUCCEEDED
    assert not result.sigkilled  # SIGTERM was enough: its death was seen, not waited out
    assert not processes_with_marker(s.run_id)


async def test_exit_status_is_not_trusted_after_a_kill(tmp_path: Path) -> None:
    # Exits 0 on SIGTERM, as gemini does: still a timeout, not a success.
    code = (
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(60)"
    )
    result, _ = await run_to_end(spec(tmp_path, py(code), timeout=0.3))
    assert result.outcome is Outcome.TIMED_OUT and result.exit_status == 0


async def test_output_beyond_the_cap_is_counted_not_kept(tmp_path: Path) -> None:
    code = "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 9999 + '\\n')"
    s = spec(tmp_path, py(code), log_cap=100_000)
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.bytes_logged == 100_000
    assert result.bytes_dropped == 200 * 10_000 - 100_000
    assert s.log.path.stat().st_size < 100_500


def test_line_splitter_keeps_every_line_across_chunks_and_cuts_long_ones() -> None:
    from factoryd.proc.linesplit import LineSplitter

    s = LineSplitter(max_line=10)
    out = s.feed(b"ab") + s.feed(b"c\nde\n\nfg") + s.feed(b"h\n")
    assert out == [b"abc", b"de", b"", b"fgh"]
    out = s.feed(b"0123456789ABCDEF") + s.feed(b"GH\nok\n")
    assert out == [b"0123456789", b"ok"] and s.truncated == 1
    assert s.feed(b"x" * 25 + b"\ny\n") == [b"x" * 10, b"y"] and s.truncated == 2
    assert s.feed(b"tail") == [] and s.flush() == b"tail"


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"\n")), max_size=12),
    max_line=st.integers(1, 16),
)
def test_line_splitter_blocks_are_the_same_lines_as_feed(
    chunks: list[bytes], max_line: int
) -> None:
    from factoryd.proc.linesplit import LineSplitter

    by_line, by_block = LineSplitter(max_line), LineSplitter(max_line)
    for chunk in chunks:
        lines = by_line.feed(chunk)
        block, count = by_block.feed_block(chunk)
        assert count == len(lines)
        assert (block.split(b"\n") if count else []) == lines
    assert by_block.flush() == by_line.flush()
    assert by_block.truncated == by_line.truncated


def test_start_time_agrees_with_psutil_and_notices_zombies() -> None:
    import subprocess

    import psutil
    from factoryd.proc import proctime
    from factoryd.proc.process import same_process

    child = subprocess.Popen(["sleep", "30"])
    try:
        ours = proctime.start_time(child.pid)
        assert ours is not None
        assert abs(ours - psutil.Process(child.pid).create_time()) < 0.011
        assert same_process(child.pid, ours)
        assert not same_process(child.pid, ours - 5.0)  # a reused pid starts elsewhen
        child.kill()
        wait_for(lambda: proctime.stat_fields(child.pid)[0] == b"Z", 5.0)
        assert not same_process(child.pid, ours)  # dead but not yet reaped
    finally:
        child.kill()
        child.wait()
    assert proctime.start_time(child.pid) is None


async def test_a_flooding_pipe_is_widened_and_a_quiet_one_is_not(tmp_path: Path) -> None:
    import fcntl
    import os

    from factoryd.proc.capture import FLOODING, PIPE_SIZE, PipeReader, RunLog

    async def capacity_after_pumping(payload: bytes) -> int:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.write(w, payload)  # fits in the default 64 KiB: nobody reads yet
        os.close(w)
        counts: list[int] = []
        log = RunLog(tmp_path / f"{len(payload)}.log", 1 << 20)
        await PipeReader(r, log, lambda _block, n: counts.append(n), lambda: None).wait()
        try:
            assert sum(counts) == 1
            return fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
        finally:
            os.close(r)

    assert await capacity_after_pumping(b"hello\n") < PIPE_SIZE
    flood = await capacity_after_pumping(b"x" * (FLOODING + 4096) + b"\n")
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert flood == PIPE_SIZE or limit < PIPE_SIZE
