"""Real factoryd daemons as fleet hosts: one state dir, log and socket each, one database.

Each `Host` writes its own config (the shared `[fleet]` table, pools and
arms; its own tasks), runs `python -m factoryd run` as an operator would,
with the connection string in the environment (`database = "env:..."`),
and reads its JSON log back for the tests' assertions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon_kit import ROOT, events

PY = sys.executable
DSN_ENV = "FACTORYD_TEST_FLEET_DB"

#: A fake `claude` that answers like the real CLI does when the provider says 429.
FAKE_CLAUDE_429 = """#!{py}
import json, sys
print(json.dumps({{"type": "system", "subtype": "init"}}), flush=True)
print(json.dumps({{"type": "result", "subtype": "success", "is_error": True,
                  "api_error_status": 429,
                  "result": "API Error: Request rejected (429) - rate limit exceeded"}}),
      flush=True)
sys.exit(1)
"""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def table(header: str, **keys: Any) -> str:
    return "\n".join([header, *(f"{k} = {toml_value(v)}" for k, v in keys.items())]) + "\n\n"


def anchor_an_hour_window() -> str:
    """An anchor a minute ago: a '1h' window will not reset during a test."""
    return datetime.fromtimestamp(time.time() - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Host:
    name: str
    root: Path
    dsn: str
    #: Config text after [daemon] and [fleet]: pools, arms, tasks, templates.
    body: str
    fleet: dict[str, Any] = field(default_factory=dict)
    daemon: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def socket(self) -> Path:
        return self.root / "control.sock"

    @property
    def config(self) -> Path:
        return self.root / "factoryd.toml"

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = table(
            "[daemon]",
            state_dir=str(self.root / "state"),
            log_dir=str(self.root / "logs"),
            control_socket=str(self.socket),
            **{"metrics_listen": "off", "loop_interval": "0.5s", **self.daemon},
        )
        text += table("[fleet]", database=f"env:{DSN_ENV}", host=self.name, **self.fleet)
        self.config.write_text(text + self.body)

    def start(self) -> None:
        self.write()
        env = {**os.environ, DSN_ENV: self.dsn}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PY, "-m", "factoryd", "run", "--config", str(self.config), "--log-format", "json"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=env,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        found = events(self.log)
        return found if name is None else [e for e in found if e.get("event") == name]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "factoryd", *args, "--socket", str(self.socket)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )

    def metric(self, name: str) -> float | None:
        """One unlabelled sample from the daemon's /metrics (metrics_listen must be on)."""
        ports = [e["port"] for e in self.events("metrics.listening")]
        if not ports:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith((name + " ", name + "{")):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--json")
        if done.returncode != 0:
            return {"tasks": []}
        result: dict[str, Any] = json.loads(done.stdout)
        return result


def when(e: dict[str, Any]) -> float:
    """A JSON log line's instant (epoch seconds)."""
    return datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
