"""The cheaper per-run paths of the loop say and count what the plain ones did.

Log lines are rendered by one fused processor (see observe/logs.py): each
line must be what structlog's stock processors wrote, secrets included. A
run's pipes are read at its exit before the runner decides it must clean
up (capture.PipeReader.poll). Metric series are looked up once
(Metrics.child) or kept as numbers (observe/tally.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
from pathlib import Path

import pytest
import structlog
from factoryd.core.outcome import Outcome, RunResult
from factoryd.observe import logs
from factoryd.observe.metrics import Metrics
from factoryd.proc.capture import PipeReader, RunLog
from log_kit import STAMP, configure_stock_chain


class Odd:
    def __repr__(self) -> str:
        return "Odd()"


def _stock_line(event: dict[str, object]) -> str:
    """What the processors logs.py used before the fused one render for `event`."""
    out = io.StringIO()
    configure_stock_chain(out)
    structlog.get_logger().bind(task="t", pools=["p", "q"]).warning("probe", **event)
    return out.getvalue()


def _fused_line(event: dict[str, object]) -> str:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.get_logger(task="t", pools=["p", "q"]).warning("probe", **event)
    return out.getvalue()


def test_a_json_line_is_byte_for_byte_what_the_stock_processors_wrote() -> None:
    event: dict[str, object] = {
        "outcome": "succeeded",
        "n": 3,
        "ratio": 0.25,
        "nan": float("nan"),
        "flag": True,
        "none": None,
        "text": 'caf\u00e9 \u2028 "quoted" \\ tab\t',
        "nested": {"a": [1, (2, 3)], "password": "p4ss", "deeper": {"token": 7}},
        "pair": ("x", 1),
        "odd": Odd(),
        "api_key": "plain",
        "AUTH": None,
    }
    fused, stock = _fused_line(dict(event)), _stock_line(dict(event))
    assert fused.endswith("\n") and fused.count("\n") == 1
    assert STAMP.sub("T", fused) == STAMP.sub("T", stock)
    assert json.loads(fused)["nested"]["password"] == "[redacted]"


def test_the_timestamp_is_iso_utc_with_microseconds_and_now() -> None:
    line = json.loads(_fused_line({}))
    stamp = line["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp), stamp
    from datetime import datetime

    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    import time

    assert abs(when - time.time()) < 5


def test_secret_values_are_scrubbed_from_escaped_text_and_exception_text() -> None:
    secret = 'sk-"odd\\value-123456'
    logs.REDACTOR.add([secret])
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get_logger()
    log.info("probe", reason=f"failed with {secret} twice", items=[f"k={secret}"])
    try:
        raise RuntimeError(f"refused {secret}")
    except RuntimeError:
        log.exception("boom")
    text = out.getvalue()
    assert "odd" not in text, text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["reason"] == "failed with [redacted] twice"
    assert first["items"] == ["k=[redacted]"]
    assert "refused [redacted]" in second["exception"]


@pytest.mark.anyio
async def test_poll_reads_a_pipe_to_eof_at_once_when_its_writers_are_gone(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"one\ntwo\nlast without newline")
    seen: list[bytes] = []
    log = RunLog(tmp_path / "run.log", 1 << 20)
    reader = PipeReader(r, log, lambda block, _n: seen.append(block), lambda: None)
    try:
        assert not reader.poll()  # the writer is still open: what is there is read, no EOF
        assert seen == [b"one\ntwo"]  # the complete lines, handed on as one block
        os.close(w)
        assert reader.poll() and reader.done
        assert seen == [b"one\ntwo", b"last without newline"]
        log.close()
        assert (tmp_path / "run.log").read_bytes() == b"one\ntwo\nlast without newline"
    finally:
        reader.stop()
        os.close(r)


@pytest.mark.anyio
async def test_an_unarmed_reader_stays_out_of_the_loop_until_armed_or_awaited(
    tmp_path: Path,
) -> None:
    """A run that ends at once is read to EOF by `poll` without its pipe ever
    entering the loop's epoll set; `wait` arms it, and armed it reads by itself."""
    selector_map = asyncio.get_running_loop()._selector.get_map()  # type: ignore[attr-defined]
    seen: list[bytes] = []
    log = RunLog(tmp_path / "run.log", 1 << 20)
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"quick\n")
    os.close(w)
    quick = PipeReader(r, log, lambda block, _n: seen.append(block), lambda: None, armed=False)
    assert r not in selector_map
    assert quick.poll() and quick.done and seen == [b"quick"]
    assert r not in selector_map
    os.close(r)
    r, w = os.pipe()
    os.set_blocking(r, False)
    slow = PipeReader(r, log, lambda block, _n: seen.append(block), lambda: None, armed=False)
    try:
        assert r not in selector_map
        waiting = asyncio.ensure_future(slow.wait())
        await asyncio.sleep(0)
        assert r in selector_map  # awaited: armed
        os.write(w, b"later\n")
        os.close(w)
        await asyncio.wait_for(waiting, 10)
        assert seen == [b"quick", b"later"] and r not in selector_map
    finally:
        slow.stop()
        log.close()
        os.close(r)


def test_a_metric_series_is_looked_up_once_and_counts_as_labels_did() -> None:
    metrics = Metrics()
    first = metrics.child(metrics.spawn_failures, "task", "arm")
    assert metrics.child(metrics.spawn_failures, "task", "arm") is first
    assert first is metrics.spawn_failures.labels("task", "arm")
    for _ in range(3):
        metrics.run_finished("task", "arm", "command", RunResult("r", Outcome.SUCCEEDED, "ok"))
    value = metrics.registry.get_sample_value(
        "factoryd_runs_finished_total", {"task": "task", "arm": "arm", "outcome": "succeeded"}
    )
    assert value == 3


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    logs.configure("json", "info", stream=io.StringIO())
