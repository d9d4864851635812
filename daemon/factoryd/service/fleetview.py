"""What `factoryd fleet status` prints: the fleet's hosts, claims, shared pools and holds.

The daemon answers the `fleet_status` control operation with plain data
(state/fleet/store.py `FleetStore.status`, plus this host's name and
whether its database answers); this module turns that data into tables for
an operator, and registers the command itself. Kept apart from
service/fleet.py so that the command line never imports the database driver.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from factoryd.units.durations import format_seconds
from factoryd.units.timefmt import iso


def _ago(seconds: Any) -> str:
    return f"{format_seconds(float(seconds))} ago" if seconds is not None else "-"


def _at(epoch: Any) -> str:
    return iso(float(epoch)) if epoch is not None else "-"


def render_fleet_status(result: dict[str, Any]) -> str:
    now = float(result.get("now") or 0.0)
    state = "connected" if result.get("connected") else "NOT connected"
    lines = [
        f"fleet as seen by {result.get('host', '?')} ({state}); database clock {_at(now)}",
        f"  queued: {result.get('queued', 0)}, outbox on this host: {result.get('outbox', 0)}",
        "",
        f"{'HOST':<20} {'LAST HEARTBEAT':<16} {'STARTED':<22} {'CLAIMS':>6}  VERSION",
    ]
    for h in result.get("hosts", []):
        lines.append(
            f"{h['name']:<20} {_ago(h['silent_for']):<16} {_at(h['started_at']):<22} "
            f"{h['claimed']:>6}  {h.get('version', '')}"
        )
    claims = result.get("claims", [])
    if claims:
        lines += ["", f"{'ITEM':>6} {'SUBMISSION':<26} {'LABEL':<16} {'HOST':<16} ATTEMPT  LEASE"]
        for c in claims:
            lines.append(
                f"{c['item']:>6} {c['sub_id']:<26} {c['label']:<16} {c['host']:<16} "
                f"{c['attempt']:>7}  {format_seconds(float(c['lease_left']))}"
            )
    lines += ["", f"{'POOL':<20} {'USED':>10} {'HELD':>10} {'LIMIT':>10} {'HOLDS':>5}  STATE"]
    for name, p in result.get("pools", {}).items():
        if p.get("limited_until") is not None:
            state = f"limited until {_at(p['limited_until'])} by {p['limited_by']}"
            if p.get("limited_reason"):
                state += f" ({p['limited_reason'][:60]})"
        else:
            state = "resets " + _at(p["window_end"]) if p.get("window_end") else "no window"
        lines.append(
            f"{name:<20} {p['used']:>10.6g} {p['reserved']:>10.6g} {p['limit']:>10.6g} "
            f"{p['holds']:>5}  {state}"
        )
    holds = result.get("holds", [])
    if holds:
        lines += ["", f"{'RESERVATION':<30} {'POOL':<16} {'AMOUNT':>8} {'HOST':<12} EXPIRES IN"]
        for hold in holds:
            left = float(hold["expires_at"]) - now
            lines.append(
                f"{hold['res_id']:<30} {hold['pool']:<16} {hold['amount']:>8.6g} "
                f"{hold['host']:<12} {format_seconds(left)}  ({hold['task']} on {hold['arm']})"
            )
    return "\n".join(lines)


def add_fleet_parser(
    sub: Any,
    control_args: Callable[[argparse.ArgumentParser], None],
    control: Callable[[argparse.Namespace, dict[str, Any]], Any],
) -> None:
    """`factoryd fleet status`, registered on the command line's subparsers."""

    def cmd_fleet_status(args: argparse.Namespace) -> int:
        result = control(args, {"op": "fleet_status"})
        print(json.dumps(result, indent=2) if args.json else render_fleet_status(result))
        return 0

    p = sub.add_parser("fleet", help="the hosts that share pools and a queue ([fleet])")
    fleet_sub = p.add_subparsers(dest="fleet_command", required=True)
    fp = fleet_sub.add_parser("status", help="hosts, heartbeats, claims, shared pools, holds")
    control_args(fp)
    fp.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    fp.set_defaults(func=cmd_fleet_status)
