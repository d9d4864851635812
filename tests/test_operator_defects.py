"""What an operator found wrong, each proven fixed (each test fails on the old code):
run.finished's figures, idempotency conflicts, missing secrets, limit escalation,
the decisive rejection first, one availability truth, route's wording, the
scheduled reason after a restart, unique test run ids."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from daemon_kit import events, factoryd, header, start_daemon, task, write_config
from factoryd.config.loader import load_config
from factoryd.observe.scrape import StateCollector
from factoryd.reconcile.reconciler import Reconciler
from factoryd.reconcile.runstate import Clock
from factoryd.routing.engine import RoutingEngine
from factoryd.service.status import build_status
from proc_kit import spec, wait_for

T = 1_800_000_000.0


def _up(config: Path, log: Path) -> subprocess.Popen[bytes]:
    daemon = start_daemon(config, log)
    wait_for(lambda: factoryd("status", "--config", str(config)).returncode == 0, 20, "socket")
    return daemon


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)


def test_run_finished_carries_tokens_cost_duration_arm_and_log(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path) + task("once", "print('hi')", kind="oneshot"))
    log = tmp_path / "daemon.log"
    daemon = _up(config, log)
    try:
        wait_for(lambda: any(e.get("event") == "run.finished" for e in events(log)), 20, "end")
    finally:
        _stop(daemon)
    (done,) = [e for e in events(log) if e.get("event") == "run.finished"]
    assert done["tokens"] == 0 and done["cost"] == 0.0  # a command run: no tokens, no price
    assert done["arm"] == "local" and done["duration"] > 0
    assert done["log"].endswith(f"{done['run_id']}.log")


def test_an_idempotency_key_reused_for_another_request_is_a_conflict(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path))
    c = ("--config", str(config))
    log = tmp_path / "daemon.log"
    daemon = _up(config, log)
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text(f"argv = {json.dumps([sys.executable, '-c', 'pass'])}\n")
    two.write_text(f"argv = {json.dumps([sys.executable, '-c', 'print(2)'])}\n")
    try:
        first = factoryd("submit", "--file", str(one), "-k", "build-42", *c)
        assert first.returncode == 0, first.stderr
        sub = first.stdout.split()[0]
        assert factoryd("wait", sub, "--timeout", "20s", *c).returncode == 0
        again = factoryd("submit", "--file", str(one), "-k", "build-42", *c)
        assert again.returncode == 0
        assert again.stdout.strip() == f"{sub} (already submitted; it has ended: succeeded)"
        other = factoryd("submit", "--file", str(two), "-k", "build-42", *c)
        assert other.returncode == 1
        assert "build-42" in other.stderr and "different request" in other.stderr
        assert f"submission {sub}; it has already ended (succeeded)" in other.stderr
    finally:
        _stop(daemon)
    keys = {e.get("idempotency_key") for e in events(log) if e.get("event", "").startswith("sub")}
    assert "build-42" in keys  # keys are not secrets: they are logged


SECRET_ARM = """
[[arms]]
name = "keyed"
cli = "command"
pools = ["local"]
secrets = {{ API_TOKEN = "env:{var}" }}
"""


def test_a_missing_env_secret_makes_the_arm_unavailable_not_the_task_fail(
    tmp_path: Path,
) -> None:
    var = f"FACTORYD_TEST_ABSENT_{uuid.uuid4().hex[:8].upper()}"
    text = (
        header(tmp_path)
        + SECRET_ARM.format(var=var)
        + task("needs", "import time; time.sleep(60)", arms=["keyed"])
    )
    config = write_config(tmp_path, text)
    checked = factoryd("check", "--config", str(config))
    assert checked.returncode == 0
    assert f"arm keyed: secret variable not set: API_TOKEN (env:{var})" in checked.stdout
    daemon = _up(config, tmp_path / "daemon.log")
    try:
        status = json.loads(factoryd("status", "--json", "--config", str(config)).stdout)
        keyed = next(a for a in status["arms"] if a["name"] == "keyed")
        assert keyed["health"] == "secret_missing"
        needs = next(t for t in status["tasks"] if t["name"] == "needs")
        assert needs["phase"] == "blocked" and needs["restarts"] == 0 and needs["runs"] == 0
        assert "keyed: secret variable not set" in needs["reason"]
        route = factoryd("route", "--config", str(config), "--task", "needs", "--json")
        assert route.returncode == 0  # route runs in this environment: nothing marked
    finally:
        _stop(daemon)


def test_consecutive_limits_escalate_the_pool_hold_despite_a_short_retry_after(
    tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path, header(tmp_path)))
    engine = RoutingEngine.from_config(config)
    first = engine.report_limit("local", T + 1, T, "429, retry-after 1")
    assert first == T + 1  # the provider's word, the first time
    second = engine.report_limit("local", T + 3, T + 2, "429, retry-after 1")
    assert second >= T + 2 + 900  # the second in a row: the pool's own backoff
    third = engine.report_limit("local", second + 1, second, "429, retry-after 1")
    assert third >= second + 1800


def test_a_blocked_reason_names_the_decisive_rejection_first(tmp_path: Path) -> None:
    text = header(tmp_path).replace(
        "[[arms]]", '[[arms]]\nname = "other"\ncli = "command"\n\n[[arms]]', 1
    )
    config = load_config(write_config(tmp_path, text + task("t", "pass", arms=["local"])))
    engine = RoutingEngine.from_config(config)
    engine.report_limit("local", T + 600, T, "429")
    (spec_,) = config.tasks
    decision = engine.route(spec_.route, T + 1)
    assert decision.arm is None
    reasons = [r.reason for r in decision.rejections]
    assert "not_allowed" in reasons  # the full list stays (status --json, route --json)
    assert decision.rationale().startswith("All arms rejected for task t: local: pool local")


def test_the_availability_metric_and_status_agree(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, header(tmp_path)))
    rec = Reconciler(config, clock=Clock(mono=lambda: 5.0, wall=lambda: T))
    rec.engine.report_limit("local", T + 600, T, "429")
    collector = StateCollector(lambda: rec.engine, dict, dict, dict, clock=lambda: T)
    (metric,) = [m for m in collector.collect() if m.name == "factoryd_arm_available"]
    (arm,) = build_status(rec)["arms"]
    assert arm["health"] == "limited"
    assert [s.value for s in metric.samples] == [0.0]


def test_route_on_a_dry_run_does_not_say_it_reserved(tmp_path: Path) -> None:
    config = write_config(tmp_path, header(tmp_path) + task("t", "pass"))
    out = factoryd("route", "--config", str(config), "--task", "t")
    assert out.returncode == 0, out.stderr
    assert "reserved:" not in out.stdout and "would reserve: local 1" in out.stdout


def test_a_scheduled_task_after_a_restart_is_not_new(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, header(tmp_path) + task("nightly", "pass", kind="scheduled", schedule="0 2 * * *")
    )

    def reason() -> str:
        status = json.loads(factoryd("status", "--json", "--config", str(config)).stdout)
        return status["tasks"][0]["reason"]

    daemon = _up(config, tmp_path / "one.log")
    try:
        assert reason().startswith("new; next fire at")
    finally:
        _stop(daemon)
    daemon = _up(config, tmp_path / "two.log")
    try:
        assert reason().startswith("next fire at")
    finally:
        _stop(daemon)


def test_test_run_ids_are_unique_per_test_run(tmp_path: Path) -> None:
    a, b = spec(tmp_path, ("true",)), spec(tmp_path, ("true",))
    assert a.run_id != b.run_id and "r1" not in (a.run_id, b.run_id)
