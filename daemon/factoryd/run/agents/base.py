"""The adapter contract between the supervisor and one CLI.

An adapter turns (task, arm, prompt) into argv + environment, and gives
the supervisor a fresh parser per run. Parsers are total functions: any
bytes in, events out, never an exception (a line they cannot read is
counted in `parse_errors`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from factoryd.config.model import ArmLaunch
from factoryd.core.events import (
    Activity,
    AgentEvent,
    Completion,
    LimitHit,
    ParseSummary,
    UsageReport,
)
from factoryd.core.taskspec import TaskSpec
from factoryd.routing.model import ArmSpec, Usage
from factoryd.run.agents.limits import looks_like_limit, reset_time
from factoryd.run.agents.lines import clean, json_object


@dataclass(frozen=True, slots=True)
class LaunchContext:
    run_id: str
    task: TaskSpec
    arm: ArmSpec
    launch: ArmLaunch
    prompt: str | None
    workdir: str
    #: The directory holding every run's own directory.
    runs_dir: Path

    @property
    def run_dir(self) -> Path:
        """The run's own directory (HOME, TMPDIR, prompt file, agent config), made
        by `build_run` for the runs whose adapters use it. Worked out when asked:
        a plain command's run never asks, and a path per run was a cost per run."""
        return self.runs_dir / self.run_id


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    #: Feed the prompt on stdin from this file (None: /dev/null).
    stdin_path: str | None = None


class Parser:
    """Base parser: folds events into a summary. Subclasses implement `parse_line`.

    `clock` (wall time) dates relative limit messages ("try again in 3 hours").
    """

    def __init__(self, clock: Callable[[], float] = time.time, local: tzinfo | None = None) -> None:
        self.summary = ParseSummary()
        self.clock = clock
        self.local = local

    def feed(self, line: bytes, stream: str) -> list[AgentEvent]:
        try:
            events = self.parse_line(line, stream)
        except Exception:  # a parser bug must cost one line, never the run
            self.summary.parse_errors += 1
            return []
        if events is _ACTIVITY_ONLY:  # the common case of a flood: nothing to fold
            self.summary.events += 1
            return events
        for event in events:
            self._fold(event)
        return events

    def feed_block(self, block: bytes, count: int, stream: str) -> list[AgentEvent]:
        """Events of `count` newline-joined lines, in order. Plain activity is
        reported once per block: what follows activity (the stall timer) needs
        no more."""
        if count and self.only_activity(block, count, stream):
            self.summary.events += count
            return _ACTIVITY_ONLY
        events: list[AgentEvent] = []
        active = False
        for line in block.split(b"\n") if count else ():
            found = self.feed(line, stream)
            if found is _ACTIVITY_ONLY:
                active = True
            else:
                events.extend(found)
        if active and not events:
            return _ACTIVITY_ONLY
        return events

    def only_activity(self, block: bytes, count: int, stream: str) -> bool:
        """True if every line of the block is plain activity, known without parsing."""
        return False

    def parse_line(self, line: bytes, stream: str) -> list[AgentEvent]:
        return []

    def finish(self) -> ParseSummary:
        return self.summary

    def _fold(self, event: AgentEvent) -> None:
        s = self.summary
        s.events += 1
        if isinstance(event, UsageReport):
            if event.cumulative or s.usage is None:
                s.usage = event.usage
            else:
                s.usage = _add(s.usage, event.usage)
        elif isinstance(event, Completion):
            s.completion = event
        elif isinstance(event, LimitHit) and (s.limit is None or event.until is not None):
            s.limit = event


def _add(a: Usage, b: Usage) -> Usage:
    cost = (
        None if a.cost_usd is None and b.cost_usd is None else (a.cost_usd or 0) + (b.cost_usd or 0)
    )
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cost_usd=cost,
    )


ACTIVITY = Activity("output")
_ACTIVITY_ONLY: list[AgentEvent] = [ACTIVITY]  # shared and never mutated


class JsonLinesParser(Parser):
    """For CLIs that print one JSON object per stdout line.

    A stdout line that is not a JSON object (torn, truncated, noise) is
    counted in `parse_errors` and skipped. stderr is scanned for limit
    messages only when `scan_stderr` is set (gemini prints its 429 there).
    """

    scan_stderr = False
    _needles: tuple[bytes, ...] = ()
    #: Byte strings that a line must contain to be worth decoding: the lines
    #: that carry usage, completion, errors or limits. Any other well-formed
    #: object line (the bulk: messages, tool calls) is activity, recognised
    #: without json.loads; that keeps a flood of output near disk speed.
    #: Empty: decode every line.
    markers: tuple[bytes, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._needles = essential_markers(cls.markers)

    def _has_marker(self, data: bytes) -> bool:
        return any(needle in data for needle in self._needles)

    def only_activity(self, block: bytes, count: int, stream: str) -> bool:
        """The flood fast path: a whole chunk checked by a few C-level scans.

        True when no line carries a marker or an escape, and every line is
        exactly `{...}` (counted by line starts and ends): the same verdict
        `parse_line` reaches line by line, for a fraction of the cost.
        """
        if stream != "stdout" or not self._needles:
            return False
        return (
            block.startswith(b"{")
            and block.endswith(b"}")
            and block.count(b"}\n{") == count - 1
            and b"\x1b" not in block
            and not self._has_marker(block)
        )

    def parse_line(self, line: bytes, stream: str) -> list[AgentEvent]:
        if stream == "stdout" and self._needles and not self._has_marker(line):
            body = line.strip()
            if body.startswith(b"{") and body.endswith(b"}") and b"\x1b" not in body:
                return _ACTIVITY_ONLY
        text = clean(line)
        if not text:
            return []
        if stream == "stderr":
            if self.scan_stderr and looks_like_limit(text):
                return [self.limit(text)]
            return []
        obj = json_object(text)
        if obj is None:
            self.summary.parse_errors += 1
            return []
        return self.on_object(obj)

    def on_object(self, obj: dict[str, Any]) -> list[AgentEvent]:
        return []

    def limit(self, text: str, status: int | None = None) -> LimitHit:
        return LimitHit(
            until=reset_time(text, self.clock(), self.local), text=text[:500], status=status
        )


def essential_markers(markers: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The markers worth searching for: one that contains another is redundant.

    Each is looked for with `bytes.__contains__` (CPython's fast search, about
    2 GB/s here), not one regex alternation over all of them (about 240 MB/s:
    it was half the cost of capturing a flood).
    """
    return tuple(sorted({m for m in markers if not any(o != m and o in m for o in markers)}))


class Adapter(ABC):
    cli: str = ""

    @abstractmethod
    def plan(self, ctx: LaunchContext) -> LaunchPlan: ...

    def parser(self, clock: Callable[[], float] = time.time) -> Parser:
        return Parser(clock)

    def executable(self, ctx: LaunchContext) -> str:
        return ctx.launch.executable or self.cli
