"""The operator's verbs against a real daemon, real processes, real socket:
logs (and -f across a restart), restart, stop/start (held across a daemon
restart), show, wait, reset of a submission, release, reload (and --dry-run),
status on a broken config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from daemon_kit import ROOT, events, factoryd, header, start_daemon, tagged, task, write_config
from factoryd.state import journal as j
from proc_kit import wait_for

# Each run prints its pid, then sleeps: a new pid in the log is a new run.
SERVICE = "import os, time; print('run', os.getpid(), flush=True); time.sleep(600)"


def _status(config: Path) -> dict:
    out = factoryd("status", "--json", "--config", str(config))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _task(config: Path, name: str) -> dict:
    return next(t for t in _status(config)["tasks"] if t["name"] == name)


def _pids(tag: str) -> set[int]:
    return {p.pid for p in tagged(tag) if p.pid is not None}


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()


def _up(config: Path, log: Path) -> subprocess.Popen[bytes]:
    daemon = start_daemon(config, log)
    wait_for(lambda: factoryd("status", "--config", str(config)).returncode == 0, 20, "socket")
    return daemon


def test_restart_stop_start_show_and_logs(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    config = write_config(tmp_path, header(tmp_path) + task("svc", SERVICE, env={"TEST_TAG": tag}))
    c = ("--config", str(config))
    log = tmp_path / "daemon.log"
    daemon = _up(config, log)
    try:
        wait_for(lambda: len(_pids(tag)) == 1, 20, "svc running")
        (first,) = _pids(tag)
        wait_for(lambda: f"run {first}" in factoryd("logs", "svc", *c).stdout, 10, "log line")

        # restart: a new run at once; no restart counted, no backoff.
        out = factoryd("restart", "svc", *c)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: _pids(tag) not in ({first}, set()), 10, "a new run")
        (second,) = _pids(tag)
        svc = _task(config, "svc")
        assert svc["restarts"] == 0 and svc["runs"] == 2
        assert svc["log"] and svc["log"].endswith(".log")
        wait_for(lambda: f"run {second}" in factoryd("logs", "svc", *c).stdout, 10, "new log")

        # show: the run history from the journal, the restarted run first ended cancelled.
        shown = json.loads(factoryd("show", "svc", "--json", *c).stdout)
        runs = shown["runs"]
        assert len(runs) == 2 and runs[1]["outcome"] == "cancelled"
        assert runs[1]["reason"] == "restarted by operator"
        assert runs[1]["arm"] == "local" and runs[1]["duration"] > 0
        assert runs[1]["log_path"].endswith(f"{runs[1]['run_id']}.log")
        text = factoryd("show", "svc", *c)
        assert text.returncode == 0 and "restarted by operator" in text.stdout

        # stop: the run ends and the task is held, across a daemon restart.
        out = factoryd("stop", "svc", *c)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: not _pids(tag), 10, "svc stopped")
        assert _task(config, "svc")["phase"] == "stopped"
        stops = [e for e in events(log) if e.get("event") == "operator.stop"]
        assert stops and stops[0]["uid"] == os.getuid()  # who asked, from SO_PEERCRED
        _stop(daemon)
        daemon = _up(config, tmp_path / "daemon2.log")
        assert _task(config, "svc")["phase"] == "stopped"
        time.sleep(0.5)  # a held task must not start: nothing to poll for
        assert not _pids(tag)

        out = factoryd("start", "svc", *c)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: len(_pids(tag)) == 1, 10, "svc started again")

        missing = factoryd("restart", "nosuch", *c)
        assert missing.returncode == 1 and "nosuch" in missing.stderr
    finally:
        _stop(daemon)


def test_logs_follow_across_a_restart(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    config = write_config(tmp_path, header(tmp_path) + task("svc", SERVICE, env={"TEST_TAG": tag}))
    daemon = _up(config, tmp_path / "daemon.log")
    follower = None
    try:
        wait_for(lambda: len(_pids(tag)) == 1, 20, "svc running")
        (first,) = _pids(tag)
        out = tmp_path / "follow.out"
        follower = subprocess.Popen(
            [sys.executable, "-m", "factoryd", "logs", "svc", "-f", "--config", str(config)],
            stdout=out.open("wb"),
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        wait_for(lambda: f"run {first}" in out.read_text(), 10, "first run's line")
        assert factoryd("restart", "svc", "--config", str(config)).returncode == 0
        wait_for(lambda: _pids(tag) not in ({first}, set()), 10, "a new run")
        (second,) = _pids(tag)
        wait_for(lambda: f"run {second}" in out.read_text(), 10, "the new run's line")
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(timeout=5)
        _stop(daemon)


def test_wait_exit_status_by_outcome_and_reset_of_a_submission(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path))
    c = ("--config", str(config))
    daemon = _up(config, tmp_path / "daemon.log")

    def submit(code: str) -> str:
        spec = tmp_path / f"{uuid.uuid4().hex}.toml"
        spec.write_text(f"argv = {json.dumps([sys.executable, '-c', code])}\nrestart = 'never'\n")
        out = factoryd("submit", "--file", str(spec), *c)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[0]

    try:
        ok = submit("print('fine')")
        bad = submit("raise SystemExit(3)")
        slow = submit("import time; time.sleep(600)")
        assert factoryd("wait", ok, "--timeout", "20s", *c).returncode == 0
        failed = factoryd("wait", bad, "--timeout", "20s", *c)
        assert failed.returncode == 4 and "failed" in failed.stdout
        assert factoryd("wait", slow, "--timeout", "300ms", *c).returncode == 3
        assert factoryd("wait", "s-nosuch", "--timeout", "1s", *c).returncode == 1
        # Finished submissions are in text status, from the journal.
        wait_for(lambda: bad in factoryd("status", *c).stdout, 10, "finished in status")
        # reset runs a finished submission again.
        wait_for(lambda: factoryd("show", bad, "--json", *c).returncode == 0, 10, "show")
        assert factoryd("reset", bad, *c).returncode == 0
        wait_for(
            lambda: len(json.loads(factoryd("show", bad, "--json", *c).stdout)["runs"]) == 2,
            20,
            "a second run of the reset submission",
        )
        assert factoryd("cancel", slow, *c).returncode == 0
        assert factoryd("wait", slow, "--timeout", "10s", *c).returncode == 4
    finally:
        _stop(daemon)


def test_release_lifts_a_pool_hold_and_logs_who_asked(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    config = write_config(tmp_path, header(tmp_path) + task("svc", SERVICE, env={"TEST_TAG": tag}))
    state = tmp_path / "state"
    state.mkdir()
    journal = j.Journal(state / "journal.db")
    journal.apply_sync([j.op_pool("local", 0.0, None, time.time() + 3600, "429 from test", 3)])
    journal.close()
    log = tmp_path / "daemon.log"
    daemon = _up(config, log)
    c = ("--config", str(config))
    try:
        assert _task(config, "svc")["phase"] == "blocked"
        out = factoryd("release", "local", "--json", *c)
        assert out.returncode == 0, out.stderr
        lifted = json.loads(out.stdout)
        assert lifted["kind"] == "pool" and lifted["limited_until"] and lifted["strikes"] == 3
        wait_for(lambda: len(_pids(tag)) == 1, 10, "svc runs once the pool is released")
        (release,) = [e for e in events(log) if e.get("event") == "operator.release"]
        assert release["uid"] == os.getuid() and release["target"] == "local"
        assert factoryd("release", "nosuch", *c).returncode == 1
    finally:
        _stop(daemon)


def test_reload_prints_changes_dry_run_applies_nothing_and_status_survives_errors(
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex
    env = {"TEST_TAG": tag}
    first = header(tmp_path) + task("keep", SERVICE, env=env) + task("drop", SERVICE, env=env)
    config = write_config(tmp_path, first)
    c = ("--config", str(config))
    daemon = _up(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: len(_pids(tag)) == 2, 20, "two runs")
        config.write_text(first.replace('name = "drop"', 'name = "added"'))
        dry = factoryd("reload", "--dry-run", "--json", *c)
        assert dry.returncode == 0, dry.stderr
        changes = json.loads(dry.stdout)["changes"]["tasks"]
        assert changes == {"added": ["added"], "removed": ["drop"], "changed": []}
        assert {t["name"] for t in _status(config)["tasks"]} == {"keep", "drop"}

        out = factoryd("reload", *c)
        assert out.returncode == 0 and "added added; removed drop" in out.stdout
        assert {t["name"] for t in _status(config)["tasks"]} >= {"keep", "added"}

        config.write_text(first + "\n[[tasks]]\nname = 'broken'\n")  # no argv: an error
        bad = factoryd("reload", *c)
        assert bad.returncode == 1 and "nothing applied" in bad.stderr
        status = factoryd("status", *c)
        assert status.returncode == 0, status.stderr
        assert "has 1 error(s)" in status.stderr
        assert "last reload: FAILED" in status.stdout

        # Not even TOML: the state_dir it names still finds the socket.
        config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[oops\n')
        assert factoryd("status", *c).returncode == 0
    finally:
        _stop(daemon)


def test_held_submission_is_not_forgotten(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path))
    c = ("--config", str(config))
    daemon = _up(config, tmp_path / "daemon.log")
    try:
        spec = tmp_path / "sleep.toml"
        argv = [sys.executable, "-c", "import time; time.sleep(600)"]
        spec.write_text(f"argv = {json.dumps(argv)}\n")
        sub = factoryd("submit", "--file", str(spec), *c).stdout.split()[0]
        wait_for(lambda: _phase(config, sub) == "running", 10, "submission running")
        assert factoryd("stop", sub, *c).returncode == 0
        wait_for(lambda: _phase(config, sub) == "stopped", 10, "submission stopped")
        wait_for(lambda: _run_gone(config, sub), 10, "its run ended")
        assert factoryd("start", sub, *c).returncode == 0
        wait_for(lambda: _phase(config, sub) == "running", 10, "submission running again")
    finally:
        _stop(daemon)


def _phase(config: Path, name: str) -> str | None:
    found = [t for t in _status(config)["tasks"] if t["name"] == name]
    return found[0]["phase"] if found else None


def _run_gone(config: Path, name: str) -> bool:
    found = [t for t in _status(config)["tasks"] if t["name"] == name]
    return bool(found) and found[0]["run_id"] is None
