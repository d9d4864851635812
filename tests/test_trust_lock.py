"""One daemon per state dir, and start-up checks that refuse before touching anything.

Real daemons on a real state dir: a second one (started later, or at the
same instant) must exit 1 at once, naming the dir and the holder's pid, and
leave the first one's runs, socket and journal as they were; a daemon that
cannot bind its metrics port or use its state dir or journal must say so
in one line and exit 1 before it adopts or spawns anything.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from daemon_kit import ROOT, count_events, header, start_daemon, tagged, task, write_config
from factoryd.service import lock
from factoryd.service.control import ControlError, call
from proc_kit import wait_for

SLEEPER = "import time; time.sleep(600)"


def _run(config: Path, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "factoryd", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _answers(sock: Path, pid: int) -> bool:
    try:
        return call(sock, {"op": "status"})["daemon"]["pid"] == pid
    except ControlError:
        return False


def _runs(state: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT id, state, pid FROM runs ORDER BY id").fetchall()


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def test_a_second_daemon_is_refused_and_changes_nothing_of_the_first(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    text = header(tmp_path) + task("svc", SLEEPER, env={"TEST_TAG": tag})
    config = write_config(tmp_path, text)
    state = tmp_path / "state"
    first = start_daemon(config, tmp_path / "first.log")
    try:
        wait_for(lambda: len(tagged(tag)) == 1, timeout=30, what="the first daemon's run")
        wait_for(lambda: (state / "control.sock").exists(), timeout=10, what="socket")
        run_pid = tagged(tag)[0].pid
        sock_inode = (state / "control.sock").stat().st_ino
        wait_for(
            lambda: [r[1:] for r in _runs(state)] == [("running", run_pid)],
            timeout=10,
            what="the run journaled as running",
        )
        journal = _runs(state)
        refused = 0
        for _ in range(2):
            t0 = time.monotonic()
            second = _run(config)
            elapsed = time.monotonic() - t0
            assert second.returncode == 1
            line = _one_line(second.stderr)
            assert str(state) in line and f"pid {first.pid}" in line, line
            assert elapsed < 3.0  # the interpreter's start included; the refusal is at once
            refused += 1
        assert refused == 2
        assert [p.pid for p in tagged(tag)] == [run_pid]  # not adopted, not killed
        assert (state / "control.sock").stat().st_ino == sock_inode  # not taken over
        assert _runs(state) == journal  # no run recorded as lost, adopted or added
        assert call(state / "control.sock", {"op": "status"})["daemon"]["pid"] == first.pid
    finally:
        _stop(first)
    wait_for(lambda: tagged(tag) == [], timeout=10, what="the run stopped with its daemon")


def test_the_lock_is_freed_by_kill_minus_nine(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path))
    first = start_daemon(config, tmp_path / "first.log")
    try:
        wait_for(
            lambda: count_events(tmp_path / "first.log", "control.listening") == 1,
            timeout=30,
            what="first daemon up",
        )
        first.kill()
        first.wait(timeout=10)
    finally:
        _stop(first)
    second = start_daemon(config, tmp_path / "second.log")
    try:
        wait_for(
            lambda: count_events(tmp_path / "second.log", "control.listening") == 1,
            timeout=30,
            what="the next daemon takes the dir",
        )
    finally:
        _stop(second)
    assert second.returncode == 0


def test_daemons_started_at_the_same_instant_exactly_one_runs(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path))
    rounds, per_round = 3, 3
    winners = []
    for round_no in range(rounds):
        logs = [tmp_path / f"r{round_no}-{i}.log" for i in range(per_round)]
        daemons = [start_daemon(config, log) for log in logs]
        try:
            wait_for(
                lambda ds=daemons: sum(d.poll() is not None for d in ds) == per_round - 1,
                timeout=30,
                what="all but one to give up",
            )
            live = [d for d in daemons if d.poll() is None]
            assert len(live) == 1
            for d, log in zip(daemons, logs, strict=True):
                if d is not live[0]:
                    assert d.returncode == 1
                    text = log.read_text()
                    assert "in use by another factoryd" in text and "Traceback" not in text
            wait_for(
                lambda winner=live[0]: _answers(tmp_path / "state" / "control.sock", winner.pid),
                timeout=30,
                what="the winner answers",
            )
            winners.append(live[0].pid)
        finally:
            for d in daemons:
                _stop(d)
        assert all(d.returncode in (0, 1) for d in daemons)
    assert len(winners) == rounds


def test_the_lock_primitive_admits_one_of_many_racing_processes(tmp_path: Path) -> None:
    """Forked racers, released by one pipe write, many times: one holder each
    time (the holder keeps the lock until every racer has had its try)."""
    for round_no in range(30):
        state = tmp_path / f"s{round_no}"
        state.mkdir()
        go_r, go_w = os.pipe()
        said_r, said_w = os.pipe()
        done_r, done_w = os.pipe()
        children = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    for fd in (go_w, said_r, done_w):
                        os.close(fd)
                    os.read(go_r, 1)
                    try:
                        held = lock.acquire(state)
                    except lock.StateDirLocked:
                        os.write(said_w, b"0")
                    else:
                        os.write(said_w, b"1")
                        os.read(done_r, 1)  # until the parent has every answer
                        held.release()
                finally:
                    os._exit(0)
            children.append(pid)
        for fd in (go_r, said_w, done_r):
            os.close(fd)
        os.write(go_w, b"go!!")
        os.close(go_w)
        said = b""
        while len(said) < 4:
            chunk = os.read(said_r, 4)
            assert chunk, said
            said += chunk
        os.close(done_w)
        os.close(said_r)
        for pid in children:
            os.waitpid(pid, 0)
        assert sorted(said) == sorted(b"0001"), said


def test_metrics_port_in_use_is_refused_before_any_adoption_or_spawn(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = header(tmp_path, metrics_listen=f"127.0.0.1:{port}")
        config = write_config(tmp_path, text + task("svc", SLEEPER, env={"TEST_TAG": tag}))
        done = _run(config)
    line = _one_line(done.stderr)
    assert done.returncode == 1
    assert "metrics_listen" in line and "in use" in line, line
    assert tagged(tag) == []
    assert not (tmp_path / "state" / "journal.db").exists()  # not even opened


def _config_with(tmp_path: Path, **daemon: str) -> Path:
    return write_config(tmp_path, header(tmp_path, **daemon))


def test_state_dir_that_cannot_be_created_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    done = _run(_config_with(tmp_path, state_dir=str(tmp_path / "afile" / "state")))
    assert done.returncode == 1
    assert "state_dir" in _one_line(done.stderr)


def test_read_only_state_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr!r}")
    try:
        done = _run(_config_with(tmp_path, state_dir=str(ro)))
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert "state_dir" in line and "not writable" in line, line


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
def test_a_journal_that_cannot_be_opened_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.db"
    if kind == "directory":
        journal.mkdir()
    elif kind == "fifo":
        os.mkfifo(journal)
    else:
        journal.symlink_to("/dev/zero")
    done = _run(_config_with(tmp_path))
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert str(journal) in line, line
