"""The adapter contract between the supervisor and one CLI.

An adapter turns (task, arm, prompt) into argv + environment, and gives
the supervisor a fresh parser per run. Parsers are total functions: any
bytes in, events out, never an exception (a line they cannot read is
counted in `parse_errors`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from daemon.agents.events import AgentEvent, Completion, LimitHit, ParseSummary, UsageReport
from daemon.config import ArmLaunch
from daemon.routing.model import ArmSpec, Usage
from daemon.taskspec import TaskSpec


@dataclass(frozen=True, slots=True)
class LaunchContext:
    run_id: str
    task: TaskSpec
    arm: ArmSpec
    launch: ArmLaunch
    prompt: str | None
    workdir: str
    run_dir: Path


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    #: Feed the prompt on stdin from this file (None: /dev/null).
    stdin_path: str | None = None


class Parser:
    """Base parser: folds events into a summary. Subclasses implement `parse_line`."""

    def __init__(self) -> None:
        self.summary = ParseSummary()

    def feed(self, line: bytes, stream: str) -> list[AgentEvent]:
        try:
            events = self.parse_line(line, stream)
        except Exception:  # a parser bug must cost one line, never the run
            self.summary.parse_errors += 1
            return []
        for event in events:
            self._fold(event)
        return events

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


class Adapter(ABC):
    cli: str = ""

    @abstractmethod
    def plan(self, ctx: LaunchContext) -> LaunchPlan: ...

    def parser(self) -> Parser:
        return Parser()
