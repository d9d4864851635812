"""Metrics, health, logs, status: scraped from a real daemon, linted by promtool,
queried through a real Prometheus server."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from daemon_kit import (
    ROOT,
    count_events,
    events,
    factoryd,
    free_port,
    header,
    require_tool,
    start_daemon,
    task,
    write_config,
)
from factoryd.observe.logs import REDACTOR, configure, get_logger
from factoryd.service.control import ControlError, call
from proc_kit import wait_for

SLEEPER = "import time; print('up', flush=True); time.sleep(600)"


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def live(tmp_path: Path):
    """A daemon process with metrics on a free port and a few finished runs."""
    port = free_port()
    text = header(tmp_path, metrics_listen=f"127.0.0.1:{port}") + task("svc", SLEEPER)
    for i in range(5):
        text += task(f"ok{i}", "print('done')", kind="oneshot")
    text += task("bad", "raise SystemExit(3)", kind="oneshot", restart="never")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    try:
        wait_for(
            lambda: count_events(log, "run.finished") >= 6,
            timeout=30,
            what="six finished runs",
        )
        yield daemon, port, tmp_path
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)


def test_live_scrape_passes_promtool_check_metrics(live) -> None:
    _, port, _ = live
    promtool = require_tool("promtool")
    status, body = scrape(port)
    assert status == 200
    for name in (
        "factoryd_runs_started_total",
        "factoryd_runs_finished_total",
        "factoryd_run_duration_seconds_bucket",
        "factoryd_pool_used",
        "factoryd_pool_scarcity_multiplier",
        "factoryd_routing_decisions_total",
        "factoryd_routing_decision_seconds_bucket",
        "factoryd_reconcile_passes_total",
        "factoryd_build_info",
        "factoryd_config_info",
        "process_resident_memory_bytes",
        "factoryd_tasks",
        "factoryd_runs",
        "factoryd_reservations_expired_total",
        "factoryd_log_lines_dropped_total",
    ):
        assert f"\n{name}" in body, name
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint.stderr
    assert 'factoryd_runs_finished_total{arm="local",outcome="failed",task="bad"} 1.0' in body


def test_healthz_answers_200_while_the_loop_passes(live) -> None:
    _, port, _ = live
    status, body = scrape(port, "/healthz")
    assert status == 200 and body.startswith("ok")
    assert scrape(port, "/nope")[0] == 404


def test_control_socket_is_private_and_survives_garbage(live) -> None:
    daemon, _, tmp_path = live
    sock_path = tmp_path / "state" / "control.sock"
    mode = stat.S_IMODE(sock_path.stat().st_mode)
    assert mode == 0o600
    for garbage in (b"\xff\xfe\x00garbage\n", b"[1, 2]\n", b'{"op": 5}\n', b"{" * 10000 + b"\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            reply = json.loads(s.recv(65536))
        assert reply["ok"] is False and reply["error"]
    with pytest.raises(ControlError, match="unknown op 'explode'"):
        call(sock_path, {"op": "explode"})
    assert call(sock_path, {"op": "status"})["daemon"]["pid"] == daemon.pid
    dump = call(sock_path, {"op": "state_dump"})
    assert dump["version"] == 1 and "local" in dump["pools"]


def test_status_and_state_dump_commands_against_the_daemon(live) -> None:
    _, _, tmp_path = live
    config = str(tmp_path / "factoryd.toml")

    out = factoryd("status", "--config", config)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(re.match(r"svc\s+service\s+running\s+local\s", line) for line in lines)
    assert any(re.match(r"bad\s+oneshot\s+failed\s+local\s.*exit status 3", line) for line in lines)
    assert any(line.startswith("local ") and "runs" in line for line in lines)
    as_json = json.loads(factoryd("status", "--config", config, "--json").stdout)
    assert {t["name"] for t in as_json["tasks"]} >= {"svc", "bad", "ok0"}
    dump = factoryd("state", "dump", "--config", config)
    assert dump.returncode == 0
    replay = factoryd(
        "route", "--config", config, "--task", "ok0", "--state", "-", "--json", stdin=dump.stdout
    )
    assert json.loads(replay.stdout)["arm"] == "local"
    missing = factoryd("status", "--socket", str(tmp_path / "absent.sock"))
    assert missing.returncode == 1 and "is factoryd running?" in missing.stderr


def test_real_prometheus_scrapes_the_daemon_and_counts_runs(live, tmp_path: Path) -> None:
    _, port, _ = live
    prometheus = require_tool("prometheus")
    web = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: factoryd\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
        f"rule_files:\n  - {ROOT / 'etc/prometheus/factoryd.rules.yml'}\n"
    )
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prom.log").open("wb"),
    )
    try:

        def query(q: str) -> list:
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return json.loads(resp.read())["data"]["result"]
            except OSError:
                return []

        q = 'sum(factoryd_runs_finished_total{job="factoryd", outcome="succeeded"})'
        wait_for(lambda: query(q), timeout=30, what="first scrape")
        assert float(query(q)[0]["value"][1]) == 5
        failed = query('sum by (task) (factoryd_runs_finished_total{outcome="failed"})')
        assert [(r["metric"]["task"], r["value"][1]) for r in failed] == [("bad", "1")]
        running = query('factoryd_runs{state="running"}')
        assert float(running[0]["value"][1]) == 1
        assert query('up{job="factoryd"}')[0]["value"][1] == "1"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    promtool = require_tool("promtool")
    rules = ROOT / "etc" / "prometheus"
    check = subprocess.run(
        [promtool, "check", "rules", "factoryd.rules.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    test = subprocess.run(
        [promtool, "test", "rules", "factoryd.rules.test.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_dashboard_and_rules_only_use_metrics_that_exist(live) -> None:
    _, port, _ = live
    _, body = scrape(port)
    exposed = set(re.findall(r"^# TYPE (\w+) (\w+)", body, re.M))
    names = set()
    for name, kind in exposed:
        names.add(name)
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
        if kind == "counter":
            names.add(name + "_total" if not name.endswith("_total") else name)
    dashboard = json.loads((ROOT / "etc/grafana/factoryd.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((ROOT / "etc/prometheus/factoryd.rules.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"\b((?:factoryd|process)_\w+)", e)}
    used -= {m for m in used if m.startswith("factoryd_fleet_")}  # test_fleet_wiring.py
    assert used and used <= names, used - names
    assert len(dashboard["panels"]) >= 20


def test_log_redaction_of_credential_keys_and_registered_values() -> None:
    out = io.StringIO()
    configure("json", "info", stream=out)
    REDACTOR.add(["sk-live-0123456789abcdef"])
    log = get_logger()
    log.info(
        "probe",
        api_key="plain-key-value",
        env={"GITHUB_TOKEN": "ghp_abcdef123456", "PATH": "/usr/bin"},
        reason="auth failed for sk-live-0123456789abcdef on retry",
        client_secret="hunter22",
    )
    line = json.loads(out.getvalue())
    assert line["api_key"] == "[redacted]" and line["client_secret"] == "[redacted]"
    assert line["env"] == {"GITHUB_TOKEN": "[redacted]", "PATH": "/usr/bin"}
    assert line["reason"] == "auth failed for [redacted] on retry"
    assert "sk-live" not in out.getvalue() and "ghp_" not in out.getvalue()


def test_secrets_never_reach_daemon_logs_or_metrics(tmp_path: Path) -> None:
    secret = "sk-test-9f8e7d6c5b4a39281706"
    port = free_port()
    text = header(tmp_path, metrics_listen=f"127.0.0.1:{port}").replace(
        'pools = ["local"]\n', 'pools = ["local"]\nsecrets = { API_KEY = "env:FT_SECRET" }\n', 1
    )
    # An operator typo puts the key into argv: the spawn failure reason would carry it.
    text += (
        f'[[tasks]]\nname = "leaky"\nargv = ["/nonexistent/{secret}"]\n'
        'restart = "never"\nkind = "oneshot"\n\n'
    )
    text += task(
        "echo",
        "import os; print(len(os.environ['API_KEY']))",
        kind="oneshot",
        env={"MY_TOKEN": "tok-value-123456"},
    )
    log = tmp_path / "daemon.log"
    daemon = start_daemon(
        write_config(tmp_path, text), log, env={**os.environ, "FT_SECRET": secret}
    )
    try:
        wait_for(
            lambda: count_events(log, "run.finished") >= 2,
            timeout=30,
            what="both runs",
        )
        _, body = scrape(port)
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
    logged = log.read_text()
    assert "executable not found: /nonexistent/[redacted]" in logged
    assert secret not in logged and secret not in body
    assert "tok-value-123456" not in logged
    echo_log = next((tmp_path / "logs" / "echo").iterdir()).read_text()
    assert echo_log.strip() == str(len(secret))  # the run itself did get the key


def test_label_cardinality_is_constant_while_a_thousand_runs_come_and_go(tmp_path: Path) -> None:
    import anyio
    from daemon_kit import running, until

    text = header(tmp_path, max_concurrent=10)
    for i in range(10):
        text += (
            "[[tasks]]\n"
            f'name = "churn{i}"\nargv = ["true"]\nrestart = "always"\n'
            'max_restarts = 100000\nbackoff = { initial = "1ms", max = "1ms" }\n\n'
        )

    def series(rec) -> set[str]:
        body = rec.metrics.exposition().decode()
        return {
            line.rsplit(" ", 1)[0]
            for line in body.splitlines()
            if line and not line.startswith("#") and line.startswith("factoryd_")
        }

    async def main() -> tuple[set[str], set[str], int]:
        async with running(tmp_path, text) as rec:
            await until(lambda: sum(rt.runs for rt in rec.tasks.values()) >= 100, timeout=60)
            early = series(rec)
            await until(lambda: sum(rt.runs for rt in rec.tasks.values()) >= 1000, timeout=120)
            late = series(rec)
            return early, late, sum(rt.runs for rt in rec.tasks.values())

    early, late, runs = anyio.run(main)
    assert runs >= 1000
    assert early == late
    assert len(late) < 400


def test_healthz_turns_503_when_the_loop_stops_passing(tmp_path: Path) -> None:
    from factoryd.config.loader import load_config
    from factoryd.reconcile.reconciler import Reconciler
    from factoryd.reconcile.runstate import Clock

    now = [1000.0]
    rec = Reconciler(
        load_config(write_config(tmp_path, header(tmp_path))),
        clock=Clock(mono=lambda: now[0], wall=lambda: now[0]),
    )
    assert rec.healthy(20)[0] is False  # no pass yet
    rec.reconcile_pass()
    rec.last_pass_wall = now[0]
    assert rec.healthy(20)[0] is True
    now[0] += 21
    ok, why = rec.healthy(20)
    assert not ok and "last reconcile pass 21.0s ago" in why


def test_a_successful_run_logs_three_lines_and_a_failure_its_phase(tmp_path: Path) -> None:
    text = header(tmp_path)
    text += task("ok", "print('fine')", kind="oneshot")
    text += task("bad", "raise SystemExit(3)", kind="oneshot", restart="never")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    try:
        wait_for(
            lambda: count_events(log, "run.finished") >= 2,
            timeout=30,
            what="both runs",
        )
        wait_for(
            lambda: any(
                e.get("event") == "task.phase" and e.get("task") == "bad" for e in events(log)
            ),
            timeout=10,
            what="the failed task's phase",
        )
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
    ok = [e["event"] for e in events(log) if e.get("task") == "ok"]
    assert ok == ["route.decision", "run.started", "run.finished"], ok
    bad = [(e["event"], e.get("new")) for e in events(log) if e.get("task") == "bad"]
    assert ("task.phase", "failed") in bad, bad
    # At info the decision line names the arm, its score and the count of arms
    # rejected; the paragraph that explains it is built only at debug (below).
    decided = next(e for e in events(log) if e["event"] == "route.decision")
    assert decided["arm"] and isinstance(decided["score"], float), decided
    assert decided["rejected"] >= 0 and "rationale" not in decided, decided


def test_the_decision_line_carries_the_rationale_at_debug(tmp_path: Path) -> None:
    text = header(tmp_path, log_level="debug") + task("ok", "print('fine')", kind="oneshot")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    try:
        wait_for(lambda: count_events(log, "run.finished") >= 1, timeout=30, what="the run")
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
    decided = next(e for e in events(log) if e["event"] == "route.decision")
    assert decided["rationale"].startswith(f"Selected {decided['arm']} for task ok"), decided


def test_every_reason_that_wakes_the_loop_has_its_series_from_the_start() -> None:
    import re

    from factoryd.observe.metrics import PASS_REASONS, Metrics

    source = "".join(p.read_text() for p in (ROOT / "daemon").rglob("*.py"))
    woken = set(re.findall(r'wake\("([a-z_]+)"\)', source)) | {"interval"}
    assert woken <= set(PASS_REASONS), woken - set(PASS_REASONS)
    text = Metrics().exposition().decode()
    for reason in PASS_REASONS:
        assert f'factoryd_reconcile_passes_total{{reason="{reason}"}} 0.0' in text


def test_dropped_output_help_names_both_causes_cap_and_failed_writes() -> None:
    """The counter also counts output a full or failing disk could not take,
    so its help must not send an operator looking only at the log cap."""
    from factoryd.observe.metrics import Metrics

    text = Metrics().exposition().decode()
    (help_line,) = [
        line for line in text.splitlines() if line.startswith("# HELP factoryd_output_dropped_")
    ]
    assert "log cap" in help_line
    assert "could not be written" in help_line
