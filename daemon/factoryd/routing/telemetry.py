"""Per-arm telemetry fed by run outcomes: throughput, latency, health, limits.

Telemetry is bounded whatever the run rate: outcomes are folded into 60
time buckets spanning the telemetry window, and everything the router reads
(throughput, latency, success rate, session tokens) is summed from the
buckets inside the window, so a long-lived daemon neither grows nor judges
an arm by last week's runs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from factoryd.routing.versions import ArmVersions


class RunSample(NamedTuple):
    """One finished run as telemetry sees it (a named tuple: one is made per run)."""

    at: float
    ok: bool
    duration: float
    tokens: int = 0


BUCKETS_PER_WINDOW = 60


@dataclass(slots=True)
class Bucket:
    """Samples of runs that ended within one slice of the telemetry window."""

    start: float
    ok: int = 0
    failed: int = 0
    #: Sum of durations of successful runs, for the mean latency.
    ok_seconds: float = 0.0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Circuit breaker: after `failure_threshold` arm faults in a row, rest the arm."""

    failure_threshold: int = 3
    cooldown: float = 300.0
    max_cooldown: float = 3600.0


@dataclass(slots=True)
class ArmTelemetry:
    buckets: deque[Bucket] = field(default_factory=deque)
    last_event_at: float | None = None
    consecutive_faults: int = 0
    backoff_until: float | None = None
    #: An arm-level subscription limit (for arms that draw on no pool).
    limited_until: float | None = None
    limited_reason: str = ""
    #: Set by an operator or an external probe; False keeps the arm out.
    healthy: bool = True
    #: What secret the daemon's environment lacks for the arm ("" none): keeps
    #: it out. Set when a config is applied; not part of the saved state.
    missing_secret: str = ""
    #: Sums over the window, keyed by the window's position in buckets and
    #: kept up to date as outcomes arrive (the router reads them whenever an
    #: arm's view is rebuilt, which is after every run of the arm).
    sums_key: int | None = None
    sums: tuple[int, int, float, int] = (0, 0, 0.0, 0)
    #: Buckets starting after this instant are inside the summed window.
    sums_cut: float = 0.0

    def invalidate(self) -> None:
        """Forget derived sums after the buckets were changed wholesale."""
        self.sums_key = None

    def clear_faults(self) -> None:
        """A healthy run: the fault count starts over and any rest ends."""
        self.consecutive_faults = 0
        self.backoff_until = None

    def add(self, sample: RunSample, span: float) -> None:
        at, ok, duration, tokens = sample  # unpacked: a named tuple's fields read slowly
        width = span / BUCKETS_PER_WINDOW
        start = at - at % width
        buckets = self.buckets
        last = buckets[-1] if buckets else None
        if last is None or last.start < start:
            bucket = Bucket(start)
            buckets.append(bucket)
        elif last.start == start:  # the usual case: a run that ended in the newest bucket
            bucket = last
        else:
            # Out-of-order sample: fold it into the newest bucket not after it.
            bucket = next((b for b in reversed(buckets) if b.start <= start), buckets[0])
        if ok:
            bucket.ok += 1
            bucket.ok_seconds += duration
        else:
            bucket.failed += 1
        bucket.tokens += tokens
        if self.sums_key is not None and bucket.start > self.sums_cut:
            n_ok, n_failed, ok_seconds, n_tokens = self.sums
            if ok:
                n_ok, ok_seconds = n_ok + 1, ok_seconds + duration
            else:
                n_failed += 1
            self.sums = (n_ok, n_failed, ok_seconds, n_tokens + tokens)
        while buckets and buckets[0].start <= at - span - width:
            buckets.popleft()

    def resum(self, now: float, span: float, key: int) -> tuple[int, int, float, int]:
        """Sum the buckets inside the window ending at `now` (position `key`) and
        keep the sums for that position (they follow each outcome from then on)."""
        recent = self.window(now, span)
        self.sums = (
            sum(b.ok for b in recent),
            sum(b.failed for b in recent),
            sum(b.ok_seconds for b in recent),
            sum(b.tokens for b in recent),
        )
        self.sums_key = key
        self.sums_cut = _cut(now, span)
        return self.sums

    def window(self, now: float, span: float) -> list[Bucket]:
        return [b for b in self.buckets if b.start > _cut(now, span)]


class Performance(NamedTuple):
    """What the router reads of an arm's telemetry at one instant (a named
    tuple: one is made whenever an arm's view is rebuilt)."""

    throughput: float
    latency: float | None
    success_rate: float | None
    session_tokens: int
    age: float | None


class TelemetryBook:
    """Telemetry of every arm, keyed by arm name."""

    def __init__(
        self,
        window: float = 3600.0,
        health: HealthPolicy | None = None,
        versions: ArmVersions | None = None,
    ) -> None:
        self.window = window
        self.health = health or HealthPolicy()
        self.arms: dict[str, ArmTelemetry] = {}
        self.versions = versions or ArmVersions()

    def arm(self, name: str) -> ArmTelemetry:
        """The arm's telemetry, to change: counts as a change for cached views."""
        self.versions.bump(name)
        tel = self.arms.get(name)
        if tel is None:
            tel = self.arms[name] = ArmTelemetry()
        return tel

    def record(self, arm: str, sample: RunSample, healthy: bool = False) -> None:
        """Fold a finished run in; `healthy`: it also counts as `healthy_run` (may
        be passed by position: the engine does, after every run)."""
        tel = self.arm(arm)
        tel.add(sample, self.window)
        at, last = sample.at, tel.last_event_at or sample.at
        tel.last_event_at = at if at > last else last  # max(last, at)
        if healthy:  # one change to the arm with its sample, not a second one
            tel.clear_faults()

    def touch(self, arm: str, at: float) -> None:
        """Any sign of life from the arm (a streamed event) refreshes its age."""
        tel = self.arm(arm)
        tel.last_event_at = max(tel.last_event_at or at, at)

    def fault(self, arm: str, now: float) -> float | None:
        """Count a failure that is the arm's fault; return the backoff end if it trips."""
        tel = self.arm(arm)
        tel.consecutive_faults += 1
        over = tel.consecutive_faults - self.health.failure_threshold
        if over < 0:
            return None
        rest = min(self.health.cooldown * 2**over, self.health.max_cooldown)
        tel.backoff_until = now + rest
        return tel.backoff_until

    def healthy_run(self, arm: str) -> None:
        self.arm(arm).clear_faults()

    def limit(self, arm: str, until: float, reason: str) -> None:
        tel = self.arm(arm)
        if tel.limited_until is None or until > tel.limited_until:
            tel.limited_until = until
            tel.limited_reason = reason

    def condition(self, arm: str, now: float) -> str:
        """What keeps the arm out right now, by its own telemetry (pools aside):
        "unhealthy", "resting" (circuit-breaker backoff), "limited", or "ok"."""
        tel = self.arms.get(arm)
        if tel is None:
            return "ok"
        if tel.missing_secret:
            return "secret_missing"
        if not tel.healthy:
            return "unhealthy"
        if tel.backoff_until is not None and now < tel.backoff_until:
            return "resting"
        if tel.limited_until is not None and now < tel.limited_until:
            return "limited"
        return "ok"

    def performance(self, arm: str, now: float) -> Performance | None:
        """None when the arm has never reported anything."""
        return self.performance_until(arm, now)[0]

    def performance_until(self, arm: str, now: float) -> tuple[Performance | None, float]:
        """(`performance(arm, now)`, the instant it may next change without a new
        outcome: when the window passes a bucket edge, inf for an arm with no
        buckets). One call, as the router reads both on every view rebuild."""
        tel = self.arms.get(arm)
        if tel is None:
            return None, math.inf
        window = self.window
        width = window / BUCKETS_PER_WINDOW
        # Which buckets are inside the window changes only at bucket boundaries.
        key = math.floor((now - window) / width)
        until = (key + 1) * width + window if tel.buckets else math.inf
        if tel.last_event_at is None:
            return None, until
        sums = tel.sums if tel.sums_key == key else tel.resum(now, window, key)
        ok, failed, ok_seconds, tokens = sums
        total = ok + failed
        # tuple.__new__: a named tuple's own __new__ is a Python function (a
        # frame per call); the fields in their declared order.
        perf = tuple.__new__(
            Performance,
            (
                ok / window,
                ok_seconds / ok if ok else None,
                ok / total if total else None,
                tokens,
                now - tel.last_event_at,
            ),
        )
        return perf, until


def _cut(now: float, span: float) -> float:
    """Buckets starting after this are inside the window ending at `now`."""
    return now - span - span / BUCKETS_PER_WINDOW
