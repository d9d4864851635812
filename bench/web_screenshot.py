"""Make docs/status-page.png: the status page of a realistic daemon.

Several tasks on three arms; a token pool filling up from recorded claude
runs, a runs pool near its cap, and a codex arm whose pool is held after a
recorded 429. Drives Debian's chromium with Playwright (no browser download).

    python bench/web_screenshot.py [--out docs/status-page.png] [--width 1280]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PY = sys.executable
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def fake_cli(work: Path, name: str, fixture: str, hold: float, code: int) -> Path:
    exe = work / name
    exe.write_text(
        f"#!{PY}\nimport sys, time\n"
        "for i in range(5):\n"
        "    print(f'step {i}: reading the repository', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.3)\n"
        f"sys.stdout.write(open({str(FIXTURES / fixture)!r}).read())\nsys.stdout.flush()\n"
        f"time.sleep({hold})\nsys.exit({code})\n"
    )
    exe.chmod(0o755)
    return exe


def config(work: Path, port: int) -> Path:
    claude = fake_cli(work, "claude", "claude-text.stdout", 20, 0)
    codex = fake_cli(work, "codex", "codex-429.stdout", 0, 1)
    sleeper = [
        PY,
        "-c",
        "import time\nfor i in range(99): print('test', i, 'ok', flush=True); time.sleep(0.5)",
    ]
    flaky = [PY, "-c", "import sys; print('build failed: missing symbol'); sys.exit(1)"]
    text = f"""
[daemon]
state_dir = "{work / "state"}"
metrics_listen = "127.0.0.1:{port}"
loop_interval = "2s"

[[pools]]
name = "anthropic-max"
unit = "tokens"
limit = 11000
window = "5h"

[[pools]]
name = "openai-plus"
unit = "tokens"
limit = 500000
window = "5h"

[[pools]]
name = "ci-runners"
unit = "runs"
limit = 24
window = "1h"

[[arms]]
name = "claude-sonnet"
cli = "claude"
model = "claude-sonnet-4-5"
pools = ["anthropic-max"]
executable = "{claude}"

[[arms]]
name = "codex"
cli = "codex"
model = "gpt-5-codex"
pools = ["openai-plus"]
executable = "{codex}"

[[arms]]
name = "runner"
cli = "command"
pools = ["ci-runners"]

[[tasks]]
name = "lint-fixer"
arms = ["claude-sonnet"]
prompt = "Fix the lint errors"
estimated_tokens = 1500

[[tasks]]
name = "docs-writer"
arms = ["claude-sonnet"]
prompt = "Document the new API"
estimated_tokens = 1500

[[tasks]]
name = "migrate-api"
kind = "oneshot"
arms = ["codex", "claude-sonnet"]
prompt = "Move the handlers to the v2 API"
estimated_tokens = 1500

[[tasks]]
name = "review-bot"
arms = ["codex"]
prompt = "Review open changes"

[[tasks]]
name = "test-runner"
arms = ["runner"]
argv = {json.dumps(sleeper)}

[[tasks]]
name = "flaky-build"
arms = ["runner"]
argv = {json.dumps(flaky)}
backoff = {{ initial = "1s", max = "4s" }}

[[tasks]]
name = "nightly-report"
kind = "scheduled"
schedule = "0 3 * * *"
arms = ["runner"]
argv = ["true"]
"""
    path = work / "factoryd.toml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "status-page.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--settle", type=float, default=25.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="factoryd-shot-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config(work, port)
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [PY, "-m", "factoryd", "run", "--config", str(cfg), "--log-format", "json"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        time.sleep(args.settle)
        with urllib.request.urlopen(url + "/api/status", timeout=10) as resp:  # noqa: S310
            status = json.loads(resp.read())
        run_id = next(t["run_id"] for t in status["tasks"] if t["name"] == "test-runner")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(url + "/")
            page.wait_for_selector("#tasks tbody tr")
            page.locator(f'a[data-run-link="{run_id}"]').first.click()
            page.wait_for_timeout(3000)
            page.locator("#decisions details").first.evaluate("d => d.open = true")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
