"""A Tally is scraped as the labelled Counter it replaced, byte for byte.

runs_started and runs_finished are kept as numbers in a dict (observe/tally.py)
instead of prometheus_client children: the exposition must not change, for
generate_latest nor for the daemon's own renderer, and a tally only goes up.
"""

from __future__ import annotations

import threading

import pytest
from factoryd.core.outcome import Outcome, RunResult
from factoryd.observe.exposition import Renderer
from factoryd.observe.metrics import Metrics
from factoryd.observe.tally import Tally
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

COUNTS = [
    (("a", "x"), 3.0),
    (('we"ird\\name', "y\nz"), 1.0),
    (("a", "y"), 0.5),
    (("b", "x"), 1e6),
]


def _with_counter() -> CollectorRegistry:
    disable_created_metrics()
    reg = CollectorRegistry()
    counter = Counter("t_runs_total", "Runs, by task\nand arm.", ["task", "arm"], registry=reg)
    for labels, amount in COUNTS:
        counter.labels(*labels).inc(amount)
    return reg


def _with_tally() -> tuple[CollectorRegistry, Tally]:
    reg = CollectorRegistry(auto_describe=True)
    tally = Tally("t_runs_total", "Runs, by task\nand arm.", ["task", "arm"], registry=reg)
    for labels, amount in COUNTS:
        tally.add(labels, amount)
    return reg, tally


def test_a_tally_is_exposed_as_the_counter_was() -> None:
    counter_reg = _with_counter()
    tally_reg, _ = _with_tally()
    expected = generate_latest(counter_reg)
    assert generate_latest(tally_reg) == expected
    assert Renderer().render(tally_reg) == expected
    [family] = text_string_to_metric_families(expected.decode())
    assert family.type == "counter" and len(family.samples) == len(COUNTS)


def test_a_tally_adds_up_and_only_goes_up() -> None:
    _, tally = _with_tally()
    tally.add(("a", "x"))
    assert tally.value("a", "x") == 4.0
    assert tally.value("never", "counted") == 0.0
    with pytest.raises(ValueError, match="only goes up"):
        tally.add(("a", "x"), -1)
    assert tally.value("a", "x") == 4.0


def test_the_name_is_taken_with_or_without_its_suffix() -> None:
    reg = CollectorRegistry(auto_describe=True)
    Tally("t_plain", "Plain.", ["k"], registry=reg).add(("v",))
    assert reg.get_sample_value("t_plain_total", {"k": "v"}) == 1.0
    with pytest.raises(ValueError, match="Duplicated"):
        Tally("t_plain_total", "Again.", ["k"], registry=reg)


def test_a_scrape_on_another_thread_reads_while_the_loop_counts() -> None:
    """The HTTP server may render on a thread while the loop adds new series."""
    reg, tally = _with_tally()
    renderer, errors, done = Renderer(), [], threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                renderer.render(reg)
                generate_latest(reg)
        except Exception as exc:
            errors.append(exc)

    reader = threading.Thread(target=scrape)
    reader.start()
    try:
        for i in range(20_000):
            tally.add((f"task{i}", "arm"))
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert reg.get_sample_value("t_runs_total", {"task": "task19999", "arm": "arm"}) == 1.0


def test_the_daemon_counts_runs_in_tallies() -> None:
    metrics = Metrics()
    metrics.runs_started.add(("task", "arm"))
    for _ in range(3):
        metrics.run_finished("task", "arm", "command", RunResult("r", Outcome.SUCCEEDED, "ok"))
    sample = metrics.registry.get_sample_value
    assert sample("factoryd_runs_started_total", {"task": "task", "arm": "arm"}) == 1
    finished = {"task": "task", "arm": "arm", "outcome": "succeeded"}
    assert sample("factoryd_runs_finished_total", finished) == 3
    body = metrics.exposition().decode()
    assert 'factoryd_runs_finished_total{arm="arm",outcome="succeeded",task="task"} 3.0' in body


LABEL_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.tuples(LABEL_TEXT, LABEL_TEXT),
            st.floats(min_value=0, max_value=1e300, allow_nan=False) | st.just(float("inf")),
        ),
        max_size=8,
    )
)
def test_any_label_values_and_amounts_scrape_as_the_counter_did(
    adds: list[tuple[tuple[str, str], float]],
) -> None:
    """Quotes, backslashes, newlines, NULs, any unicode, huge and fractional
    amounts, the same series counted twice: byte for byte what the Counter gave,
    through generate_latest and the daemon's renderer alike."""
    disable_created_metrics()
    counter_reg, tally_reg = CollectorRegistry(), CollectorRegistry(auto_describe=True)
    counter = Counter(
        "t_total", 'Help with "quotes"\\ and\nlines.', ["task", "arm"], registry=counter_reg
    )
    tally = Tally(
        "t_total", 'Help with "quotes"\\ and\nlines.', ["task", "arm"], registry=tally_reg
    )
    for labels, amount in adds:
        counter.labels(*labels).inc(amount)
        tally.add(labels, amount)
    expected = generate_latest(counter_reg)
    assert generate_latest(tally_reg) == expected
    renderer = Renderer()
    assert renderer.render(tally_reg) == expected
    assert renderer.render(tally_reg) == expected  # again, from its cached label blocks
