"""What a run leader starts with, through the spawn helper or Popen on the loop;
and what happens when the helper fails.

Each test starts a real process and has it report, from /proc, what it was
given: descriptors, session, directory, environment, signal state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from daemon_kit import header, running, until
from factoryd.core.lifecycle import TaskPhase
from factoryd.proc import process, spawner
from factoryd.proc.spawner import Spawner
from factoryd.proc.spawnlog import SpawnLog
from factoryd.proc.tree import become_subreaper

pytestmark = pytest.mark.anyio

REPORT = r"""
import json, os, stat, sys
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        continue  # the directory listing's own descriptor, already closed
    fds[name] = target
status = dict(line.split(":\t", 1) for line in open("/proc/self/status") if ":\t" in line)
print(json.dumps({
    "fds": fds,
    "fifo": sorted(int(fd) for fd in fds if stat.S_ISFIFO(os.fstat(int(fd)).st_mode)),
    "stdin": sys.stdin.read(),
    "sid_is_pid": os.getsid(0) == os.getpid(),
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "blocked": status["SigBlk"].strip(),
}))
"""


@pytest.fixture(params=["helper", "popen"])
async def helper(request: pytest.FixtureRequest) -> AsyncIterator[Spawner | None]:
    if request.param == "popen":
        yield None
        return
    spawner = Spawner()
    spawner.start()
    assert spawner.available, spawner.failed
    try:
        yield spawner
    finally:
        spawner.close()


async def _exit_code(child: process.Child) -> int | None:
    """Wait (polling with a deadline) for the leader's exit as the runner sees it."""
    with anyio.fail_after(10):
        while True:
            done, code = child.poll()
            if done:
                return code
            await anyio.sleep(0.005)


async def _run(
    helper: Spawner | None, tmp_path: Path, argv: list[str], stdin_path: str | None = None
) -> tuple[dict[str, object], tuple[int, int]]:
    child = await process.start(
        helper,
        argv,
        cwd=str(tmp_path),
        env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
        stdin_path=stdin_path,
    )
    try:
        assert child.out_fd is not None
        os.set_blocking(child.out_fd, True)
        out = b""
        while chunk := os.read(child.out_fd, 65536):
            out += chunk
        assert await _exit_code(child) == 0
        assert child.leader_fds is not None
        return json.loads(out), child.leader_fds
    finally:
        child.close()


async def test_the_leader_gets_its_pipes_its_read_ends_and_nothing_else(
    tmp_path: Path, helper: Spawner | None
) -> None:
    report, (out_fd, err_fd) = await _run(helper, tmp_path, [sys.executable, "-c", REPORT])
    fds = report["fds"]
    assert isinstance(fds, dict)
    assert sorted(map(int, fds)) == sorted([0, 1, 2, out_fd, err_fd]), fds
    assert fds["0"] == "/dev/null"
    assert report["fifo"] == sorted([1, 2, out_fd, err_fd])
    # The leader holds the read ends of its own output pipes.
    assert fds["1"] == fds[str(out_fd)] and fds["2"] == fds[str(err_fd)]


async def test_the_leader_leads_a_session_in_its_directory_with_only_its_environment(
    tmp_path: Path, helper: Spawner | None
) -> None:
    report, _ = await _run(helper, tmp_path, [sys.executable, "-c", REPORT])
    assert report["sid_is_pid"] is True
    assert report["cwd"] == str(tmp_path)
    env = report["env"]
    assert isinstance(env, dict)
    assert env.get("ONLY") == "this" and "HOME" not in env
    assert report["blocked"] == "0000000000000000"


async def test_stdin_comes_from_the_given_file(tmp_path: Path, helper: Spawner | None) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("do the thing")
    report, _ = await _run(helper, tmp_path, [sys.executable, "-c", REPORT], str(prompt))
    assert report["stdin"] == "do the thing"


async def test_each_failure_is_named(tmp_path: Path, helper: Spawner | None) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    cases = [
        (["true"], str(tmp_path / "gone"), None, "workdir"),
        (["no-such-program-here"], str(tmp_path), None, "executable not found"),
        (["true"], str(tmp_path), str(tmp_path / "gone.txt"), "stdin"),
    ]
    for argv, cwd, stdin_path, reason in cases:
        with pytest.raises(process.SpawnError, match=reason):
            await process.start(helper, argv, cwd=cwd, env=env, stdin_path=stdin_path)


async def test_exit_statuses_and_signals_come_back(tmp_path: Path, helper: Spawner | None) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    failing = await process.start(helper, ["sh", "-c", "exit 3"], cwd=str(tmp_path), env=env)
    assert await _exit_code(failing) == 3
    failing.close()
    sleeper = await process.start(helper, ["sleep", "30"], cwd=str(tmp_path), env=env)
    os.killpg(sleeper.pid, 9)
    assert await _exit_code(sleeper) == -9
    sleeper.close()


async def test_leaders_ending_together_each_get_their_own_status(
    tmp_path: Path, helper: Spawner | None
) -> None:
    # Eight leaders wait on one fifo and end in the same instant when it opens:
    # their SIGCHLDs merge, and the helper reports them in one message.
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR)  # a writer from the start: no reader's open blocks
    env = {"PATH": "/usr/bin:/bin"}
    children = [
        await process.start(
            helper, ["sh", "-c", f"read x < {fifo}; exit {i}"], cwd=str(tmp_path), env=env
        )
        for i in range(8)
    ]
    os.write(held, b"\n" * 8)  # one line each (sh reads a byte at a time from a fifo)
    try:
        assert [await _exit_code(child) for child in children] == list(range(8))
    finally:
        os.close(held)  # only now: the last descriptor's close discards unread lines
    for child in children:
        child.close()


async def test_sigpipe_is_back_to_its_default_in_the_leader(
    tmp_path: Path, helper: Spawner | None
) -> None:
    # A shell reports what it inherited (Python would reset SIGPIPE itself).
    child = await process.start(
        helper, ["sh", "-c", "grep SigIgn /proc/$$/status"], cwd=str(tmp_path), env={}
    )
    assert child.out_fd is not None
    os.set_blocking(child.out_fd, True)
    line = os.read(child.out_fd, 4096).decode()
    await _exit_code(child)
    child.close()
    ignored = int(line.split()[1], 16)
    assert not ignored & (1 << (13 - 1)), line  # SIGPIPE
    assert not ignored & (1 << (25 - 1)), line  # SIGXFSZ


async def test_a_dead_helper_hands_its_leaders_over_and_spawns_fall_back(
    tmp_path: Path,
) -> None:
    assert become_subreaper()  # as the daemon is: orphans come to us
    spawner = Spawner()
    spawner.on_gone = process.LEADERS.update  # as the reconciler wires it
    spawner.start()
    try:
        env = {"PATH": "/usr/bin:/bin"}
        running = await process.start(spawner, ["sleep", "30"], cwd=str(tmp_path), env=env)
        assert spawner.pid is not None
        os.kill(spawner.pid, 9)
        with anyio.fail_after(10):  # the loop hears of the death through the socket
            while spawner.available:
                await anyio.sleep(0.01)
        # The leader was re-parented to us, counts as a leader for the sweeps
        # (which would otherwise reap it as an orphan), its status is still collected...
        assert running.pid in process.LEADERS
        os.killpg(running.pid, 15)
        assert await _exit_code(running) == -15
        running.close()
        # ...and new leaders start through Popen.
        later = await process.start(spawner, ["sh", "-c", "exit 4"], cwd=str(tmp_path), env=env)
        assert later.popen is not None and later.helper is None
        assert await _exit_code(later) == 4
        later.close()
    finally:
        spawner.close()


async def test_the_helper_notes_the_spawn_before_it_answers(
    tmp_path: Path, helper: Spawner | None
) -> None:
    from factoryd.proc.spawnlog import Spawned, SpawnLog, read_spawn_log

    log = SpawnLog(tmp_path / "runs" / "spawns.log")  # its directory: made by the first line
    child = await process.start(
        helper, ["true"], cwd=str(tmp_path), env={"PATH": "/usr/bin:/bin"}, record=("r1", log)
    )
    await _exit_code(child)
    child.close()
    log.close()
    assert read_spawn_log(log.path) == {"r1": Spawned(child.pid, child.leader_fds)}


def _impatient_helper(monkeypatch: pytest.MonkeyPatch, seconds: float) -> tuple[Spawner, int]:
    """A started helper (and its pid) whose spawns fail after `seconds` unanswered."""
    monkeypatch.setattr(spawner, "REPLY_TIMEOUT", seconds)
    helper = Spawner()
    helper.start()
    assert helper.pid is not None
    return helper, helper.pid


async def test_a_spawn_left_unanswered_fails_and_its_late_leader_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper, pid = _impatient_helper(monkeypatch, 0.3)
    spawns = SpawnLog(tmp_path / "spawns.log")
    os.kill(pid, signal.SIGSTOP)  # a helper stuck (say, on a hung mount)
    try:
        with pytest.raises(process.SpawnError, match="no answer from the spawn helper"):
            await process.start(
                helper,
                ["sleep", "30"],
                cwd=str(tmp_path),
                env={"PATH": "/usr/bin:/bin"},
                record=("late-run", spawns),
            )
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        # Resumed, the helper starts the leader, notes it in the spawn log and
        # answers; nobody waits for that answer any more, so the leader is killed
        # rather than left without an owner.
        with anyio.fail_after(10):
            while not spawns.path.exists() or not spawns.path.read_bytes().endswith(b"\n"):
                await anyio.sleep(0.01)
            run_id, pid, *_ = spawns.path.read_text().split()
            assert run_id == "late-run"
            while process.group_alive(int(pid)):
                await anyio.sleep(0.01)
        assert helper.available  # the helper itself carries on
    finally:
        helper.close()


def _stuck_helper(monkeypatch: pytest.MonkeyPatch, seconds: float) -> tuple[Spawner, int]:
    """`_impatient_helper`, stopped (SIGSTOP) before it gets anything: the caller
    sends it SIGCONT when done."""
    helper, pid = _impatient_helper(monkeypatch, seconds)
    os.kill(pid, signal.SIGSTOP)
    return helper, pid


async def _failed_spawn(helper: Spawner, cwd: Path) -> str:
    """Start `true` through a helper that will not answer; the spawn's error."""
    with pytest.raises(process.SpawnError) as caught:
        await process.start(helper, ["true"], cwd=str(cwd), env={"PATH": "/bin"})
    return str(caught.value)


async def test_one_timer_keeps_every_deadline_and_a_later_spawn_gets_its_full_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadlines of spawns in flight share one loop timer, set at the oldest.
    A spawn answered in time leaves that timer behind; a spawn sent later must
    still get its whole REPLY_TIMEOUT, not fail when the first one's deadline comes."""
    helper, pid = _impatient_helper(monkeypatch, 1.0)
    now = asyncio.get_running_loop().time
    try:
        first = await process.start(helper, ["true"], cwd=str(tmp_path), env={"PATH": "/bin"})
        assert await _exit_code(first) == 0
        first.close()
        assert helper._sweeper is not None and helper._deadlines == {}
        await anyio.sleep(0.6)  # the second request is sent 0.6 s after the first
        os.kill(pid, signal.SIGSTOP)
        sent = now()
        try:
            assert "no answer from the spawn helper" in await _failed_spawn(helper, tmp_path)
            waited = now() - sent
        finally:
            os.kill(pid, signal.SIGCONT)
        assert 0.95 <= waited < 5, waited  # its own second, not the 0.4 s left of the first
        for _ in range(20):
            child = await process.start(helper, ["true"], cwd=str(tmp_path), env={"PATH": "/bin"})
            assert await _exit_code(child) == 0
            child.close()
        timers = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert sum(h._callback == helper._sweep for h in timers) <= 1
    finally:
        helper.close()


async def test_a_burst_of_spawns_larger_than_the_socket_waits_for_the_helper(
    tmp_path: Path,
) -> None:
    # 300 spawns at once with 8 KiB environments: far more than the socket holds.
    # The rest waits for the helper to read (backpressure); none fails, none is
    # started twice, the helper stays in use, every status comes back.
    helper = Spawner()
    helper.start()
    env = {"PATH": "/usr/bin:/bin", "BULK": "x" * 8192}
    children: list[process.Child] = []

    async def one(i: int) -> None:
        children.append(
            await process.start(helper, ["sh", "-c", f"exit {i % 7}"], cwd=str(tmp_path), env=env)
        )

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(one, i)
        assert helper.available, helper.failed
        assert len(children) == 300 and all(c.helper is helper for c in children)
        codes = sorted([await _exit_code(c) for c in children])
        assert codes == sorted(i % 7 for i in range(300))
    finally:
        for child in children:
            child.close()
        helper.close()


def test_the_helper_starts_nothing_the_daemon_gave_up_on(tmp_path: Path) -> None:
    # Requests queued in the socket when the daemon closes its end (it has
    # failed those spawns and may retry them) must not start: the helper exits.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(spawner.HELPER), str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        for i in range(3):
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            request = {
                "id": i,
                "argv": ["touch", str(tmp_path / f"started-{i}")],
                "env": {"PATH": "/usr/bin:/bin"},
                "cwd": str(tmp_path),
                "stdin": None,
            }
            socket.send_fds(ours, [json.dumps(request).encode()], [out_w, err_w, out_r, err_r])
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
        ours.close()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=10) == 0
    assert list(tmp_path.iterdir()) == []


async def test_a_daemon_starting_300_runs_at_once_runs_each_exactly_once(tmp_path: Path) -> None:
    # The reconciler-level view of the same burst: every task's first start
    # succeeds (no spawn taken for failed and retried, which could run twice).
    text = header(tmp_path, max_concurrent=300)
    for i in range(300):
        text += f'[[tasks]]\nname = "t{i}"\nkind = "oneshot"\nargv = ["true"]\n\n'
    async with running(tmp_path, text) as rec:
        done = (TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.GAVE_UP)
        try:
            await until(
                lambda: all(rt.phase in done for rt in rec.tasks.values()),
                timeout=120,  # 2 s alone; a deadline, not a wait (once over 60 s in a full run)
                what="300 one-shot runs to finish",
            )
        except AssertionError as exc:  # say where the stragglers stand, to find out why
            left = Counter(f"{rt.phase}: {rt.reason}" for rt in rec.tasks.values())
            raise AssertionError(f"{exc}; {len(rec.runs)} runs alive; {dict(left)}") from None
        assert {(rt.runs, rt.last_outcome) for rt in rec.tasks.values()} == {(1, "succeeded")}
        assert rec.spawner.available, rec.spawner.failed


def test_exit_reports_fit_the_daemons_receive_buffer() -> None:
    # However many leaders end in one SIGCHLD round, each report stays well
    # under the 64 KiB the daemon reads per datagram, and none is lost.
    from factoryd.proc import spawnhelper

    ended = [[4_000_000 + i, -9] for i in range(5000)]
    messages = spawnhelper.exit_messages(ended)
    assert all(len(m) < spawner.RECV_MAX // 2 for m in messages)
    assert [e for m in messages for e in json.loads(m)["exits"]] == ended
    assert spawnhelper.exit_messages([]) == []


async def test_spawns_stuck_behind_a_stopped_helper_expire_and_none_starts_unowned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopped helper, 100 spawns with 8 KiB environments: some reach its
    # socket, the rest wait in the outbox. All expire. Once it resumes, the ones
    # it had received start and are killed as late answers; the ones still in
    # the outbox are never sent (their descriptors are closed by then).
    helper, pid = _impatient_helper(monkeypatch, 0.5)
    spawns = SpawnLog(tmp_path / "spawns.log")
    env = {"PATH": "/usr/bin:/bin", "BULK": "x" * 8192}
    failures: list[str] = []

    async def one(i: int) -> None:
        try:
            await process.start(
                helper, ["sleep", "30"], cwd=str(tmp_path), env=env, record=(f"r{i}", spawns)
            )
        except process.SpawnError as exc:
            failures.append(str(exc))

    os.kill(pid, signal.SIGSTOP)
    try:
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        assert len(failures) == 100 and all("no answer" in f for f in failures)
        # The helper answers in order: once this spawn is answered, every request
        # it had received before is handled (started, answered, killed).
        monkeypatch.setattr(spawner, "REPLY_TIMEOUT", 60.0)
        env["PATH"] = "/usr/bin:/bin"
        last = await process.start(
            helper, ["true"], cwd=str(tmp_path), env=env, record=("last", spawns)
        )
        lines = [line.split() for line in spawns.path.read_text().splitlines()]
        assert lines[-1][0] == "last"
        started = [int(fields[1]) for fields in lines[:-1]]
        assert 0 < len(started) < 100  # the socket took some, the outbox kept the rest
        with anyio.fail_after(20):
            while any(process.group_alive(pid) for pid in started):
                await anyio.sleep(0.01)
        assert await _exit_code(last) == 0
        last.close()
        assert helper.available
    finally:
        helper.close()


async def test_a_shorter_deadline_set_after_a_longer_one_fails_at_its_own_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared sweep timer sits at the earliest deadline. A spawn whose wait
    # is shorter than one already pending (REPLY_TIMEOUT lowered meanwhile: a
    # test, a future setting) must fail at ITS deadline, not the older one's.
    helper, pid = _stuck_helper(monkeypatch, 30.0)
    loop_time = asyncio.get_running_loop().time
    try:
        async with anyio.create_task_group() as tg:
            failures: list[tuple[float, str]] = []

            async def doomed() -> None:
                error = await _failed_spawn(helper, tmp_path)
                failures.append((loop_time(), error))

            tg.start_soon(doomed)  # deadline in 30 s
            with anyio.fail_after(5):
                while len(helper._deadlines) < 1:
                    await anyio.sleep(0.005)
            monkeypatch.setattr(spawner, "REPLY_TIMEOUT", 0.3)
            sent = loop_time()
            tg.start_soon(doomed)  # deadline in 0.3 s
            try:
                with anyio.fail_after(5):
                    while not failures:
                        await anyio.sleep(0.01)
                assert "no answer from the spawn helper in 0.3s" in failures[0][1]
                assert 0.29 <= failures[0][0] - sent < 2.0, failures[0][0] - sent
                assert len(helper._deadlines) == 1  # the 30 s one still waits
            finally:
                helper.close()  # fails the shielded 30 s spawn at once
    finally:
        with contextlib.suppress(ProcessLookupError):  # close() killed it
            os.kill(pid, signal.SIGCONT)
        helper.close()
    assert len(failures) == 2 and "closed" in failures[1][1]


async def test_staggered_spawns_to_a_stopped_helper_each_fail_at_their_own_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three spawns sent 0.2 s apart to a helper stuck from the start: each fails
    # REPLY_TIMEOUT after it was sent, not sooner, not much later.
    helper, pid = _stuck_helper(monkeypatch, 0.5)
    loop_time = asyncio.get_running_loop().time
    waits: list[float] = []

    async def doomed() -> None:
        sent = loop_time()
        assert "no answer" in await _failed_spawn(helper, tmp_path)
        waits.append(loop_time() - sent)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(doomed)
                await anyio.sleep(0.2)
        assert len(waits) == 3
        assert all(0.49 <= w < 1.0 for w in waits), waits
        assert helper._deadlines == {} and helper.available
    finally:
        os.kill(pid, signal.SIGCONT)
        helper.close()


async def test_a_helper_killed_with_spawns_pending_fails_them_at_once_not_at_their_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stuck, then SIGKILLed with three spawns sent and a 30 s deadline each: the
    # spawns fail when the helper's socket closes, the deadlines leave with them,
    # and close() leaves no sweep timer behind on the loop.
    helper, pid = _impatient_helper(monkeypatch, 30.0)
    loop = asyncio.get_running_loop()
    os.kill(pid, signal.SIGSTOP)
    errors: list[str] = []

    async def doomed() -> None:
        with pytest.raises(process.SpawnError) as caught:
            await process.start(helper, ["true"], cwd=str(tmp_path), env={"PATH": "/bin"})
        errors.append(str(caught.value))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(doomed)
            with anyio.fail_after(5):
                while len(helper._deadlines) < 3:
                    await anyio.sleep(0.005)
            killed = loop.time()
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(5):
                while len(errors) < 3:
                    await anyio.sleep(0.01)
        assert loop.time() - killed < 3
        assert all("spawn helper" in e and "no answer" not in e for e in errors), errors
        assert helper._deadlines == {} and not helper.available
    finally:
        helper.close()
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert not any(h._callback == helper._sweep for h in timers)
