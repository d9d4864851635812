"""A bound logger's JSON lines, rendered with its context spliced in, are the stock ones.

observe/logs.py renders a bound logger's context (a run's task, id, arm,
pools) once and splices it into each of its lines, and appends `event`,
`level` and `timestamp` as text (the daemon writes a few lines per run).
Every line must still be byte for byte what structlog's stock processors
wrote, with secrets scrubbed, whatever the fields: these compare both ways
of rendering over the cases where the splice could differ.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import structlog
from factoryd.observe import logs
from log_kit import STAMP, configure_stock_chain

#: Calls on a bound logger: (method, event, positional args, fields).
Calls = list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]


def _emit(log: Any, calls: Calls) -> None:
    for method, event, args, fields in calls:
        getattr(log, method)(event, *args, **fields)


def _stock(context: dict[str, Any], calls: Calls, before: Callable[[], None]) -> str:
    out = io.StringIO()
    configure_stock_chain(out)
    log = structlog.get_logger().bind(**context)
    before()
    _emit(log, calls)
    return STAMP.sub('"timestamp": "T"', out.getvalue())


def _spliced(context: dict[str, Any], calls: Calls, before: Callable[[], None]) -> str:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get_logger(**context)
    before()
    _emit(log, calls)
    return STAMP.sub('"timestamp": "T"', out.getvalue())


def _same(context: dict[str, Any], calls: Calls, before: Callable[[], None] = lambda: None) -> str:
    spliced, stock = _spliced(context, calls, before), _stock(context, calls, before)
    assert spliced == stock
    assert spliced.count("\n") == len(calls)
    return spliced


RUN = {"task": "t\u00e9", "run_id": "r-1", "arm": "a", "pools": ["p", "q"]}


def test_a_runs_lines_are_the_stock_lines_line_after_line() -> None:
    calls: Calls = [
        ("info", "run.started", (), {"pid": 42}),
        ("debug", "run.quiet", (), {"n": 1}),  # below the level: no line either way
        (
            "info",
            "run.finished",
            (),
            {"outcome": "exited", "duration": 0.002, "cost": 0.0, "log": None, "flag": False},
        ),
        ("warning", "run.stopping", (), {}),
        ("warn", "limit.hit", (), {"until": "2026", "raw": 'said "429" \\ \u2028'}),
        ("error", "run.internal", (), {"nested": {"token": 5, "list": [1, {"secret": "s"}]}}),
    ]
    calls = [c for c in calls if c[0] != "debug"]
    text = _same(RUN, calls)
    first = json.loads(text.splitlines()[0])
    assert list(first) == ["task", "run_id", "arm", "pools", "pid", "event", "level", "timestamp"]


def test_fields_that_clash_with_the_context_or_the_lines_own_keep_their_places() -> None:
    _same(
        RUN,
        [
            ("info", "again", (), {"task": "other", "x": 1}),  # a bound field given again
            ("info", "own", (), {"level": "mine"}),  # a field the processors write
            ("info", "count %d of %s", (3, "n"), {"y": 2}),  # positional arguments
            ("info", "no fields", (), {}),
        ],
    )
    _same({}, [("info", "unbound", (), {"a": [1, 2]}), ("info", "bare", (), {})])


def test_secrets_in_the_context_are_scrubbed_even_when_registered_after_binding() -> None:
    secret = 'ctx-secret-\\"value-987654'
    text = _same(
        {**RUN, "api_key": "plain", "note": f"uses {secret}"},
        [("info", "probe", (), {"reason": f"said {secret}"})] * 2,
        before=lambda: logs.REDACTOR.add([secret]),
    )
    assert "987654" not in text, text
    line = json.loads(text.splitlines()[0])
    assert line["api_key"] == "[redacted]"
    assert line["note"] == "uses [redacted]" and line["reason"] == "said [redacted]"


def test_an_exception_line_carries_its_traceback() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get_logger(**RUN)
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("run.internal_error")
    line = json.loads(out.getvalue())
    assert line["task"] == "t\u00e9" and line["level"] == "error"
    assert "ValueError: bad thing" in line["exception"]


def test_the_context_is_rendered_once_per_bound_logger() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get_logger(**RUN)
    log.info("one")
    head = log._json_head
    log.info("two", n=2)
    assert log._json_head is head  # reused, not rendered again
    assert head[1] == '"task": "t\\u00e9", "run_id": "r-1", "arm": "a", "pools": ["p", "q"]'
    assert out.getvalue().count(head[1]) == 2
