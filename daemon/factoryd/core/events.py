"""Typed events that parsers produce from an agent's output lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from factoryd.routing.model import Usage


@dataclass(frozen=True, slots=True)
class Activity:
    """A turn, tool call or message: proof of life for stall detection."""

    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Token usage and cost. `cumulative`: a running total that replaces earlier ones."""

    usage: Usage
    cumulative: bool = True


@dataclass(frozen=True, slots=True)
class Completion:
    """The agent's own verdict on the run."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LimitHit:
    """A usage or rate limit. `until`: when the provider says it resets (epoch s)."""

    until: float | None
    text: str
    status: int | None = None


AgentEvent = Activity | UsageReport | Completion | LimitHit


@dataclass(slots=True)
class ParseSummary:
    """What the parser knows when the run is over."""

    usage: Usage | None = None
    completion: Completion | None = None
    limit: LimitHit | None = None
    parse_errors: int = 0
    events: int = 0
    extra: dict[str, object] = field(default_factory=dict)
