"""Never lose work: kill -9 and restart, pid reuse, durable submissions, the spool,
the journal schema, the systemd unit and the notify protocol."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import journal_kit
import psutil
import pytest
from daemon_kit import (
    ROOT,
    count_events,
    events,
    factoryd,
    header,
    require_tool,
    start_daemon,
    tagged,
    task,
    write_config,
)
from factoryd.config.loader import load_config
from factoryd.reconcile.reconciler import Reconciler
from factoryd.reconcile.recovery import recover
from factoryd.service.control import call
from factoryd.state import journal as j
from factoryd.state.journal import Journal
from factoryd.state.schema import JournalError
from proc_kit import wait_for

QUIET = "import time; print('up', flush=True); time.sleep(600)"


def pools_of(dump: dict) -> dict:
    return {name: (p["used"], p["window_start"]) for name, p in dump["pools"].items()}


def holds_of(dump: dict) -> dict:
    return {r["id"]: (r["arm"], r["charges"], r["expires_at"]) for r in dump["reservations"]}


def test_kill_minus_nine_with_twenty_runs_then_restart(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    text = header(tmp_path, max_concurrent=50).replace("limit = 1000000", "limit = 500")
    for i in range(20):
        text += task(f"svc{i:02}", QUIET, env={"TEST_TAG": tag})
    config = write_config(tmp_path, text)
    sock = tmp_path / "state" / "control.sock"
    log1 = tmp_path / "first.log"
    first = start_daemon(config, log1)
    try:
        wait_for(lambda: len(tagged(tag)) == 20, timeout=30, what="20 runs")
        wait_for(
            lambda: count_events(log1, "run.started") == 20,
            timeout=10,
            what="20 pids recorded",
        )
        before = call(sock, {"op": "state_dump"})
        pids = {p.pid for p in tagged(tag)}
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert {p.pid for p in tagged(tag)} == pids  # the agents outlived the daemon
    log2 = tmp_path / "second.log"
    second = start_daemon(config, log2)
    try:
        wait_for(
            lambda: count_events(log2, "recovery.done") > 0,
            timeout=30,
            what="recovery",
        )
        done = next(e for e in events(log2) if e.get("event") == "recovery.done")
        assert done["adopted"] == 20 and done["lost"] == 0, done
        # The killed daemon's socket file is still there until the new one binds.
        wait_for(
            lambda: count_events(log2, "control.listening") > 0,
            timeout=10,
            what="the new daemon's control socket",
        )
        status = call(sock, {"op": "status"})
        phases = [(t["name"], t["phase"], t["runs"], t["reason"]) for t in status["tasks"]]
        assert [p[1] for p in phases] == ["running"] * 20, phases
        assert all(p[2] == 1 for p in phases), phases  # nothing started twice
        assert {p.pid for p in tagged(tag)} == pids  # same processes, no duplicates
        after = call(sock, {"op": "state_dump"})
        assert pools_of(after) == pools_of(before), (before, after)
        assert holds_of(after) == holds_of(before), (before, after)
        assert after["pools"]["local"]["used"] == 0
        assert len(after["reservations"]) == 20
        # Adopted runs are still under control: a stop reaches them.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert tagged(tag) == []
    journal = tmp_path / "state" / "journal.db"
    outcomes = {o for _, _, o in journal_kit.run_outcomes(journal)}
    assert outcomes == {"cancelled"} and journal_kit.count_runs(journal) == 20


def test_a_reused_pid_is_not_adopted(tmp_path: Path) -> None:
    text = header(tmp_path) + task("svc", QUIET, restart="never")
    config = load_config(write_config(tmp_path, text))
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        db = Journal(config.daemon.state_dir / "journal.db")
        started = time.time() - 100
        db.apply_sync(
            [
                j.op_run_intent(
                    "r-old",
                    "svc",
                    "local",
                    started,
                    {
                        "id": "r1",
                        "arm": "local",
                        "task": "svc",
                        "charges": {"local": 1},
                        "created_at": started,
                        "expires_at": started + 7200,
                    },
                    "x.log",
                ),
                # The journal's pid is now someone else's: same number, other start time.
                j.op_run_started(
                    "r-old", stranger.pid, psutil.Process(stranger.pid).create_time() - 50
                ),
            ]
        )
        rec = Reconciler(config, journal=db)
        report = recover(rec, db)
        assert report.adopted == [] and report.ended == ["r-old"]
        assert stranger.poll() is None  # not ours: left alone
        rt = rec.tasks["svc"]
        assert rt.last_outcome == "exit_unknown" and "no daemon watched" in rt.reason
        # The lost run was charged its estimate; its hold is released.
        assert rec.engine.ledger.pools["local"].used == 1
        assert rec.engine.ledger.pools["local"].reserved == 0
        rec.batch.close()
    finally:
        stranger.kill()
        stranger.wait()


def test_submission_survives_a_crash_between_accept_and_start(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    marks = tmp_path / "marks"
    text = header(tmp_path, max_concurrent=1)
    text += task("blocker", "import time; time.sleep(3)", kind="oneshot", env={"TEST_TAG": tag})
    text += (
        '[[templates]]\nname = "mark"\nkind = "oneshot"\n'
        f'argv = ["{sys.executable}", "-c", '
        f"\"open('{marks}', 'a').write('ran\\\\n')\"]\n"
    )
    config = write_config(tmp_path, text)
    sock = tmp_path / "state" / "control.sock"
    log1 = tmp_path / "first.log"
    first = start_daemon(config, log1)
    try:
        wait_for(lambda: len(tagged(tag)) == 1, timeout=30, what="blocker running")
        out = factoryd("submit", "--socket", str(sock), "--template", "mark", "-k", "job-1")
        assert out.returncode == 0, out.stderr
        sub_id = out.stdout.strip()
        status = call(sock, {"op": "status"})
        queued = next(t for t in status["tasks"] if t["name"] == sub_id)
        assert queued["phase"] == "pending" and queued["runs"] == 0
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert not marks.exists()
    log2 = tmp_path / "second.log"
    second = start_daemon(config, log2)
    try:
        wait_for(lambda: marks.exists(), timeout=30, what="the submission to run")
        again = factoryd("submit", "--socket", str(sock), "--template", "mark", "-k", "job-1")
        # "(already submitted)", or "(already submitted; it has ended: succeeded)"
        # if it ran to its end first.
        assert again.stdout.strip().startswith(f"{sub_id} (already submitted")
        wait_for(
            lambda: any(
                e.get("event") == "run.finished" and e.get("task") == sub_id for e in events(log2)
            ),
            timeout=10,
            what="submission finished",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert marks.read_text() == "ran\n"
    journal = tmp_path / "state" / "journal.db"
    assert journal_kit.count_runs(journal, sub_id) == 1
    assert journal_kit.submission_state(journal, sub_id) == "succeeded"


def test_spool_accepts_good_files_and_quarantines_bad_ones(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    text = header(tmp_path) + task("idle", QUIET)
    text += (
        '[[templates]]\nname = "mark"\nkind = "oneshot"\n'
        f"argv = [\"{sys.executable}\", \"-c\", \"open('{marks}', 'a').write('x')\"]\n"
    )
    config = write_config(tmp_path, text)
    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True)
    bad = {
        "bytes.toml": b"\x00\xff\xfe garbage \x81",
        "syntax.toml": b"template = \n",
        "template.toml": b'template = "nope"\n',
        "keys.toml": b'template = "mark"\nset = { colour = "red" }\n',
        "both.toml": b'template = "mark"\nspec = { argv = ["true"] }\n',
    }
    for name, data in bad.items():
        (spool / name).write_bytes(data)
    (spool / ".partial.toml").write_bytes(b"half-written")  # not yet renamed into place
    tmp = spool / "good.toml.tmp"
    tmp.write_text('template = "mark"\n')
    tmp.rename(spool / "good.toml")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        rejected = spool / "rejected"
        wait_for(
            lambda: len(list(rejected.glob("*.error"))) == len(bad),
            timeout=30,
            what="bad files quarantined",
        )
        wait_for(lambda: marks.exists(), timeout=30, what="good file run")
        for name, data in bad.items():
            assert (rejected / name).read_bytes() == data  # never deleted or altered
            assert (rejected / (name + ".error")).read_text().strip()
        assert "invalid UTF-8" in (rejected / "bytes.toml.error").read_text()
        assert "no template named 'nope'" in (rejected / "template.toml.error").read_text()
        assert "colour: unknown key" in (rejected / "keys.toml.error").read_text()
        assert not (spool / "good.toml").exists()
        assert (spool / ".partial.toml").exists()
        assert daemon.poll() is None
        assert call(tmp_path / "state" / "control.sock", {"op": "status"})["daemon"]["pid"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_journal_schema_is_versioned_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    db = Journal(path)
    assert journal_kit.schema_version(path) == j.SCHEMA_VERSION
    db.apply_sync([j.op_pool("p", 5.0, None, None, "", 0)])
    db.close()
    db = Journal(path)  # reopening migrates nothing and keeps data
    assert db.pools()["p"]["used"] == 5.0
    db.close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="schema version 99"):
        Journal(path)
    mode = raw = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_retention_prunes_old_finished_runs(tmp_path: Path) -> None:
    db = Journal(tmp_path / "journal.db")
    now = time.time()
    db.apply_sync(
        [
            j.op_run_intent("old", "t", "a", now - 10 * 86400, None, ""),
            j.op_run_ended("old", now - 9 * 86400, "succeeded", "ok", None),
            j.op_run_intent("new", "t", "a", now - 60, None, ""),
            j.op_run_ended("new", now - 30, "succeeded", "ok", None),
            j.op_run_intent("live", "t", "a", now - 20 * 86400, None, ""),
        ]
    )
    db.apply_sync([j.op_prune(now - 7 * 86400)])
    assert [r[0] for r in journal_kit.run_outcomes(db.path)] == ["live", "new"]


def test_systemd_unit_verifies_and_is_hardened() -> None:
    analyze = require_tool("systemd-analyze")
    unit = ROOT / "systemd" / "factoryd.service"
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in security.stdout.splitlines() if "Overall exposure level" in x)
    exposure = float(line.split(":")[1].split()[0])
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.5
    text = unit.read_text()
    for needle in (
        "Type=notify",
        "KillMode=mixed",
        "Restart=on-failure",
        "WatchdogSec=",
        "StateDirectory=",
        "LogsDirectory=",
        "RuntimeDirectory=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ):
        assert needle in text, needle


def test_notify_protocol_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(notify))
        server.settimeout(10)
        text = header(tmp_path) + task("idle", QUIET)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
        daemon = start_daemon(write_config(tmp_path, text), tmp_path / "daemon.log", env=env)
        got: list[tuple[float, str]] = []
        try:
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                message = server.recv(4096).decode()
                got.append((time.monotonic(), message))
            daemon.send_signal(signal.SIGTERM)
            stop_deadline = time.monotonic() + 10
            while not any("STOPPING=1" in m for _, m in got):
                assert time.monotonic() < stop_deadline
                message = server.recv(4096).decode()
                got.append((time.monotonic(), message))
            assert daemon.wait(timeout=20) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    messages = [m for _, m in got]
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    assert any("STATUS=recovering" in m for m in messages[:ready])
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    assert len(pings) >= 5
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 1.0  # always inside WATCHDOG_USEC
    assert min(gaps) > 0.3  # not a flood: about every half interval
    assert json.dumps(messages).count("STOPPING=1") == 1


def test_adopted_run_keeps_writing_and_its_output_is_collected(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    counter = (
        "import itertools, time\nfor i in itertools.count():\n"
        "    print(f'line {i}', flush=True)\n    time.sleep(0.05)"
    )
    config = write_config(
        tmp_path, header(tmp_path) + task("talker", counter, env={"TEST_TAG": tag})
    )
    log1 = tmp_path / "first.log"
    first = start_daemon(config, log1)
    try:
        wait_for(lambda: len(tagged(tag)) == 1, timeout=30, what="talker")
        run_log = tmp_path / "logs" / "talker"
        wait_for(
            lambda: any(run_log.glob("*.log")) and "line 5" in _read(run_log),
            timeout=10,
            what="some output",
        )
        pid = tagged(tag)[0].pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    time.sleep(0.5)  # the agent keeps writing into the pipe while no daemon reads it
    assert [p.pid for p in tagged(tag)] == [pid]  # no SIGPIPE: still alive
    second = start_daemon(config, tmp_path / "second.log")
    try:
        before = _read(run_log).count("\n")
        wait_for(
            lambda: _read(run_log).count("\n") > before + 20,
            timeout=20,
            what="output collected after adoption",
        )
        assert [p.pid for p in tagged(tag)] == [pid]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    numbers = [int(x.split()[1]) for x in _read(run_log).splitlines() if x.startswith("line ")]
    assert numbers == list(range(len(numbers)))  # not a line lost across the restart
    assert "output reattached" in _read(run_log)


def _read(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(directory.glob("*.log")))


def test_what_a_vanished_run_is_taken_to_have_done() -> None:
    from factoryd.core.outcome import Outcome
    from factoryd.reconcile.recovery import gone_verdict

    row = j.RunRow("r", "t", "a", "running", 123, time.time() - 5, time.time() - 5, None, None)
    boot = psutil.boot_time()
    assert gone_verdict(row, None, None, False)[0] is Outcome.LOST  # never spawned
    assert gone_verdict(row, 123, boot - 60, False) == (Outcome.LOST, "interrupted by a reboot")
    assert gone_verdict(row, 123, time.time() - 5, True)[0] is Outcome.LOST  # systemd cleaned
    verdict = gone_verdict(row, 123, time.time() - 5, False)
    assert verdict[0] is Outcome.EXIT_UNKNOWN  # ended on its own: not run twice


def test_a_new_systemd_invocation_reruns_what_the_old_one_took_down(tmp_path: Path) -> None:
    text = header(tmp_path) + task("job", QUIET, kind="oneshot", restart="on-failure")
    config = load_config(write_config(tmp_path, text))
    db = Journal(config.daemon.state_dir / "journal.db")
    started = time.time() - 10
    db.apply_sync(
        [
            j.op_meta("invocation", "old-invocation"),
            j.op_run_intent("r-1", "job", "local", started, None, "x.log"),
            j.op_run_started("r-1", 999_999, started),
        ]
    )
    rec = Reconciler(config, journal=db)
    report = recover(rec, db, "new-invocation")
    assert report.lost == ["r-1"] and report.ended == []
    rt = rec.tasks["job"]
    assert rt.last_outcome == "lost" and rt.phase.value in ("pending", "backing_off")
    assert db.meta("invocation") == "new-invocation"
    rec.batch.close()


def test_spec_digest_is_the_same_as_with_dataclasses_asdict() -> None:
    """Journals written before the faster digest keep matching their tasks."""
    import hashlib
    from dataclasses import asdict

    from factoryd.core.taskspec import Backoff, MissedPolicy, RestartPolicy, TaskKind, TaskSpec
    from factoryd.routing.model import Priority, RouteRequest, TaskType
    from factoryd.state.batch import _digest, spec_digest

    specs = [
        *load_config(Path(__file__).parent.parent / "etc" / "factoryd.toml").tasks,
        TaskSpec(
            name="full",
            kind=TaskKind.SCHEDULED,
            route=RouteRequest(
                task="full",
                type=TaskType.DEBUG,
                priority=Priority.HIGH,
                estimated_tokens=9000,
                effort="high",
                arms=("a", "b"),
                min_quality=0.4,
            ),
            argv=("echo", "x"),
            env=(("A", "1"), ("B", "2")),
            timeout=30.0,
            restart=RestartPolicy.ALWAYS,
            backoff=Backoff(),
            schedule="*/5 * * * *",
            timezone="Europe/Paris",
            missed=MissedPolicy.ALL,
        ),
    ]
    for spec in specs:
        doc = asdict(spec)
        doc["route"].pop("_variants")  # a cache of the request per attempt budget
        # Fields added after journals existed are left out at their default.
        assert doc.pop("fleet") is None and doc["route"].pop("attempts_left") is None
        expected = hashlib.sha256(
            json.dumps(doc, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        assert spec_digest(spec) == expected
        # Routing runs fills that cache; what the spec is, and its digest, stay.
        assert spec.route.with_attempts_left(2) is spec.route.with_attempts_left(2)
        assert _digest.__wrapped__(spec) == expected  # computed anew, no cache


def test_an_upgrade_keeps_the_digests_of_specs_that_use_no_new_field() -> None:
    """`fleet` and the request's `attempts_left` came after journals existed: a
    spec that does not use them keeps the digest the previous version wrote
    (pinned below from that version), so an upgrade restores every task's
    progress instead of forgetting it (a finished one-shot would run again)."""
    from dataclasses import replace

    from factoryd.state.batch import _digest

    tasks = load_config(Path(__file__).parent.parent / "etc" / "factoryd.toml").tasks
    written_before = {
        "heartbeat": "2cb30d5754319e1e",
        "flaky": "72bee0bdf02b9f60",
        "report": "6e0713d3ff857a75",
    }
    assert {t.name: _digest.__wrapped__(t) for t in tasks} == written_before
    spec = tasks[0]
    assert _digest.__wrapped__(replace(spec, fleet="once")) != written_before[spec.name]


def test_a_runs_start_time_is_read_when_journaled_only_while_it_is_ours(tmp_path: Path) -> None:
    """Spawns record no start time (reading it mid-exec is slow); the journal op
    reads it later, but only for a process not yet reaped, whose pid cannot
    have been reused."""
    from factoryd.proc import proctime

    db = Journal(tmp_path / "journal.db")
    child = subprocess.Popen(["sleep", "30"])
    try:
        ops = [j.op_run_intent(r, "t", "a", time.time(), None, "") for r in ("mine", "gone")]
        db.apply_sync(ops)
        db.apply_sync(
            [
                j.op_run_started("mine", child.pid, None, None, lambda pid: pid == child.pid),
                j.op_run_started("gone", child.pid, None, None, lambda pid: False),
            ]
        )
        rows = {r.id: r for r in db.live_runs()}
        assert rows["mine"].create_time == proctime.start_time(child.pid)
        assert rows["gone"].create_time is None and rows["gone"].pid == child.pid
    finally:
        child.kill()
        child.wait()
        db.close()


def test_the_journal_thread_asks_the_kernel_whether_a_pid_is_still_ours(tmp_path: Path) -> None:
    """By default the op reads no state of the loop's (no shared table across
    threads): waitid without reaping says whether the pid is still our child."""
    from factoryd.proc import proctime

    db = Journal(tmp_path / "journal.db")
    child = subprocess.Popen(["sleep", "30"])
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    try:
        db.apply_sync(
            [j.op_run_intent(r, "t", "a", time.time(), None, "") for r in ("ours", "gone")]
        )
        db.apply_sync(
            [j.op_run_started("ours", child.pid, None), j.op_run_started("gone", reaped.pid, None)]
        )
        rows = {r.id: r for r in db.live_runs()}
        assert rows["ours"].create_time == proctime.start_time(child.pid)
        assert rows["gone"].create_time is None
    finally:
        child.kill()
        child.wait()
        db.close()


def test_spawn_log_records_reads_back_and_compacts_to_what_is_not_journaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factoryd.proc import spawnlog
    from factoryd.proc.spawnlog import SpawnLog, read_spawn_log

    path = tmp_path / "runs" / "spawns.log"
    log = SpawnLog(path)
    log.record("r1", 101, (3, 4))
    log.record("r2", 102, None)
    with path.open("ab") as f:
        f.write(b"r3 10")  # a daemon killed mid-write leaves a torn line
    found = read_spawn_log(path)
    assert set(found) == {"r1", "r2"}
    assert found["r1"] == spawnlog.Spawned(101, (3, 4))
    assert found["r2"] == spawnlog.Spawned(102, None)
    monkeypatch.setattr(spawnlog, "COMPACT_AT", 1)
    log.journaled(["r1"])  # over the (tiny) limit: rewritten with r2 only
    assert set(read_spawn_log(path)) == {"r2"}
    log.record("r4", 104, (5, 6))  # reopened after the rewrite
    log.close()
    assert set(read_spawn_log(path)) == {"r2", "r4"}
    assert read_spawn_log(tmp_path / "missing.log") == {}


def test_spawn_lines_the_helper_wrote_are_kept_and_compaction_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factoryd.proc import spawnlog
    from factoryd.proc.spawnlog import SpawnLog, read_spawn_log

    path = tmp_path / "spawns.log"
    path.write_bytes(b"h1 201 3 4\nh2 202 3 4\n")  # as the helper appends them
    log = SpawnLog(path)
    log.written("h1", 201, (3, 4))
    log.written("h2", 202, (3, 4))
    monkeypatch.setattr(spawnlog, "COMPACT_AT", 1)
    log.busy = lambda: True  # a spawn in flight: the helper may be writing
    log.journaled(["h1"])
    assert set(read_spawn_log(path)) == {"h1", "h2"}
    log.busy = lambda: False
    log.journaled([])  # no descriptor of our own: the file is measured by path
    assert set(read_spawn_log(path)) == {"h2"}


def test_a_pid_file_from_an_older_version_is_still_read_once(tmp_path: Path) -> None:
    from factoryd.proc.spawnlog import Spawned
    from factoryd.reconcile.recovery import _legacy_pid_file

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r9.pid").write_text("4242 1700000000.25 7 8\n")
    assert _legacy_pid_file(tmp_path, "r9") == Spawned(4242, (7, 8), 1700000000.25)
    assert _legacy_pid_file(tmp_path, "r9") is None  # consumed
