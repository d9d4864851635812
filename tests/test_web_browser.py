"""The status page in a real browser (Debian's chromium driven by Playwright)
against a real daemon: what an operator sees, live, and what the page may do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_kit import PY, factoryd, task
from web_kit import CHROMIUM_ARGS, fake_claude, live_daemon, need_chromium

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SLEEPER = "import time\nprint('hello from the run', flush=True)\ntime.sleep(300)"
WAIT = 20_000  # ms: the page must show each change within this


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"the page threw: {errors}"


def opened(page, url: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(url + "/")
    expect(page.locator("#live")).to_have_text("live", timeout=WAIT)
    page.evaluate("window.notReloaded = true")
    return expect


def test_the_page_shows_tasks_and_a_run_started_after_it_opened(tmp_path: Path, page) -> None:
    body = task("alpha", SLEEPER) + task("beta", SLEEPER)
    body += (
        '[[templates]]\nname = "later"\nkind = "oneshot"\n'
        f"argv = {json.dumps([PY, '-c', SLEEPER])}\n"
    )
    with live_daemon(tmp_path, body) as live:
        expect = opened(page, live.url)
        for name in ("alpha", "beta"):
            expect(page.locator(f'#tasks tr[data-task="{name}"]')).to_have_attribute(
                "data-phase", "running", timeout=WAIT
            )
        out = factoryd("submit", "--socket", str(live.sock), "--template", "later")
        assert out.returncode == 0, out.stderr
        sub = out.stdout.strip()
        expect(page.locator(f'#tasks tr[data-task="{sub}"]')).to_have_attribute(
            "data-phase", "running", timeout=WAIT
        )
        run_id = live.task(sub)["run_id"]
        expect(page.locator(f'#runs tr[data-run="{run_id}"]')).to_contain_text(sub, timeout=WAIT)
        expect(page.locator(f'#decisions li[data-task="{sub}"]')).to_contain_text(
            "Selected local", timeout=WAIT
        )
        assert page.evaluate("window.notReloaded") is True


def test_a_pool_hold_appears_when_a_429_arrives(tmp_path: Path, page) -> None:
    gate = tmp_path / "go"
    exe = fake_claude(tmp_path, FIXTURES / "claude-429.stdout", gate)
    body = (
        '[[pools]]\nname = "api"\nunit = "tokens"\nlimit = 1000000\nwindow = "5h"\n\n'
        '[[arms]]\nname = "claude"\ncli = "claude"\nmodel = "claude-sonnet-4-5"\n'
        f'pools = ["api"]\nexecutable = "{exe}"\n\n'
        '[[tasks]]\nname = "asks"\nkind = "oneshot"\narms = ["claude"]\nprompt = "hi"\n'
        "max_restarts = 0\n"
    )
    with live_daemon(tmp_path, body) as live:
        expect = opened(page, live.url)
        pool = page.locator('#pools [data-pool="api"]')
        expect(pool).to_be_visible(timeout=WAIT)
        expect(page.locator('#tasks tr[data-task="asks"]')).to_have_attribute(
            "data-phase", "running", timeout=WAIT
        )
        assert pool.locator(".hold").count() == 0
        gate.touch()
        expect(pool.locator(".hold")).to_contain_text("held until", timeout=WAIT)
        expect(page.locator('#arms tr[data-arm="claude"]')).to_contain_text(
            "pool held: api", timeout=WAIT
        )
        api = next(p for p in live.status()["pools"] if p["name"] == "api")
        assert api["limited_until"] and "429" in api["limited_reason"]
        expect(pool.locator(".hold")).to_contain_text("(429)")


def test_the_log_tail_shows_a_line_written_after_it_opened(tmp_path: Path, page) -> None:
    gate = tmp_path / "go"
    code = (
        "import os, time\nprint('first line', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
        "print('second line, after the page opened', flush=True)\ntime.sleep(300)"
    )
    with live_daemon(tmp_path, task("talker", code)) as live:
        expect = opened(page, live.url)
        link = page.locator('#tasks tr[data-task="talker"] a.run')
        expect(link).to_be_visible(timeout=WAIT)
        link.click()
        log = page.locator("#log-text")
        expect(log).to_contain_text("first line", timeout=WAIT)
        assert "second line" not in log.inner_text()
        gate.touch()
        expect(log).to_contain_text("second line, after the page opened", timeout=WAIT)


def test_with_actions_on_the_page_restarts_a_run_and_refuses_forged_posts(
    tmp_path: Path, page
) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER), web="actions = true") as live:
        expect = opened(page, live.url)
        row = page.locator('#tasks tr[data-task="alpha"]')
        expect(row).to_have_attribute("data-phase", "running", timeout=WAIT)
        first = live.task("alpha")["run_id"]
        # Forged requests from this very page: no CSRF header; another Origin.
        status = page.evaluate(
            """async () => (await fetch('/api/actions/cancel', {method: 'POST',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({target: 'alpha'})})).status"""
        )
        assert status == 403
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        forged = page.request.post(
            live.url + "/api/actions/cancel",
            data=json.dumps({"target": "alpha"}),
            headers={
                "Content-Type": "application/json",
                "X-CSRF-Token": csrf,
                "Origin": "http://evil.example",
            },
        )
        assert forged.status == 403
        assert live.task("alpha")["phase"] == "running"
        # The page's own buttons: cancel stops the run, reset starts a new one.
        row.locator('button[data-action="cancel"]').click()
        expect(row).to_have_attribute("data-phase", "cancelled", timeout=WAIT)
        row.locator('button[data-action="reset"]').click()
        expect(row).to_have_attribute("data-phase", "running", timeout=WAIT)
        second = live.task("alpha")["run_id"]
        assert second and second != first
        done = [e for e in live.events("web.action") if e.get("result") == "done"]
        assert [e["action"] for e in done] == ["cancel", "reset"]


def test_with_actions_off_nothing_is_offered_and_a_post_is_refused(tmp_path: Path, page) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER)) as live:
        expect = opened(page, live.url)
        row = page.locator('#tasks tr[data-task="alpha"]')
        expect(row).to_have_attribute("data-phase", "running", timeout=WAIT)
        assert page.locator("button[data-action]").count() == 0
        assert page.locator("th.act").count() == 0
        status = page.evaluate(
            """async () => (await fetch('/api/actions/cancel', {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token':
                  document.querySelector('meta[name="csrf-token"]').content},
                body: JSON.stringify({target: 'alpha'})})).status"""
        )
        assert status == 403
        assert live.task("alpha")["phase"] == "running"
