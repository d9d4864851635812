"""A full disk: the daemon stays up, refuses what it cannot journal, keeps draining
its runs, and resumes by itself when space returns.

State and log dirs on a 4 MiB tmpfs, runs flooding output. While it is
full: submissions are refused with a clear error (never acknowledged), a
spool file stays where it is (unacknowledged), every run keeps running and
writing (its pipe drained, its output counted as dropped, one log event per
run). Then the tmpfs grows, as when an operator frees space: logs are
written again, the spool file is taken, submissions are accepted, every
acknowledged one is in the journal, and SIGTERM leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
from daemon_kit import count_events, events, header, start_daemon, tagged, task, write_config
from factoryd.service.control import ControlError, call
from proc_kit import wait_for

FLOODERS = 4

# Writes as fast as the pipe takes it; every 2,000 lines it bumps a beat file
# outside the small disk, so the test sees that it is never blocked for long.
FLOOD = """
import os, sys
beat = {beats!r} + "/" + os.environ["FACTORYD_TASK"]
n = 0
while True:
    sys.stdout.write("flood line %d of output that fills the disk\\n" % n)
    n += 1
    if n % 2000 == 0:
        sys.stdout.flush()
        with open(beat, "w") as f:
            f.write(str(n))
"""


def _beats(beats: Path) -> dict[str, int]:
    out = {}
    for p in beats.iterdir():
        try:
            out[p.name] = int(p.read_text() or 0)
        except (OSError, ValueError):
            continue
    return out


def _submit(sock: Path) -> tuple[str | None, str | None]:
    try:
        return call(sock, {"op": "submit", "template": "t"})["id"], None
    except ControlError as exc:
        return None, str(exc)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_full_disk_refuses_and_drains_then_resumes_without_a_restart(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    daemon = None
    tag = uuid.uuid4().hex
    try:
        beats = tmp_path / "beats"
        beats.mkdir()
        spool = tmp_path / "spool"
        text = header(
            tmp_path,
            state_dir=str(disk / "state"),
            log_dir=str(disk / "logs"),
            spool_dir=str(spool),
            control_socket=str(tmp_path / "control.sock"),
            run_log_max_bytes="64MiB",
        )
        for i in range(FLOODERS):
            text += task(f"flood{i}", FLOOD.format(beats=str(beats)), env={"TEST_TAG": tag})
        text += '[[templates]]\nname = "t"\nkind = "oneshot"\nargv = ["true"]\n'
        log = tmp_path / "daemon.log"
        sock = tmp_path / "control.sock"
        daemon = start_daemon(write_config(tmp_path, text), log)
        wait_for(lambda: len(tagged(tag)) == FLOODERS, timeout=30, what="flooders up")
        pids = sorted(p.pid for p in tagged(tag))
        wait_for(lambda: _free(disk) < 64 * 1024, timeout=30, what="the disk full")
        wait_for(
            lambda: count_events(log, "run.log_write_failed") >= FLOODERS,
            timeout=15,
            what="every run's log write failing",
        )
        # Full: refused, never acknowledged; the daemon lives.
        acked: list[str] = []
        refusals = []
        for _ in range(10):
            sub_id, error = _submit(sock)
            if sub_id:
                acked.append(sub_id)
            else:
                refusals.append(error)
        assert refusals, "the disk was full, yet every submission was acknowledged"
        assert all("journal could not record it" in r for r in refusals), refusals[:2]
        (spool / "job.toml").write_text('template = "t"\n')
        wait_for(
            lambda: count_events(log, "spool.not_journaled") >= 1, timeout=15, what="spool tried"
        )
        assert (spool / "job.toml").exists()  # not taken, not quarantined
        assert not (spool / "rejected" / "job.toml").exists()
        # The runs keep running and writing: their pipes are drained.
        before = _beats(beats)
        wait_for(
            lambda: all(_beats(beats).get(k, 0) > v + 20_000 for k, v in before.items()),
            timeout=15,
            what="every flooder writing on while the disk is full",
        )
        assert sorted(p.pid for p in tagged(tag)) == pids  # none failed, none orphaned
        assert call(sock, {"op": "status"})["daemon"]["pid"] == daemon.pid
        assert count_events(log, "run.log_write_failed") == FLOODERS  # once per run
        # Space returns.
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        wait_for(
            lambda: count_events(log, "run.log_write_resumed") >= FLOODERS,
            timeout=15,
            what="logs written again",
        )
        wait_for(lambda: not (spool / "job.toml").exists(), timeout=15, what="spool file taken")
        sub_id, error = _submit(sock)
        assert sub_id is not None, error
        acked.append(sub_id)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        wait_for(lambda: tagged(tag) == [], timeout=10, what="no process left")
        with sqlite3.connect(disk / "state" / "journal.db") as db:
            journaled = {r[0] for r in db.execute("SELECT id FROM submissions")}
        assert set(acked) <= journaled  # not one acknowledged submission lost
        finished = [e for e in events(log) if e.get("event") == "run.finished"]
        floods = [e for e in finished if e["task"].startswith("flood")]
        assert len(floods) == FLOODERS
        assert all(e["bytes_dropped"] > 0 for e in floods)  # counted, not silently lost
        print(f"acknowledged while full: {len(acked) - 1}, refused: {len(refusals)}")
        assert "Traceback" not in log.read_text()
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for proc in tagged(tag):
            proc.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)
