"""Fault injection with real processes: kill -9 at random points of runs' lives,
SIGTERM with 50 misbehaving runs, garbage on the spool and the socket."""

from __future__ import annotations

import json
import random
import signal
import socket
import time
import uuid
from pathlib import Path

import journal_kit
from daemon_kit import count_events, events, header, start_daemon, tagged, task, write_config
from factoryd.service.control import ControlError, call
from proc_kit import wait_for

KILL_POINTS = ("before_start", "after_spawn", "mid_run", "exit_handling")


def _marker_code(marks: Path) -> str:
    return (
        "import os, random, time\n"
        f"path = {str(marks)!r} + '/' + os.environ['FACTORYD_TASK']\n"
        "with open(path, 'a') as f: f.write('start\\n')\n"
        "time.sleep(random.uniform(0.2, 2.5))\n"
        "with open(path, 'a') as f: f.write('end\\n')\n"
    )


def _kill_at(point: str, daemon, log: Path, rng: random.Random) -> None:
    """Kill -9 the daemon at one point of its runs' lives (or when nothing is left)."""
    seen = len(events(log))

    def soon(kind: str) -> bool:
        return any(e.get("event") == kind for e in events(log)[seen:])

    if point == "before_start":
        time.sleep(rng.uniform(0.0, 0.15))
    elif point == "after_spawn":
        _poll(lambda: soon("run.started"), 5)
    elif point == "mid_run":
        time.sleep(rng.uniform(0.3, 1.2))
    else:
        _poll(lambda: soon("run.finished"), 5)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=10)


def _poll(predicate, timeout: float) -> bool:
    """Like wait_for, but a quiet daemon (every job done) is not an error here."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_kill_minus_nine_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    tag = uuid.uuid4().hex
    marks = tmp_path / "marks"
    marks.mkdir()
    names = [f"job{i:02}" for i in range(24)]
    text = header(tmp_path, max_concurrent=8)
    for name in names:
        text += task(
            name, _marker_code(marks), kind="oneshot", restart="on-failure", env={"TEST_TAG": tag}
        )
    config = write_config(tmp_path, text)
    for round_no in range(20):
        log = tmp_path / f"round{round_no:02}.log"
        daemon = start_daemon(config, log)
        try:
            _kill_at(KILL_POINTS[round_no % 4], daemon, log, rng)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    # A last, clean daemon finishes whatever is left.
    log = tmp_path / "final.log"
    final = start_daemon(config, log)
    sock = tmp_path / "state" / "control.sock"
    try:

        def finished() -> bool:
            try:
                status = call(sock, {"op": "status"})
            except ControlError:  # the previous daemon's socket file, until ours binds
                return False
            return all(t["phase"] == "succeeded" for t in status["tasks"])

        wait_for(finished, timeout=60, what="every job to succeed")
        dump = call(sock, {"op": "state_dump"})
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=30) == 0
    finally:
        if final.poll() is None:
            final.kill()
    for name in names:
        lines = (marks / name).read_text().split()
        assert lines == ["start", "end"], (name, lines)  # ran once: not lost, not twice
    assert tagged(tag) == []  # no orphans
    assert dump["reservations"] == []  # no leaked holds
    outcomes = journal_kit.run_outcomes(tmp_path / "state" / "journal.db")
    started = [o for _, _, o in outcomes if o not in ("lost",)]
    assert len(started) == len(names)  # one real run per job; lost ones never ran
    # Each run that ran is charged exactly once. The lost ones here all died
    # between their journal record and their spawn (no reboot, no systemd), so
    # nothing ran and their holds were rolled back.
    assert dump["pools"]["local"]["used"] == len(started)


def test_sigterm_with_fifty_misbehaving_runs(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    behaviours = {
        "ignore": (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(600)"
        ),
        "setsid": (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
            "    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\n"
            "print('up', flush=True)\ntime.sleep(600)"
        ),
        "quick": "print('bye')",
        "flood": "import sys\nwhile True:\n    sys.stdout.write('{\"x\": 1}\\n' * 1000)",
        "plain": "import time; print('up', flush=True); time.sleep(600)",
    }
    text = header(tmp_path, max_concurrent=60, run_log_max_bytes="256KiB")
    kinds = list(behaviours)
    for i in range(50):
        kind = kinds[i % len(kinds)]
        text += task(
            f"{kind}{i:02}",
            behaviours[kind],
            stop_grace="2s",
            env={"TEST_TAG": tag},
            backoff={"initial": "50ms", "max": "200ms"},
            max_restarts=1000,
        )
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    try:
        wait_for(
            lambda: count_events(log, "run.started") >= 50,
            timeout=60,
            what="50 runs started",
        )
        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=2 + 5)
        elapsed = time.monotonic() - t0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert code == 0 and elapsed < 2 + 5
    wait_for(lambda: tagged(tag) == [], timeout=5, what="nothing left")


def test_spool_and_socket_garbage_is_rejected_and_the_daemon_lives(tmp_path: Path) -> None:
    rng = random.Random(7)
    text = header(tmp_path) + task("idle", "import time; time.sleep(600)")
    text += '[[templates]]\nname = "t"\nkind = "oneshot"\nargv = ["true"]\n'
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    sock = tmp_path / "state" / "control.sock"
    spool = tmp_path / "state" / "spool"
    try:
        # The socket file appears at bind(), a moment before listen().
        wait_for(lambda: "control.listening" in log.read_text(), timeout=15, what="daemon up")
        wait_for(lambda: spool.exists(), timeout=15, what="spool")
        payloads = [
            bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 4000))) for _ in range(40)
        ]
        payloads += [
            b"{}\n",
            b'{"op": null}\n',
            b'{"op": "submit", "template": 7}\n',
            b'{"op": "submit", "spec": {"argv": "rm -rf /"}}\n',
            b'{"op": "cancel"}\n',
            b'{"op": "reset", "task": ["x"]}\n',
            b"\n" * 5000,
            json.dumps({"op": "status", "x": "\ud800"}).encode(),
        ]
        for payload in payloads:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(15)
                s.connect(str(sock))
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                raw = s.recv(1 << 20)
            reply = json.loads(raw) if raw else {"ok": False}
            if payload.startswith(b'{"op": "status"'):
                continue
            assert reply["ok"] is False
        for i in range(30):
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 500)))
            (spool / f"junk{i:02}.toml").write_bytes(data)
        wait_for(
            lambda: len(list((spool / "rejected").glob("*.error"))) == 30,
            timeout=30,
            what="every junk file quarantined",
        )
        assert daemon.poll() is None
        assert call(sock, {"op": "status"})["daemon"]["pid"] == daemon.pid
        ok = call(sock, {"op": "submit", "template": "t"})
        assert ok["id"].startswith("s-")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
