"""Rate limiting is load, not an outage: pacing to a provider's limit, its own signals, 429 waits, AIMD.

Unit tests drive ``Pacer`` with a fake clock; the rest run the real SDKs against emulators that enforce a
requests-per-minute limit the way the real APIs do (tests/emulators/ratelimit.py), scaled down to stay fast.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import openai
import pytest

from crmsync.models import HopOutcome, Lead, ScoreStatus
from crmsync.providers import anthropic_provider, openai_provider
from crmsync.providers.pacing import Pacer, RateSignal, _Window, parse_duration, seconds_until
from tests.emulators import answer, delay, error
from tests.emulators.behaviours import extract_lead
from tests.fakes import FakeClock


class RealSleeps(list):
    """Records every sleep and really sleeps (for tests whose server-side limit runs on the real clock)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def many_leads(n: int) -> list[Lead]:
    return [Lead(id=f"L{i:03d}", inputs={"company": f"Brand {i}", "monthly_orders": 100 * i, "employees": 60}) for i in range(n)]


# --------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, seconds",
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("", None),
        ("soon", None),
        ("5", None),
        ("1s junk", None),
    ],
)
def test_openai_reset_durations(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_anthropic_reset_times():
    now = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)
    assert seconds_until("2026-11-30T06:01:00Z", now) == 60.0
    assert seconds_until("2026-11-30T06:00:00.500+00:00", now) == 0.5
    assert seconds_until("2026-11-30T05:59:00Z", now) == 0.0  # past: nothing to wait for
    assert seconds_until("tomorrow", now) is None and seconds_until(None, now) is None


def test_signals_read_from_real_responses(openai_emu, anthropic_emu):
    openai_emu.limit(requests_per_minute=600, tokens_per_minute=90_000)
    client = openai.OpenAI(base_url=openai_emu.base_url, api_key=openai_emu.api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="m", max_completion_tokens=100, messages=[{"role": "user", "content": "x" * 400}]
    )
    sig = openai_provider.rate_signal(raw.headers)
    assert sig.requests_limit == 600 and sig.requests_remaining == 9  # a 1 s window of 600/min banks 10
    assert sig.requests_reset_s == pytest.approx(0.1, abs=0.02)  # one request refills in 100 ms
    assert sig.tokens_limit == 90_000 and sig.tokens_remaining == 90_000 - 200  # 400 chars / 4 + 100 max tokens

    import anthropic

    anthropic_emu.limit(requests_per_minute=50)
    an = anthropic.Anthropic(base_url=anthropic_emu.base_url, api_key=anthropic_emu.api_key, max_retries=0)
    raw2 = an.messages.with_raw_response.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    sig2 = anthropic_provider.rate_signal(raw2.headers)
    assert sig2.requests_limit == 50 and sig2.requests_remaining == 0  # 50/min over 1 s: one request banked
    assert (
        sig2.requests_reset_s is not None and 1.0 < sig2.requests_reset_s <= 2.3
    )  # 1.2 s to refill one, as an RFC 3339 time in whole seconds, rounded up
    assert sig2.tokens_limit == 2_000_000  # not limited: the static figures


# ---------------------------------------------------------------------------------------- the limiter
def test_requests_leave_evenly_spaced_under_requests_per_minute():
    clock = FakeClock()
    pacer = Pacer("p", requests_per_minute=60, clock=clock)
    starts = []
    for _ in range(4):
        ticket = pacer.acquire(0)
        starts.append(ticket.started - 1000.0)
        pacer.release(ticket, answered=True)
    assert starts == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.002)  # 60/min: one a second, no burst
    clock.sleep(10)  # idle: at most half a second's worth may leave at once, never a minute's
    fast = Pacer("q", requests_per_minute=360, clock=clock)
    t0 = clock.now
    times = [fast.acquire(0).started - t0 for _ in range(6)]
    assert times == pytest.approx([0.0, 0.0, 0.0, 1 / 6, 2 / 6, 3 / 6], abs=0.002)


def test_tokens_per_minute_charges_the_estimate_and_settles_the_real_usage():
    clock = FakeClock()
    pacer = Pacer("p", tokens_per_minute=6000, clock=clock)  # 100 tokens a second
    first = pacer.acquire(3000)
    pacer.release(first, answered=True, used_tokens=1000)  # 2000 over-estimated: a credit for the next one
    second = pacer.acquire(3000)  # 6000 banked - 3000 = 3000 left; charged 3000 - 2000 = 1000
    pacer.release(second, answered=True, used_tokens=3000)
    third = pacer.acquire(3000)  # 2000 left, 3000 needed: waits 10 s for 1000 more
    assert clock.sleeps == [pytest.approx(10.0, abs=0.01)] and third.waited_s == pytest.approx(10.0, abs=0.01)
    pacer.release(third, answered=True, used_tokens=5000)  # 2000 under-estimated: a debt for the next one
    fourth = pacer.acquire(1000)  # charged 3000 from an empty bucket: 30 s
    assert fourth.waited_s == pytest.approx(30.0, abs=0.01)


def test_signals_slow_down_before_the_429():
    clock = FakeClock()
    pacer = Pacer("p", clock=clock)
    pacer.observe(RateSignal(requests_limit=600, requests_remaining=3))
    assert pacer.gate_remaining() == 0  # budget left: no wait
    pacer.observe(RateSignal(requests_limit=600, requests_remaining=0, requests_reset_s=6.0))
    assert pacer.gate_remaining() == pytest.approx(0.1)  # one request refills in 60 s / 600
    pacer.observe(RateSignal(requests_remaining=0, requests_reset_s=2.0))  # no limit stated: wait for the reset
    assert pacer.gate_remaining() == pytest.approx(2.0)
    ticket = pacer.acquire(0)
    assert ticket.waited_s == pytest.approx(2.0) and pacer.gate_remaining() == 0
    pacer.release(ticket, answered=True)
    pacer.acquire(500)  # the token estimate is what "enough tokens" means
    pacer.observe(RateSignal(tokens_limit=60_000, tokens_remaining=200))
    assert pacer.gate_remaining() == pytest.approx(0.3)  # 300 tokens short at 1000 a second
    clock.sleep(1)
    pacer.observe(RateSignal(tokens_limit=-1, tokens_remaining=-1, tokens_reset_s=0.0))  # Azure's "no figures" placeholders
    pacer.observe(RateSignal(requests_limit=0, requests_remaining=0, requests_reset_s=0.0))
    assert pacer.gate_remaining() == 0


def test_aimd_halves_once_per_round_trip_and_grows_back_to_the_workers():
    w = _Window()
    for _ in range(16):  # 16 workers: the window never grows past 16
        w.enter()
    assert w.limit is None and w.cap == 16 and w.in_flight == 16
    w.leave(started=1.0, now=2.0, answered=False, limited=True)
    assert w.limit == 8
    for _ in range(9):  # the rest of the same burst: sent before the cut, they do not cut again
        w.leave(started=1.0, now=2.1, answered=False, limited=True)
    assert w.limit == 8 and w.in_flight == 6
    w.enter()  # a slot is free (6 < 8)
    w.leave(started=2.5, now=3.0, answered=False, limited=True)  # sent under the new window: cuts again
    assert w.limit == 4
    for _ in range(6):
        w.leave(started=1.0, now=4.0, answered=True, limited=False)
    assert w.in_flight == 0 and w.limit is not None and 5 < w.limit < 6  # additive: about one per window's worth of answers
    for _ in range(200):
        w.enter()
        w.leave(started=5.0, now=5.0, answered=True, limited=False)
    assert w.limit == 16 and w.in_flight == 0


def test_window_blocks_callers_beyond_the_limit():
    w = _Window()
    w.limit = 2.0
    w.enter()
    w.enter()
    entered = threading.Event()
    t = threading.Thread(target=lambda: (w.enter(), entered.set()))
    t.start()
    assert not entered.wait(0.2)  # a third request waits for a slot
    w.leave(started=0.0, now=0.0, answered=True, limited=False)
    assert entered.wait(2)
    t.join(2)


# ----------------------------------------------------------------------- 429: wait, do not fall back
@pytest.fixture
def chain_with_sleeps(openai_emu, anthropic_emu, make_config, make_scorer, fake_clock):
    def make(sleep, a=None, steps=("first", "second")):
        cfg = make_config(
            providers={"first": openai_emu.provider("gpt-a", **(a or {})), "second": anthropic_emu.provider("claude-b")}, steps=list(steps)
        )
        return make_scorer(cfg, clock=fake_clock, sleep=sleep)

    return make


def test_429_with_a_short_retry_after_makes_the_lead_wait_for_the_same_provider(
    chain_with_sleeps, openai_emu, anthropic_emu, leads, valid_answer
):
    sleeps = RealSleeps()
    openai_emu.script("gpt-a", error(429, retry_after=0.2), error(429, retry_after_ms=150), answer(valid_answer(score=64)))
    result = chain_with_sleeps(sleeps).score(leads["good"])
    assert result.status is ScoreStatus.scored and result.score == 64 and result.provider == "first"
    assert [(h.provider, h.outcome) for h in result.hops] == [("first", HopOutcome.ok)]
    assert not result.fell_back
    assert openai_emu.request_count("gpt-a") == 3 and anthropic_emu.request_count() == 0  # waited, never fell back
    assert sleeps == [pytest.approx(0.2, abs=0.02), pytest.approx(0.15, abs=0.02)]


def test_429_that_outlasts_max_rate_limit_wait_falls_back_with_the_reason(chain_with_sleeps, openai_emu, anthropic_emu, leads):
    sleeps = RealSleeps()
    openai_emu.script("gpt-a", error(429, retry_after=0.3))  # forever
    result = chain_with_sleeps(sleeps, a={"max_rate_limit_wait_s": 0.7}).score(leads["good"])
    assert [(h.provider, h.outcome) for h in result.hops] == [("first", HopOutcome.unavailable), ("second", HopOutcome.ok)]
    assert result.status is ScoreStatus.scored and result.fell_back
    assert openai_emu.request_count("gpt-a") == 3  # sent, waited 0.3 s twice, the third wait would pass 0.7 s
    assert "still rate limited after waiting 1s, max_rate_limit_wait_s = 0.7" in result.hops[0].detail


def test_a_429_burst_on_the_only_provider_fails_no_lead(openai_emu, make_config, make_scorer, valid_answer):
    """The issue's failure: one 429 paused the only provider and every lead started meanwhile failed unsent."""
    sleeps = RealSleeps()
    openai_emu.script("gpt-a", *[error(429, retry_after=0.2)] * 6, answer(valid_answer()))
    cfg = make_config(providers={"only": openai_emu.provider("gpt-a", max_retries=0)})
    scorer = make_scorer(cfg, sleep=sleeps)
    results = [r for _, r in scorer.score_many(many_leads(12), concurrency=6)]
    assert Counter(r.status for r in results) == {ScoreStatus.scored: 12}
    assert all(h.outcome is HopOutcome.ok for r in results for h in r.hops)
    answered = [r for r in openai_emu.requests if r.status == 200]
    assert len(answered) == 12 and openai_emu.request_count() == 18  # each lead paid once; 6 refused, re-sent
    assert scorer.chain.providers["only"].pacer.window.limit is not None  # AIMD cut the window


@pytest.mark.parametrize("configured", [True, False], ids=["requests_per_minute-set", "headers-only"])
@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_rate_limited_provider_scores_every_lead_at_its_limit(openai_emu, anthropic_emu, make_config, make_scorer, vendor, configured):
    """The Done scenario scaled down: 1,200 requests/min (20/s, one second banked), 0.2 s latency, concurrency 16,
    80 leads, one provider. bench/bench_pacing.py runs the real 500/min, 240-lead one through the CLI."""
    rpm, n = 1200, 80
    emu = openai_emu if vendor == "openai" else anthropic_emu
    emu.limit(requests_per_minute=rpm)
    emu.script("*", delay(0.2))
    extra = {"requests_per_minute": rpm} if configured else {}
    cfg = make_config(providers={"only": emu.provider("m", **extra)}, scoring={"concurrency": 16})
    scorer = make_scorer(cfg, sleep=time.sleep)
    t0 = time.monotonic()
    results = {lead.id: r for lead, r in scorer.score_many(many_leads(n), concurrency=16)}
    wall = time.monotonic() - t0
    assert len(results) == n and Counter(r.status for r in results.values()) == {ScoreStatus.scored: n}
    paid = Counter(extract_lead(_user_text(r.body))["company"] for r in emu.requests if r.status == 200)
    assert len(paid) == n and set(paid.values()) == {1}  # every lead answered exactly once
    throughput = n / wall * 60
    assert throughput >= 0.9 * rpm, f"{throughput:.0f}/min is under 90 % of {rpm}/min"
    if configured:
        assert emu.rate_limited_count() == 0  # evenly spaced under the limit: never refused


def _user_text(body: dict) -> str:
    msgs = [m for m in body["messages"] if m["role"] == "user"]
    content = msgs[0]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


# --------------------------------------------------------------------------------- outages are visible
def test_outage_warns_once_per_provider_per_pause_with_the_cause(
    openai_emu, make_config, make_scorer, leads, fake_clock, closed_port_url, monkeypatch, caplog
):
    monkeypatch.setenv("CRMSYNC_TEST_OPENAI_KEY", openai_emu.api_key)
    openai_emu.script("gpt-a", error(500))
    cfg = make_config(
        providers={
            "fast": openai_emu.provider("gpt-a"),
            "gone": {
                "type": "openai",
                "model": "m",
                "base_url": closed_port_url,
                "api_key_env": "CRMSYNC_TEST_OPENAI_KEY",
                "max_retries": 0,
                "timeout_s": 2,
            },
        },
        steps=["fast", "gone"],
        cooldown={"base_s": 30, "max_s": 600},
    )
    scorer = make_scorer(cfg, clock=fake_clock)
    with caplog.at_level(logging.WARNING, logger="crmsync"):
        first = scorer.score(leads["good"])
        fake_clock.advance(10)
        during = scorer.score(leads["junk"])  # both paused: skipped, no new warning
        fake_clock.advance(25)
        after = scorer.score(leads["good"])  # pauses over: tried again, fail again, warned again (60 s now)
    assert first.status is during.status is after.status is ScoreStatus.failed
    assert [h.outcome for h in during.hops] == [HopOutcome.cooling_down, HopOutcome.cooling_down]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        warnings[0]
        == "provider fast unavailable, paused 30s: fast: HTTP 500: The server had an error while processing your request. Sorry about that!"
    )
    assert warnings[1].startswith("provider gone unavailable, paused 30s: gone: APIConnectionError: Connection error. (")
    assert "Connection refused" in warnings[1]
    assert [w.split(":")[0] for w in warnings[2:]] == ["provider fast unavailable, paused 60s", "provider gone unavailable, paused 60s"]
    assert scorer.chain.outage_summary() == (
        "no provider answered: fast: HTTP 500: The server had an error while processing your request. Sorry about that!; "
        + warnings[3].split("paused 60s: ", 1)[1]
    )


def test_outage_summary_is_none_once_any_provider_answers(chain_with_sleeps, openai_emu, anthropic_emu, leads, fake_clock):
    openai_emu.script(
        "gpt-a",
        error(503),
        answer(
            {"score": 70, "confidence": 0.9, "reasons": ["r"], "missing_or_contradictory": [], "lead_text_contains_instructions": False}
        ),
    )
    anthropic_emu.script(
        "claude-b",
        error(529),
        answer(
            {"score": 71, "confidence": 0.9, "reasons": ["r"], "missing_or_contradictory": [], "lead_text_contains_instructions": False}
        ),
    )
    scorer = chain_with_sleeps(lambda s: None)
    assert scorer.chain.outage_summary() is None  # nothing tried yet
    scorer.score(leads["good"])
    assert scorer.chain.outage_summary() == (
        "no provider answered: first: HTTP 503: The server is overloaded or not ready yet.; second: HTTP 529: Overloaded"
    )
    fake_clock.advance(31)
    assert scorer.score(leads["good"]).provider == "first"
    assert scorer.chain.outage_summary() is None


def test_fell_back_only_when_a_next_step_existed(openai_emu, anthropic_emu, make_config, make_scorer, leads, valid_answer):
    openai_emu.script("gpt-a", error(500))
    one_step = make_scorer(make_config(providers={"only": openai_emu.provider("gpt-a")})).score(leads["good"])
    assert one_step.status is ScoreStatus.failed and not one_step.fell_back  # nowhere to fall back to
    two_steps = make_scorer(
        make_config(providers={"a": openai_emu.provider("gpt-a"), "b": anthropic_emu.provider("claude-b")}, steps=["a", "b"])
    ).score(leads["good"])
    assert two_steps.status is ScoreStatus.scored and two_steps.fell_back
    openai_emu.script("gpt-ok", answer(valid_answer(confidence=0.3)))
    anthropic_emu.script("claude-b", error(529))
    escalated = make_scorer(
        make_config(providers={"a": openai_emu.provider("gpt-ok"), "b": anthropic_emu.provider("claude-b")}, steps=[("a", 0.5), "b"])
    ).score(leads["good"])
    assert [h.outcome for h in escalated.hops] == [HopOutcome.ok, HopOutcome.unavailable]
    assert not escalated.fell_back  # the failing step was the last one: it handed nothing on
