"""The routing state snapshot: pools, holds, limits, telemetry and quality as JSON.

`factoryd state dump` writes it from a live daemon and `factoryd route
--state FILE` reads it, so any decision can be replayed and explained
offline. Format (version 1), all instants RFC 3339 UTC strings:

    {
      "version": 1,
      "taken_at": "2026-11-22T05:00:00.000Z",
      "pools": {"NAME": {"used": 1200.0, "window_start": "...", "limited_until": null,
                         "limited_reason": "", "strikes": 0}},
      "reservations": [{"id": "r7", "arm": "A", "task": "T", "charges": {"NAME": 50.0},
                        "created_at": "...", "expires_at": "..."}],
      "arms": {"A": {"healthy": true, "consecutive_faults": 0, "backoff_until": null,
                     "limited_until": null, "limited_reason": "", "last_event_at": "...",
                     "buckets": [{"start": "...", "ok": 3, "failed": 1,
                                  "ok_seconds": 126.0, "tokens": 5400}]}},
      "quality": [{"arm": "A", "type": "debug", "ema": 0.8, "n": 5}]
    }

Every key is optional except `version`; what is absent starts empty.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from factoryd.routing.ledger import PoolLedger, Reservation
from factoryd.routing.quality import QualityTracker
from factoryd.routing.telemetry import Bucket, TelemetryBook
from factoryd.routing.windows import window_bounds
from factoryd.units.timefmt import iso_ms, parse_iso

VERSION = 1


class SnapshotError(ValueError):
    """A snapshot that cannot be read; the message names the offending key."""


def dump_state(
    ledger: PoolLedger, telemetry: TelemetryBook, quality: QualityTracker, now: float
) -> dict[str, Any]:
    def when(ts: float | None) -> str | None:
        return None if ts is None else iso_ms(ts)

    return {
        "version": VERSION,
        "taken_at": iso_ms(now),
        "pools": {
            name: {
                "used": st.used,
                "window_start": when(st.window_start),
                "limited_until": when(st.limited_until),
                "limited_reason": st.limited_reason,
                "strikes": st.strikes,
            }
            for name, st in ledger.pools.items()
        },
        "reservations": [reservation_record(r, iso_ms) for r in ledger.reservations.values()],
        "arms": {
            name: {
                "healthy": t.healthy,
                "consecutive_faults": t.consecutive_faults,
                "backoff_until": when(t.backoff_until),
                "limited_until": when(t.limited_until),
                "limited_reason": t.limited_reason,
                "last_event_at": when(t.last_event_at),
                "buckets": [
                    {
                        "start": iso_ms(b.start),
                        "ok": b.ok,
                        "failed": b.failed,
                        "ok_seconds": b.ok_seconds,
                        "tokens": b.tokens,
                    }
                    for b in t.buckets
                ],
            }
            for name, t in telemetry.arms.items()
        },
        "quality": [
            {"arm": arm, "type": kind, "ema": s.ema, "n": s.n}
            for (arm, kind), s in sorted(quality.stats.items())
        ],
    }


def reservation_record(res: Reservation, when: Callable[[float], Any] = float) -> dict[str, Any]:
    """A reservation as a JSON object; `when` writes its instants (the snapshot
    writes RFC 3339 strings, the journal epoch seconds; both read back)."""
    return {
        "id": res.id,
        "arm": res.arm,
        "task": res.task,
        "charges": dict(res.charges),
        "created_at": when(res.created_at),
        "expires_at": when(res.expires_at),
    }


def read_reservation(
    data: Any,
    path: str,
    ledger: PoolLedger,
    *,
    default_id: str = "",
    drop_unknown_pools: bool = False,
) -> Reservation:
    """The reservation in `data` (see `reservation_record`), checked key by key.

    A charge on a pool the ledger does not know is an error, or with
    `drop_unknown_pools` (a journal written under an older config) dropped.
    """
    r = _Reader.child_of(data, path)
    charges: dict[str, float] = {}
    for pool, amount in r.get("charges", dict, {}).items():
        if pool not in ledger.pools and not drop_unknown_pools:
            raise SnapshotError(f"{path}.charges.{pool}: no pool named {pool!r} in the config")
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            raise SnapshotError(f"{path}.charges.{pool}: expected a number")
        if pool in ledger.pools:
            charges[pool] = float(amount)
    created = r.when("created_at")
    expires = r.when("expires_at")
    if created is None or expires is None:
        raise SnapshotError(f"{path}: created_at and expires_at are required")
    return Reservation(
        id=r.get("id", str, default_id),
        arm=r.get("arm", str, ""),
        task=r.get("task", str, ""),
        charges=charges,
        created_at=created,
        expires_at=expires,
    )


def restore_pool(
    ledger: PoolLedger,
    name: str,
    *,
    used: float,
    window_start: float | None,
    limited_until: float | None,
    limited_reason: str,
    strikes: int,
) -> None:
    """Put one pool's usage, window and limit back, as a snapshot or the journal
    recorded them. For a ledger that has not yet advanced (a fresh one): its
    first `advance` then recomputes every window and lift time."""
    state = ledger.pools[name]
    state.used = used
    state.window_start = window_start
    if window_start is not None and state.spec.window is not None:
        state.window_start, state.window_end = window_bounds(
            state.spec.anchor, state.spec.window, window_start
        )
    state.limited_until = limited_until
    state.limited_reason = limited_reason
    state.strikes = strikes


class _Reader:
    """Typed access to untrusted JSON with the key path in every error."""

    def __init__(self, data: Any, path: str) -> None:
        self.data, self.path = data, path

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise SnapshotError(f"{self.path}.{key}: expected an object")
        return value

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None:
            return default
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _tuple(kind))
        if not ok:
            raise SnapshotError(f"{self.path}.{key}: expected {_kind_name(kind)}, got {value!r}")
        return value

    def when(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return parse_iso(value)
            except ValueError:
                pass
        raise SnapshotError(f"{self.path}.{key}: expected an RFC 3339 time, got {value!r}")

    @staticmethod
    def child_of(value: Any, path: str) -> _Reader:
        if not isinstance(value, dict):
            raise SnapshotError(f"{path}: expected an object")
        return _Reader(value, path)

    def child(self, value: Any, path: str) -> _Reader:
        if not isinstance(value, dict):
            raise SnapshotError(f"{path}: expected an object")
        return _Reader(value, path)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "a number", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _tuple(kind)))


def load_state(
    data: Any, ledger: PoolLedger, telemetry: TelemetryBook, quality: QualityTracker
) -> float | None:
    """Load a snapshot into empty state objects; return its `taken_at`.

    Names that the config does not know are errors: replaying a decision
    against a different set of pools or arms would explain nothing.
    """
    if not isinstance(data, dict):
        raise SnapshotError("state: expected a JSON object")
    root = _Reader(data, "state")
    version = root.get("version", int)
    if version != VERSION:
        raise SnapshotError(f"state.version: expected {VERSION}, got {version!r}")
    for name, raw in root.table("pools").items():
        path = f"state.pools.{name}"
        if name not in ledger.pools:
            raise SnapshotError(f"{path}: no pool named {name!r} in the config")
        r = root.child(raw, path)
        restore_pool(
            ledger,
            name,
            used=float(r.get("used", (int, float), 0.0)),
            window_start=r.when("window_start"),
            limited_until=r.when("limited_until"),
            limited_reason=r.get("limited_reason", str, ""),
            strikes=r.get("strikes", int, 0),
        )
    for i, raw in enumerate(root.get("reservations", list, [])):
        path = f"state.reservations[{i}]"
        ledger.restore_reservation(read_reservation(raw, path, ledger, default_id=f"s{i}"))
    for name, raw in root.table("arms").items():
        path = f"state.arms.{name}"
        r = root.child(raw, path)
        tel = telemetry.arm(name)
        tel.healthy = r.get("healthy", bool, True)
        tel.consecutive_faults = r.get("consecutive_faults", int, 0)
        tel.backoff_until = r.when("backoff_until")
        tel.limited_until = r.when("limited_until")
        tel.limited_reason = r.get("limited_reason", str, "")
        tel.last_event_at = r.when("last_event_at")
        for j, raw_bucket in enumerate(r.get("buckets", list, [])):
            b = root.child(raw_bucket, f"{path}.buckets[{j}]")
            start = b.when("start")
            if start is None:
                raise SnapshotError(f"{path}.buckets[{j}].start: required")
            tel.invalidate()
            tel.buckets.append(
                Bucket(
                    start=start,
                    ok=b.get("ok", int, 0),
                    failed=b.get("failed", int, 0),
                    ok_seconds=float(b.get("ok_seconds", (int, float), 0.0)),
                    tokens=b.get("tokens", int, 0),
                )
            )
    for i, raw in enumerate(root.get("quality", list, [])):
        r = root.child(raw, f"state.quality[{i}]")
        quality.restore(
            r.get("arm", str, ""),
            r.get("type", str, ""),
            ema=float(r.get("ema", (int, float), 0.0)),
            n=r.get("n", int, 0),
        )
    return root.when("taken_at")
