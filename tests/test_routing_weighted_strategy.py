"""The `weighted` strategy: throughput, latency and consumption rank arms; stale
telemetry and provider limits reject them (the rules seed A routed by)."""

from __future__ import annotations

from factoryd.routing.model import RejectReason, RouteRequest
from factoryd.routing.scoring import normalize_latency
from factoryd.units.timefmt import iso_ms
from routing_kit import T0, arm, engine


def perf_state(**arms: tuple[float, float, int]) -> dict:
    """Snapshot with fresh telemetry: arm -> (completions/s, latency ms, session tokens)."""
    state = {"version": 1, "arms": {}}
    for name, (per_second, latency_ms, tokens) in arms.items():
        ok = round(per_second * 3600)
        state["arms"][name] = {
            "last_event_at": iso_ms(T0 - 5),
            "buckets": [
                {
                    "start": iso_ms(T0 - 60),
                    "ok": ok,
                    "failed": 0,
                    "ok_seconds": ok * latency_ms / 1000.0,
                    "tokens": tokens,
                }
            ],
        }
    return state


def kg(name: str) -> object:
    """A knowledge-graph candidate: not a fallback, so it needs fresh telemetry."""
    return arm(name, fallback=False)


REQ = RouteRequest(task="t")


def test_ranks_higher_throughput_first() -> None:
    e = engine([kg("model-slow"), kg("model-fast")], strategy="weighted")
    e.load_snapshot(perf_state(**{"model-slow": (0.1, 3000, 0), "model-fast": (0.8, 500, 0)}))
    d = e.route(REQ, T0)
    assert [c.arm for c in d.candidates] == ["model-fast", "model-slow"]
    assert d.arm == "model-fast"


def test_rejects_subscription_limited_model() -> None:
    e = engine([kg("model-limited"), kg("model-ok")], strategy="weighted")
    e.load_snapshot(perf_state(**{"model-limited": (0.5, 1000, 0), "model-ok": (0.5, 1000, 0)}))
    e.report_limit("model-limited", T0 + 3600, T0, "subscription")
    d = e.route(REQ, T0)
    assert [c.arm for c in d.candidates] == ["model-ok"]
    assert len(d.rejections) == 1
    assert d.rejections[0].reason is RejectReason.LIMITED
    assert "subscription limit" in d.rejections[0].detail


def test_limit_is_lifted_at_its_reset_time() -> None:
    e = engine([kg("m")], strategy="weighted")
    e.load_snapshot(perf_state(m=(0.5, 1000, 0)))
    e.report_limit("m", T0 + 60, T0, "subscription")
    assert e.route(REQ, T0 + 59).arm is None
    assert e.route(REQ, T0 + 60).arm == "m"


def test_prefers_lower_consumption_under_pressure() -> None:
    e = engine([kg("model-a"), kg("model-b")], strategy="weighted")
    e.load_snapshot(
        perf_state(**{"model-a": (0.5, 1000, 3_500_000), "model-b": (0.5, 1000, 600_000)})
    )
    d = e.route(REQ, T0)
    assert [c.arm for c in d.candidates] == ["model-b", "model-a"]
    a, b = (c.components for c in sorted(d.candidates, key=lambda c: c.arm))
    assert a.consumption == 1 - 3.5 / 5
    assert b.consumption == 1 - 0.6 / 5


def test_session_budget_is_configurable_not_hard_coded() -> None:
    e = engine([kg("m")], strategy="weighted", session_token_budget=1_000_000)
    e.load_snapshot(perf_state(m=(0.5, 1000, 500_000)))
    assert e.route(REQ, T0).candidates[0].components.consumption == 0.5


def test_fallback_arm_without_perf_data_is_eligible() -> None:
    e = engine([arm("cli-default", fallback=True)], strategy="weighted")
    d = e.route(REQ, T0)
    assert d.arm == "cli-default"
    c = d.candidates[0].components
    assert (c.throughput, c.latency, c.consumption) == (0.5, 0.5, 0.5)


def test_latency_normalisation() -> None:
    assert normalize_latency(0.0, 5.0) == 1.0
    assert abs(normalize_latency(2.5, 5.0) - 0.5) < 0.01
    assert abs(normalize_latency(5.0, 5.0) - 0.0) < 0.01
    assert normalize_latency(10.0, 5.0) == 0.0


def test_rationale_names_selected_arm_and_strategy() -> None:
    e = engine([kg("model-a")], strategy="weighted")
    e.load_snapshot(perf_state(**{"model-a": (0.5, 1000, 0)}))
    text = e.route(REQ, T0).rationale()
    assert "Selected model-a" in text
    assert "strategy weighted" in text


def test_breakdown_is_filled_in() -> None:
    """Seed A defect: the per-component breakdown was never filled in."""
    e = engine([kg("m")], strategy="weighted")
    e.load_snapshot(perf_state(m=(0.8, 500, 0)))
    d = e.route(REQ, T0)
    comp = d.to_dict()["ranking"][0]["components"]
    assert comp["throughput"] == 0.8 and comp["latency"] == 0.9
    assert abs(d.candidates[0].score - (0.35 * 0.5 + 0.25 * 0.8 + 0.2 * 0.9 + 0.2 * 1.0)) < 1e-9


def test_stale_telemetry_rejects_unless_fallback() -> None:
    e = engine([kg("fresh"), kg("stale"), arm("static", fallback=True)], strategy="weighted")
    state = perf_state(fresh=(0.5, 1000, 0), stale=(0.5, 1000, 0), static=(0.5, 1000, 0))
    state["arms"]["stale"]["last_event_at"] = iso_ms(T0 - 601)
    state["arms"]["static"]["last_event_at"] = iso_ms(T0 - 9999)
    e.load_snapshot(state)
    d = e.route(REQ, T0)
    assert {c.arm for c in d.candidates} == {"fresh", "static"}
    assert [(r.arm, r.reason) for r in d.rejections] == [("stale", RejectReason.STALE)]


def test_missing_telemetry_counts_as_stale_for_non_fallback() -> None:
    """Seed A defect: staleness was only checked when data existed."""
    e = engine([kg("never-seen")], strategy="weighted")
    d = e.route(REQ, T0)
    assert d.arm is None
    assert d.rejections[0].reason is RejectReason.STALE


def test_equal_scores_keep_config_order() -> None:
    """Seed A defect: ties kept input order only by accident of a stable sort."""
    names = ["c", "a", "b", "d"]
    e = engine([arm(n) for n in names], strategy="weighted")
    for _ in range(3):
        assert [c.arm for c in e.route(REQ, T0).candidates] == names


def test_telemetry_sums_follow_new_outcomes_and_the_moving_window() -> None:
    from factoryd.routing.telemetry import RunSample, TelemetryBook

    book = TelemetryBook(window=600.0)
    book.record("a", RunSample(at=T0, ok=True, duration=10.0, tokens=100))
    first = book.performance("a", T0 + 1)
    assert first is not None and first.session_tokens == 100
    book.record("a", RunSample(at=T0 + 2, ok=False, duration=5.0, tokens=50))
    second = book.performance("a", T0 + 3)  # same window position: the cache must not lie
    assert second is not None and second.session_tokens == 150 and second.success_rate == 0.5
    later = book.performance("a", T0 + 700)  # both outcomes have left the window
    assert later is not None and later.session_tokens == 0 and later.success_rate is None
    assert later.age == 698
