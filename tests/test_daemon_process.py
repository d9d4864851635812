"""The daemon as a real process: SIGTERM with live runs, SIGHUP reloads, bad configs."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import psutil
from daemon_kit import (
    count_events,
    events,
    factoryd,
    header,
    start_daemon,
    tagged,
    task,
    write_config,
)
from proc_kit import wait_for


def test_sigterm_with_twenty_live_runs_exits_in_time_leaving_nothing(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    plain = "import time; print('up', flush=True); time.sleep(600)"
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(600)"
    )
    escaper = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
        "print('up', flush=True)\ntime.sleep(600)"
    )
    text = header(tmp_path, max_concurrent=50)
    for i in range(20):
        code = stubborn if i % 5 == 0 else escaper if i % 5 == 1 else plain
        text += task(f"s{i:02}", code, stop_grace="1s", env={"TEST_TAG": tag})
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    try:
        wait_for(
            lambda: count_events(log, "run.started") == 20,
            timeout=30,
            what="20 runs started",
        )
        wait_for(lambda: len(tagged(tag)) >= 24, timeout=10, what="grandchildren up")
        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=1 + 5)
        elapsed = time.monotonic() - t0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert code == 0
    assert elapsed < 6
    wait_for(lambda: tagged(tag) == [], timeout=2, what="no process left")
    finished = [e for e in events(log) if e.get("event") == "run.finished"]
    assert len(finished) == 20 and {e["outcome"] for e in finished} == {"cancelled"}
    assert sum(e["sigkilled"] for e in finished) >= 4  # the stubborn ones


def test_sighup_applies_a_good_config_and_keeps_the_old_one_on_error(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    sleeper = "import time; print('up', flush=True); time.sleep(600)"
    env = {"TEST_TAG": tag}
    first = (
        header(tmp_path)
        + task("keep", sleeper, env=env)
        + task("drop", sleeper, env=env)
        + task("change", sleeper, env=env)
    )
    log = tmp_path / "daemon.log"
    path = write_config(tmp_path, first)
    daemon = start_daemon(path, log)
    try:
        wait_for(lambda: len(tagged(tag)) == 3, timeout=30, what="three runs")
        keep_pid = _pids(tag, "keep")
        second = (
            header(tmp_path)
            + task("keep", sleeper, env=env)
            + task("change", sleeper, env={**env, "V": "2"})
            + task("new", sleeper, env=env)
        )
        path.write_text(second)
        daemon.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                _pids(tag, "new") and not _pids(tag, "drop") and _pids(tag, "change") and _v2(tag)
            ),
            timeout=20,
            what="reload applied",
        )
        assert _pids(tag, "keep") == keep_pid  # unchanged task untouched
        path.write_text(second + '\n[[arms]]\nname = "x"\ncli = "command"\npools = ["nope"]\n')
        daemon.send_signal(signal.SIGHUP)
        wait_for(
            lambda: count_events(log, "config.reload_failed") > 0,
            timeout=10,
            what="reload failure logged",
        )
        failure = next(e for e in events(log) if e.get("event") == "config.reload_failed")
        assert any(
            f"{path}: arms[1].pools[0]: no pool named 'nope'" in x for x in failure["errors"]
        )
        assert _pids(tag, "keep") == keep_pid and _pids(tag, "new")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
    assert tagged(tag) == []


def test_config_error_at_startup_exits_two_naming_file_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, header(tmp_path) + '[[tasks]]\nname = "t"\nargv = "true"\n')
    out = factoryd("run", "--config", str(path))
    assert out.returncode == 2
    assert f"{path}: tasks[0].argv: expected a list of strings" in out.stderr


def _pids(tag: str, name: str) -> list[int]:
    out = []
    for proc in tagged(tag):
        try:
            if proc.environ().get("FACTORYD_TASK") == name:
                out.append(proc.pid)
        except psutil.Error:
            continue
    return sorted(out)


def _v2(tag: str) -> bool:
    for proc in tagged(tag):
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("FACTORYD_TASK") == "change" and env.get("V") == "2":
            return True
    return False
