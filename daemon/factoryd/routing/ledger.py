"""Pool accounting in real units: reserve, commit, rollback, expire, reset, limits.

The ledger is the single record of how much of each pool is used and held.
Its rules, each fixing a defect of seed B:

* every charge is in the pool's own unit (tokens, runs or USD);
* a reservation is all-or-nothing across the arm's pools, and a refusal is
  a value, not an exception, so the router can move on to the next arm;
* reservations expire, so a run that was lost cannot hold capacity forever;
* a window reset zeroes `used` but keeps in-flight reservations, and the
  current window is computed from the clock, so an idle gap catches up in
  one step;
* `reserved` is the exact sum of live holds (math.fsum), so it cannot drift
  below zero however commits and expiries interleave;
* a limit reported by a provider ("exhausted until T") is held until T.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from factoryd.routing.model import PoolSpec, RejectReason
from factoryd.routing.pacing import PACE_STEPS, paced_fraction
from factoryd.routing.windows import window_bounds
from factoryd.units.timefmt import iso as _iso


@dataclass(slots=True)
class Reservation:
    """Capacity held for one run on every pool of its arm until commit or rollback."""

    id: str
    arm: str
    task: str
    charges: dict[str, float]
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a pool cannot take a charge; carried into the decision's rejections."""

    pool: str
    reason: RejectReason
    detail: str


@dataclass(slots=True)
class PoolState:
    spec: PoolSpec
    used: float = 0.0
    window_start: float | None = None
    window_end: float | None = None
    limited_until: float | None = None
    limited_reason: str = ""
    #: Consecutive limits without a reset time; escalates the default hold.
    strikes: int = 0
    holds: dict[str, float] = field(default_factory=dict)
    reserved: float = 0.0

    def remaining(self) -> float:
        return self.spec.limit - self.used - self.reserved

    def fraction_left(self) -> float:
        return self.remaining() / self.spec.limit

    def is_limited(self, now: float) -> bool:
        return self.limited_until is not None and now < self.limited_until

    def _sum_holds(self) -> None:
        self.reserved = math.fsum(self.holds.values())


@dataclass(frozen=True, slots=True)
class ScarcityPolicy:
    """How a pool's fill level turns into a cost multiplier."""

    max_multiplier: float = 100.0
    #: Use-it-or-lose-it: close to a reset, unused capacity is cheap.
    discount_window: float = 3600.0
    discount_min_fraction: float = 0.3
    discount: float = 0.5
    #: Judge a windowed pool's fill against its window's time left (pacing.py); 0: off.
    pace_steps: int = PACE_STEPS


class PoolLedger:
    """Usage, holds and limits of every configured pool."""

    def __init__(self, pools: Iterable[PoolSpec], scarcity: ScarcityPolicy | None = None) -> None:
        self.pools: dict[str, PoolState] = {}
        self.reservations: dict[str, Reservation] = {}
        self.scarcity_policy = scarcity or ScarcityPolicy()
        self.expired_total = 0
        self._next_id = 1
        self._next_event = -math.inf
        #: Asked to confirm each reservation that passed the local check: may
        #: refuse it, or return it under another id (a fleet's shared ledger
        #: holds it; None: this ledger alone decides).
        self.gate: Callable[[Reservation], Reservation | Refusal] | None = None
        #: Told of every commit (usage) and rollback (None), and of every limit
        #: reported (its end, None when unknown), so a shared ledger can follow.
        self.on_settle: Callable[[str, Mapping[str, float] | None], None] | None = None
        self.on_limit: Callable[[list[str], float | None, str], None] | None = None
        self.reconfigure(pools)

    # -- configuration -----------------------------------------------------

    def reconfigure(self, pools: Iterable[PoolSpec]) -> None:
        """Adopt new pool specs; state of pools that keep their name survives."""
        fresh: dict[str, PoolState] = {}
        for spec in pools:
            state = self.pools.get(spec.name)
            if state is None:
                state = PoolState(spec=spec)
            else:
                if state.spec.window != spec.window or state.spec.anchor != spec.anchor:
                    state.window_start = state.window_end = None
                state.spec = spec
            fresh[spec.name] = state
        for res in self.reservations.values():
            for pool in [p for p in res.charges if p not in fresh]:
                del res.charges[pool]
        self.pools = fresh
        self._next_event = -math.inf

    # -- time --------------------------------------------------------------

    def advance(self, now: float) -> list[Reservation]:
        """Roll windows, lift passed limits and expire stale holds; return the expired.

        Cheap when nothing is due: the earliest pending event is cached.
        """
        if now < self._next_event:
            return []
        next_event = math.inf
        for state in self.pools.values():
            if state.spec.window is not None:
                if (
                    state.window_end is None
                    or now >= state.window_end
                    or (state.window_start is not None and now < state.window_start)
                ):
                    start, end = window_bounds(state.spec.anchor, state.spec.window, now)
                    if state.window_start is not None and start != state.window_start:
                        state.used = 0.0
                    state.window_start, state.window_end = start, end
                next_event = min(next_event, state.window_end)
            if state.limited_until is not None:
                if now >= state.limited_until:
                    state.limited_until = None
                    state.limited_reason = ""
                else:
                    next_event = min(next_event, state.limited_until)
        expired = [r for r in self.reservations.values() if r.expires_at <= now]
        for res in expired:
            self._release(res)
            self.expired_total += 1
        for res in self.reservations.values():
            next_event = min(next_event, res.expires_at)
        self._next_event = next_event
        return expired

    # -- reading -----------------------------------------------------------

    def multiplier(self, pool: str, now: float) -> float | None:
        """Scarcity multiplier 1/f^k (capped; f paced, pacing.py), a discount near a
        reset, None if exhausted."""
        state = self.pools[pool]
        if state.is_limited(now):
            return None
        fraction = state.fraction_left()
        if fraction <= 0:
            return None
        policy = self.scarcity_policy
        if (
            state.window_end is not None
            and state.window_start is not None
            and state.window_end - now < self.discount_window(state)
            and fraction > policy.discount_min_fraction
        ):
            return policy.discount
        if state.window_end is not None and state.window_start is not None:
            fraction = paced_fraction(
                fraction, state.window_start, state.window_end, now, policy.pace_steps
            )
        # float ** float is typed Any (a negative base gives a complex); fraction is positive.
        multiplier: float = min(policy.max_multiplier, fraction**-state.spec.scarcity_k)
        return multiplier

    def discount_window(self, state: PoolState) -> float:
        """The use-it-or-lose-it span: the configured hour, but never more than the
        last fifth of the window, or a 1h pool would be discounted all the time."""
        assert state.window_end is not None and state.window_start is not None
        span = state.window_end - state.window_start
        return min(self.scarcity_policy.discount_window, 0.2 * span)

    def refusal(self, charges: Mapping[str, float], now: float) -> Refusal | None:
        """The first pool (in charge order) that cannot take its charge, if any."""
        pools = self.pools
        for pool, amount in charges.items():
            state = pools[pool]
            if state.is_limited(now):
                return Refusal(
                    pool,
                    RejectReason.POOL_LIMITED,
                    f"pool {pool} limited until {_iso(state.limited_until)}"
                    + (f" ({state.limited_reason})" if state.limited_reason else ""),
                )
            remaining = state.remaining()
            if remaining <= 0:
                return Refusal(
                    pool,
                    RejectReason.POOL_EXHAUSTED,
                    f"pool {pool} exhausted ({_num(state.used)} used + "
                    f"{_num(state.reserved)} reserved of {_num(state.spec.limit)} "
                    f"{state.spec.unit}"
                    + (f", resets {_iso(state.window_end)})" if state.window_end else ")"),
                )
            if amount > remaining:
                return Refusal(
                    pool,
                    RejectReason.POOL_INSUFFICIENT,
                    f"pool {pool} cannot afford {_num(amount)} {state.spec.unit} "
                    f"({_num(remaining)} left)",
                )
        return None

    # -- writing -----------------------------------------------------------

    def reserve(
        self, arm: str, task: str, charges: Mapping[str, float], now: float, ttl: float
    ) -> Reservation | Refusal:
        """Hold `charges` on every pool, or on none of them."""
        refusal = self.refusal(charges, now)
        if refusal is not None:
            return refusal
        # id, arm, task, charges, created_at, expires_at (by position: a call
        # with keywords matches each name)
        res = Reservation(f"r{self._next_id}", arm, task, dict(charges), now, now + ttl)
        self._next_id += 1
        if self.gate is not None:
            confirmed = self.gate(res)
            if isinstance(confirmed, Refusal):
                return confirmed
            if confirmed is not res:
                self.restore_reservation(confirmed)
                return confirmed
        self._hold(res)
        return res

    def _hold(self, res: Reservation) -> None:
        self.reservations[res.id] = res
        pools, rid = self.pools, res.id
        for pool, amount in res.charges.items():
            state = pools[pool]
            state.holds[rid] = amount
            state._sum_holds()
        if res.expires_at < self._next_event:
            self._next_event = res.expires_at

    def restore_reservation(self, res: Reservation) -> None:
        """Put a reservation back (from a snapshot or journal) exactly as it was."""
        self._hold(res)
        number = res.id[1:]
        if res.id.startswith("r") and number.isdigit():
            self._next_id = max(self._next_id, int(number) + 1)

    def commit(self, reservation_id: str, actual: Mapping[str, float]) -> bool:
        """Turn a hold into usage. Returns False if the hold had already expired.

        A run whose hold expired still really consumed what it reports, so the
        usage is recorded either way; only the hold release is skipped.
        """
        res = self.reservations.get(reservation_id)
        if res is not None:
            self._release(res)
        if self.on_settle is not None:
            self.on_settle(reservation_id, actual)
        for pool, amount in actual.items():
            if pool in self.pools and amount > 0:
                self.pools[pool].used += amount
        return res is not None

    def rollback(self, reservation_id: str) -> bool:
        """Release a hold without recording usage (the run used nothing)."""
        res = self.reservations.get(reservation_id)
        if self.on_settle is not None and reservation_id:
            self.on_settle(reservation_id, None)
        if res is None:
            return False
        self._release(res)
        return True

    def hold_limit(self, pools: Iterable[str], until: float, reason: str) -> None:
        """A provider said these pools are exhausted until `until`."""
        pools = list(pools)
        if self.on_limit is not None:
            self.on_limit(pools, until, reason)
        for pool in pools:
            state = self.pools[pool]
            if state.limited_until is None or until > state.limited_until:
                state.limited_until = until
                state.limited_reason = reason
        self._next_event = -math.inf

    def hold_limit_unknown(self, pools: Iterable[str], now: float, reason: str) -> float:
        """A limit without a reset time: hold for the pool's backoff, doubling per strike."""
        latest = now
        names = list(pools)
        if self.on_limit is not None:
            self.on_limit(names, None, reason)
        hook, self.on_limit = self.on_limit, None  # told once, as a limit without a time
        try:
            for pool in names:
                state = self.pools[pool]
                hold = min(
                    state.spec.limit_backoff * 2**state.strikes, state.spec.limit_backoff_max
                )
                state.strikes += 1
                latest = max(latest, now + hold)
                self.hold_limit([pool], now + hold, reason)
        finally:
            self.on_limit = hook
        return latest

    def clear_strikes(self, pools: Iterable[str]) -> None:
        """A run succeeded on these pools: the next unknown limit starts small again."""
        for pool in pools:
            if pool in self.pools:
                self.pools[pool].strikes = 0

    def _release(self, res: Reservation) -> None:
        rid, pools = res.id, self.pools
        self.reservations.pop(rid, None)
        for pool in res.charges:
            state = pools.get(pool)
            if state is not None and state.holds.pop(rid, None) is not None:
                state._sum_holds()


def _num(value: float) -> str:
    return f"{value:.6g}"
