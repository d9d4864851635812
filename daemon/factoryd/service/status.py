"""What `factoryd status` shows: tasks, pools and arms, as JSON and as tables."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from factoryd import __version__
from factoryd.routing.availability import arm_health
from factoryd.units.durations import format_seconds
from factoryd.units.timefmt import iso

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler


def build_status(rec: Reconciler) -> dict[str, Any]:
    now_m, now_w = rec.clock.mono(), rec.clock.wall()
    engine = rec.engine
    ledger = engine.ledger
    ledger.advance(now_w)
    tasks = []
    for rt in sorted(rec.tasks.values(), key=lambda r: r.name):
        run = rec.runs.get(rt.run) if rt.run else None
        tasks.append(
            {
                "name": rt.name,
                "kind": str(rt.spec.kind),
                "source": rt.source,
                "phase": str(rt.phase),
                "reason": rt.reason,
                "arm": run.arm if run else rt.last_arm,
                "run_id": run.run_id if run else None,
                "pid": run.pid if run else None,
                "run_age": round(now_m - run.started_mono, 3) if run else None,
                "runs": rt.runs,
                "restarts": rt.restarts,
                "last_outcome": rt.last_outcome,
                "next_fire": iso(rt.next_fire) if rt.next_fire else None,
                "pending_fires": rt.pending_fires,
                "log": str(run.log_path) if run and run.log_path else rt.last_log,
            }
        )
    pools = []
    for name, st in ledger.pools.items():
        mult = ledger.multiplier(name, now_w)
        pools.append(
            {
                "name": name,
                "unit": str(st.spec.unit),
                "used": st.used,
                "reserved": st.reserved,
                "limit": st.spec.limit,
                "scarcity": mult,
                "resets_at": iso(st.window_end) if st.window_end else None,
                "limited_until": iso(st.limited_until) if st.is_limited(now_w) else None,
                "limited_reason": st.limited_reason if st.is_limited(now_w) else "",
            }
        )
    running: dict[str, int] = {}
    for run in rec.runs.values():
        running[run.arm] = running.get(run.arm, 0) + 1
    arms = []
    for name, arm in engine.arms.items():
        tel = engine.telemetry.arms.get(name)
        perf = engine.telemetry.performance(name, now_w)
        limited = (
            tel.limited_until if tel and tel.limited_until and tel.limited_until > now_w else None
        )
        backoff = (
            tel.backoff_until if tel and tel.backoff_until and tel.backoff_until > now_w else None
        )
        health, pool_limits = arm_health(engine, name, now_w)
        arms.append(
            {
                "name": name,
                "cli": arm.cli,
                "model": arm.model,
                "pools": list(arm.pools),
                "health": health,
                "running": running.get(name, 0),
                "success_rate": None if perf is None else perf.success_rate,
                "backoff_until": iso(backoff) if backoff else None,
                "limited_until": iso(limited) if limited else None,
                "limited_pools": pool_limits,
            }
        )
    return {
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "config": str(rec.config.path),
            "runs": len(rec.runs),
            "max_concurrent": rec.config.daemon.max_concurrent,
            "strategy": rec.config.routing.strategy,
            "last_pass": iso(rec.last_pass_wall) if rec.last_pass_wall else None,
            "stopping": rec.stopping,
            "last_reload": _reload(rec.last_reload),
        },
        "tasks": tasks,
        "pools": pools,
        "arms": arms,
    }


def _reload(last: dict[str, Any] | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {"ok": last["ok"], "at": iso(last["at"]), "errors": list(last["errors"])}


def _reload_line(last: dict[str, Any] | None) -> str:
    if last is None:
        return "last reload: none since start"
    if last["ok"]:
        return f"last reload: ok at {last['at']}"
    return (
        f"last reload: FAILED at {last['at']} ({len(last['errors'])} error(s); "
        "the running config stays; `factoryd reload --dry-run` lists them)"
    )


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    out = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def _cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_status(s: Any, error: type[Exception] = ValueError) -> str:
    """The status as tables; `error` (with a one-line message) when `s` is not
    a status: whatever answered on the socket was not this factoryd."""
    try:
        return _render(s)
    except (TypeError, KeyError, AttributeError, ValueError):
        raise error("the control socket answered with an unknown status shape") from None


def _render(s: dict[str, Any]) -> str:
    d = s["daemon"]
    lines = [
        f"factoryd {d['version']} pid {d['pid']}  config {d['config']}",
        f"runs {d['runs']}/{d['max_concurrent']}  strategy {d['strategy']}  "
        f"last pass {d['last_pass'] or '-'}" + ("  STOPPING" if d["stopping"] else ""),
        _reload_line(d.get("last_reload")),
        "",
    ]
    lines += _table(
        ["task", "kind", "phase", "arm", "age", "runs", "restarts", "reason", "log"],
        [
            [
                t["name"],
                t["kind"],
                t["phase"],
                t["arm"] or "-",
                format_seconds(t["run_age"]) if t["run_age"] is not None else "-",
                str(t["runs"]),
                str(t["restarts"]),
                _cut(t["reason"]),
                t.get("log") or "-",
            ]
            for t in s["tasks"]
        ],
    )
    lines.append("")
    lines += _table(
        ["pool", "used", "reserved", "limit", "unit", "scarcity", "resets", "limited until"],
        [
            [
                p["name"],
                f"{p['used']:g}",
                f"{p['reserved']:g}",
                f"{p['limit']:g}",
                p["unit"],
                "exhausted" if p["scarcity"] is None else f"x{p['scarcity']:.3g}",
                p["resets_at"] or "never",
                p["limited_until"] or "-",
            ]
            for p in s["pools"]
        ],
    )
    lines.append("")
    lines += _table(
        ["arm", "cli", "health", "running", "success", "pools", "until"],
        [
            [
                a["name"],
                a["cli"],
                a["health"],
                str(a["running"]),
                "-" if a["success_rate"] is None else f"{a['success_rate']:.0%}",
                ",".join(a["pools"]) or "-",
                a["limited_until"] or a["backoff_until"] or "-",
            ]
            for a in s["arms"]
        ],
    )
    finished = s.get("finished") or []
    if finished:
        lines.append("")
        lines += _table(
            ["finished", "template", "state", "outcome", "arm", "cost", "ended"],
            [
                [
                    f["id"],
                    f["template"],
                    f["state"],
                    f["outcome"] or "-",
                    f["arm"] or "-",
                    "-" if f["cost"] is None else f"${f['cost']:.4f}",
                    iso(f["updated_at"]),
                ]
                for f in finished
            ],
        )
    return "\n".join(lines)
