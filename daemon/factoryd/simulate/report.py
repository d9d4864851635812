"""The simulator's answer for people: a table per scenario and the cost-success plane.

matplotlib is optional (the `plot` extra); the table and JSON never need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factoryd.simulate.runner import Results

#: (figure, column head, format) in table order.
COLUMNS = (
    ("succeeded", "succeeded", "{:.1f}"),
    ("never_done", "never done", "{:.1f}"),
    ("usd", "USD", "{:.2f}"),
    ("usd_per_success", "USD/success", "{:.3f}"),
    ("succeeded_per_usd", "succeeded/USD", "{:.2f}"),
    ("limit_hits", "429s", "{:.1f}"),
    ("wasted_runs", "wasted", "{:.1f}"),
    ("wait_p50_s", "wait p50", "{:.0f}s"),
    ("wait_p95_s", "wait p95", "{:.0f}s"),
    ("value", "value", "{:.1f}"),
    ("regret", "regret", "{:.1f}"),
)


def _cell(fig: dict[str, Any], fmt: str) -> str:
    mean = fig["mean"]
    lo, hi = fig["ci95"]
    half = (hi - lo) / 2
    text = fmt.format(mean)
    return text if half < 1e-9 else f"{text} ±{fmt.format(half).rstrip('s')}"


def render_table(results: Results, *, markdown: bool = False) -> str:
    """One row per policy: mean ± half the 95% interval over the seeds."""
    heads = ["policy", *(h for _, h, _ in COLUMNS)]
    body = []
    for p in results.policies:
        figs = results.figures(p)
        name = f"{p} (default)" if p == results.default else p
        body.append([name, *(_cell(figs[f], fmt) for f, _, fmt in COLUMNS)])
    lines = [
        f"scenario {results.scenario}: {results.seeds} seed(s), "
        f"{len(results.policies)} policies, {results.seconds:.1f}s"
    ]
    if markdown:
        lines = [f"**{lines[0]}**", ""]
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|" + "---|" * len(heads))
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(r[i]) for r in [heads, *body]) for i in range(len(heads))]
        fmt_row = "  ".join(
            f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)
        )
        lines.append(fmt_row.format(*heads))
        lines += [fmt_row.format(*row) for row in body]
    if results.verdict is not None:
        lines.append("")
        lines.append(results.verdict.sentence())
    return "\n".join(lines)


def plot(results: Results, path: str | Path) -> None:
    """Draw each policy's mean USD and tasks succeeded with their 95% intervals."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'factoryd[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 5))
    for p in results.policies:
        figs = results.figures(p)
        x, y = figs["usd"], figs["succeeded"]
        xerr = [[x["mean"] - x["ci95"][0]], [x["ci95"][1] - x["mean"]]]
        yerr = [[y["mean"] - y["ci95"][0]], [y["ci95"][1] - y["mean"]]]
        style = "s" if p == "oracle" else ("*" if p == results.default else "o")
        ax.errorbar(x["mean"], y["mean"], xerr=xerr, yerr=yerr, fmt=style, capsize=3, label=p)
        ax.annotate(
            p, (x["mean"], y["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    ax.set_xlabel("USD spent (mean, 95% interval)")
    ax.set_ylabel("tasks succeeded (mean, 95% interval)")
    ax.set_title(f"{results.scenario}: {results.seeds} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
