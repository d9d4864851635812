"""Parsers on output recorded from the real CLIs (tests/fixtures, see record.py),
plus torn lines, ANSI noise, invalid UTF-8 and arbitrary bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from factoryd.core.events import Activity, Completion, LimitHit
from factoryd.run.agents.base import Parser
from factoryd.run.agents.registry import ADAPTERS
from fake_models import USAGE
from hypothesis import given, settings
from hypothesis import strategies as st

FIXTURES = Path(__file__).parent / "fixtures"
CLIS = ("claude", "codex", "gemini", "opencode")
NOW = 1_800_000_000.0
#: claude and opencode report cost (opencode with the arm's prices, which the
#: recording used: $3 and $15 per million); codex and gemini report none.
REPORTED_COST = {"claude": 0.004542, "opencode": 0.004542, "codex": None, "gemini": None}


def parse(cli: str, stdout: bytes, stderr: bytes = b"") -> Parser:
    parser = ADAPTERS[cli].parser(lambda: NOW)
    for line in stdout.splitlines():
        parser.feed(line, "stdout")
    for line in stderr.splitlines():
        parser.feed(line, "stderr")
    return parser


def fixture(cli: str, mode: str, stream: str = "stdout") -> bytes:
    return (FIXTURES / f"{cli}-{mode}.{stream}").read_bytes()


@pytest.mark.parametrize("cli", CLIS)
def test_successful_run_reports_tokens_cost_and_completion(cli: str) -> None:
    summary = parse(cli, fixture(cli, "text")).finish()
    assert summary.usage is not None
    assert (summary.usage.input_tokens, summary.usage.output_tokens) == (
        USAGE["input"],
        USAGE["output"],
    )
    assert (
        summary.usage.cost_usd == pytest.approx(REPORTED_COST[cli])
        if REPORTED_COST[cli]
        else summary.usage.cost_usd is None
    )
    assert summary.completion == Completion(True, summary.completion.reason)
    assert summary.limit is None and summary.parse_errors == 0
    assert summary.events >= 2


@pytest.mark.parametrize("cli", CLIS)
def test_tool_run_counts_both_turns_once(cli: str) -> None:
    """Two model calls: codex's running total replaces, opencode's steps add up."""
    summary = parse(cli, fixture(cli, "tool")).finish()
    assert summary.usage is not None
    assert summary.usage.input_tokens == 2 * USAGE["input"]
    assert summary.usage.output_tokens == 2 * USAGE["output"]
    assert summary.completion is not None and summary.completion.ok


@pytest.mark.parametrize("cli", CLIS)
def test_429_is_a_limit_and_a_failed_completion(cli: str) -> None:
    stderr = fixture(cli, "429", "stderr") if cli == "gemini" else b""
    summary = parse(cli, fixture(cli, "429"), stderr).finish()
    assert isinstance(summary.limit, LimitHit)
    assert summary.completion is not None and not summary.completion.ok


def test_claude_is_error_beats_subtype_success() -> None:
    text = fixture("claude", "429")
    assert b'"subtype":"success"' in text and b'"is_error":true' in text
    summary = parse("claude", text).finish()
    assert summary.completion is not None and not summary.completion.ok
    assert summary.limit is not None and summary.limit.status == 429


def test_opencode_429_takes_its_reset_from_retry_after() -> None:
    summary = parse("opencode", fixture("opencode", "429")).finish()
    assert summary.limit is not None and summary.limit.until == NOW + 1
    assert summary.limit.status == 429


def test_gemini_quota_on_stderr_alone_is_a_limit() -> None:
    summary = parse("gemini", b"", fixture("gemini", "429", "stderr")).finish()
    assert summary.limit is not None and "exhausted your daily quota" in summary.limit.text


def test_claude_subscription_rate_limit_event_carries_reset_time() -> None:
    line = (
        b'{"type":"rate_limit_event","rate_limit_info":{"status":"rejected",'
        b'"resetsAt":1800003600,"rateLimitType":"five_hour"}}'
    )
    summary = parse("claude", line).finish()
    assert summary.limit is not None and summary.limit.until == 1800003600.0
    warn = b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning"}}'
    assert parse("claude", warn).finish().limit is None


def test_claude_text_form_of_the_usage_limit() -> None:
    line = (
        b'{"type":"assistant","message":{"content":[{"type":"text",'
        b'"text":"Claude AI usage limit reached|1800007200"}]}}'
    )
    summary = parse("claude", line).finish()
    assert summary.limit is not None and summary.limit.until == 1800007200.0


def test_codex_usage_limit_message_in_turn_failed() -> None:
    line = (
        b'{"type":"turn.failed","error":{"message":"You\'ve hit your usage limit. '
        b'Upgrade to Pro or try again in 2 hours 30 minutes."}}'
    )
    summary = parse("codex", line).finish()
    assert summary.limit is not None and summary.limit.until == NOW + 9000


@pytest.mark.parametrize("cli", CLIS)
def test_torn_lines_ansi_noise_and_invalid_utf8_are_counted_never_fatal(cli: str) -> None:
    lines = fixture(cli, "text").splitlines()
    mangled = [b"\x1b[32m" + lines[0] + b"\x1b[0m"]  # colored but whole: still parsed
    mangled += [line[: len(line) // 2] for line in lines[1:2]]  # torn in half
    mangled += [b"\xff\xfe\xfa not json at all", b'{"type": "text", "x": "\xff"}', b""]
    mangled += lines[1:]
    parser = ADAPTERS[cli].parser(lambda: NOW)
    for line in mangled:
        parser.feed(line, "stdout")
    summary = parser.finish()
    assert summary.parse_errors == 2  # the torn line and the binary garbage
    assert summary.usage is not None and summary.usage.input_tokens == USAGE["input"]
    assert summary.completion is not None and summary.completion.ok


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=20),
    cli=st.sampled_from([*CLIS, "command"]),
    stream=st.sampled_from(["stdout", "stderr"]),
)
def test_arbitrary_bytes_never_raise(chunks: list[bytes], cli: str, stream: str) -> None:
    parser = ADAPTERS[cli].parser(lambda: NOW)
    for chunk in chunks:
        parser.feed(chunk, stream)
    summary = parser.finish()
    assert summary.parse_errors >= 0
    if summary.usage is not None:
        assert summary.usage.input_tokens >= 0 and summary.usage.output_tokens >= 0


@settings(max_examples=300, deadline=None)
@given(
    obj=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "type",
                        "usage",
                        "result",
                        "is_error",
                        "part",
                        "tokens",
                        "error",
                        "data",
                        "stats",
                        "status",
                        "item",
                        "message",
                        "input_tokens",
                        "statusCode",
                        "rate_limit_info",
                        "resetsAt",
                        "cost",
                        "content",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=30,
    ),
    kind=st.sampled_from(
        [
            "result",
            "turn.completed",
            "turn.failed",
            "error",
            "step_finish",
            "rate_limit_event",
            "assistant",
            "item.completed",
        ]
    ),
    cli=st.sampled_from(CLIS),
)
def test_arbitrary_json_shapes_never_raise(obj: object, kind: str, cli: str) -> None:
    import json

    payload = obj if isinstance(obj, dict) else {"x": obj}
    payload["type"] = kind
    parser = ADAPTERS[cli].parser(lambda: NOW)
    parser.feed(json.dumps(payload).encode(), "stdout")
    assert parser.finish().parse_errors == 0


def _summary_tuple(parser: Parser) -> tuple:
    s = parser.finish()
    return (s.events, s.parse_errors, s.usage, s.completion, s.limit)


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(
        st.one_of(
            st.integers(0, 10_000),  # a line of the recorded fixture
            st.sampled_from(
                [
                    b'{"type":"assistant","message":{"content":"plain text"}}',
                    b'{"type":"assistant","note":"an error was mentioned"}',
                    b'  {"type":"assistant"}  ',
                    b'{"type":"assistant"}\r',
                    b"\x1b[1m{}\x1b[0m",
                    b"not json",
                    b"{torn",
                    b"",
                    b"{}",
                ]
            ),
        ),
        max_size=40,
    ),
    cli=st.sampled_from(CLIS),
    mode=st.sampled_from(["text", "tool", "429"]),
    stream=st.sampled_from(["stdout", "stderr"]),
    batch=st.integers(1, 12),
)
def test_batches_and_single_lines_give_the_same_events_and_counts(
    picks: list, cli: str, mode: str, stream: str, batch: int
) -> None:
    """The flood fast path (`feed_block` on a quiet block) never changes a verdict."""
    recorded = fixture(cli, mode).splitlines() or [b"{}"]
    lines = [recorded[p % len(recorded)] if isinstance(p, int) else p for p in picks]
    one, many = ADAPTERS[cli].parser(lambda: NOW), ADAPTERS[cli].parser(lambda: NOW)
    single_events = [
        e for line in lines for e in one.feed(line, stream) if not isinstance(e, Activity)
    ]
    batched_events = []
    for i in range(0, len(lines), batch):
        chunk = lines[i : i + batch]
        found = many.feed_block(b"\n".join(chunk), len(chunk), stream)
        batched_events += [e for e in found if not isinstance(e, Activity)]
    assert batched_events == single_events
    assert _summary_tuple(many) == _summary_tuple(one)


def test_a_quiet_flood_is_counted_without_decoding() -> None:
    parser = ADAPTERS["claude"].parser(lambda: NOW)
    line = b'{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]}}'
    events = parser.feed_block(b"\n".join([line] * 1000), 1000, "stdout")
    assert len(events) == 1 and isinstance(events[0], Activity)
    assert parser.finish().events == 1000 and parser.finish().parse_errors == 0


@pytest.mark.parametrize("odd", [b"not json", b"{torn", b"", b"  {}", b"\x1b[1m{}\x1b[0m", b"{}\r"])
def test_one_odd_line_in_a_quiet_batch_is_judged_like_a_single_line(odd: bytes) -> None:
    quiet = b'{"type":"assistant","message":{"content":"plain"}}'
    batch = [quiet, odd, quiet]
    one, many = ADAPTERS["claude"].parser(lambda: NOW), ADAPTERS["claude"].parser(lambda: NOW)
    for line in batch:
        one.feed(line, "stdout")
    many.feed_block(b"\n".join(batch), len(batch), "stdout")
    assert _summary_tuple(many) == _summary_tuple(one)
