"""A routing decision's explanation as the table `factoryd route` prints.

Kept apart from decision.py, which works the explanation's data out on
demand: this reads only the dict `Decision.to_dict` returns (what `route
--json` and the web page show), so the table cannot say anything the dict
does not.
"""

from __future__ import annotations

from typing import Any


def render_table(d: dict[str, Any]) -> str:
    """The decision in `d` (from `Decision.to_dict`) as a table a person reads."""
    lines = [
        f"task {d['task']}  strategy {d['strategy']}  at {d['at']}",
        f"chosen: {d['arm'] or 'none'}" + ("  (degraded)" if d["degraded"] else ""),
    ]
    if d["reservation"]:
        charges = ", ".join(f"{p} {a:g}" for p, a in d["reservation"]["charges"].items())
        # `route` runs nothing and reserves nothing: it says what a run would hold.
        lines.append(f"would reserve: {charges or 'nothing'} (route reserves nothing)")
    if d["ranking"]:
        lines.append("")
        head = (
            f"{'#':>2} {'arm':<20} {'score':>10} {'fit':>6} {'fit<=':>6} {'thru':>6} "
            f"{'lat':>6} {'cons':>6} {'cost':>9} {'scarcity':>8}"
        )
        lines.append(head)
        for r in d["ranking"]:
            c = r["components"]
            lines.append(
                f"{r['rank']:>2} {r['arm']:<20} {r['score']:>10.4g} {c['task_fit']:>6.3f} "
                f"{c['fit_upper']:>6.3f} "
                f"{c['throughput']:>6.3f} {c['latency']:>6.3f} {c['consumption']:>6.3f} "
                f"{c['effective_cost']:>9.4g} {c['scarcity']:>8.3g}"
                + ("  below quality floor" if r["below_quality"] else "")
            )
    if d["rejections"]:
        lines.append("")
        lines.append("rejected:")
        for r in d["rejections"]:
            lines.append(f"  {r['arm']:<20} {r['reason']:<18} {r['detail']}")
    lines.append("")
    lines.append(d["rationale"])
    return "\n".join(lines)
