"""The provider chain end to end: real SDKs against the local emulators, through Scorer → Chain → providers.

Fallback, cooldown and recovery, escalation, review flags, repair, costs, logprob confidence.
"""

from __future__ import annotations

import logging
import math

import pytest

from crmsync.models import HopOutcome, ReviewReason, ScoreStatus
from tests.emulators import answer, delay, drop, error, raw, refusal, rule, truncated

A, B = "gpt-a", "claude-b"


@pytest.fixture
def two_step(openai_emu, anthropic_emu, make_config, make_scorer, fake_clock):
    """OpenAI first, Anthropic second; both default to the emulators' deterministic rule."""

    def make(a_overrides=None, b_overrides=None, escalate_below=None, **sections):
        cfg = make_config(
            providers={"first": openai_emu.provider(A, **(a_overrides or {})), "second": anthropic_emu.provider(B, **(b_overrides or {}))},
            steps=[("first", escalate_below) if escalate_below is not None else "first", "second"],
            **sections,
        )
        return make_scorer(cfg, clock=fake_clock)

    return make


def outcomes(result):
    return [(h.provider, h.outcome) for h in result.hops]


# ----------------------------------------------------------------------------------------------- fallback
@pytest.mark.parametrize(
    "failure, detail",
    [(error(429, retry_after=120), "HTTP 429"), (error(500), "HTTP 500"), (error(503), "HTTP 503"), (drop(), "APIConnectionError")],
    ids=["429-long-retry-after", "500", "503", "dropped-connection"],
)
def test_openai_failure_falls_back_to_next_step(two_step, openai_emu, anthropic_emu, leads, failure, detail):
    openai_emu.script(A, failure)
    result = two_step().score(leads["good"])
    assert result.status is ScoreStatus.scored
    assert outcomes(result) == [("first", HopOutcome.unavailable), ("second", HopOutcome.ok)]
    assert detail in result.hops[0].detail
    assert result.provider == "second" and result.model == B
    assert result.score == 90 and result.tier == "A"  # default rule for the good lead
    assert result.fell_back and not result.escalated
    assert openai_emu.request_count(A) == 1 and anthropic_emu.request_count(B) == 1


def test_anthropic_529_overloaded_falls_back(openai_emu, anthropic_emu, make_config, make_scorer, leads):
    anthropic_emu.script(B, error(529))
    cfg = make_config(providers={"claude": anthropic_emu.provider(B), "gpt": openai_emu.provider(A)}, steps=["claude", "gpt"])
    result = make_scorer(cfg).score(leads["good"])
    assert outcomes(result) == [("claude", HopOutcome.unavailable), ("gpt", HopOutcome.ok)]
    assert "529" in result.hops[0].detail
    assert result.status is ScoreStatus.scored and result.model == A


def test_timeout_falls_back_quickly(two_step, openai_emu, leads):
    openai_emu.script(A, delay(3.0))
    scorer = two_step(a_overrides={"timeout_s": 0.5})
    result = scorer.score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.unavailable), ("second", HopOutcome.ok)]
    assert "Timeout" in result.hops[0].detail
    assert result.hops[0].latency_s < 2.5  # gave up at the timeout, did not wait for the answer
    assert result.status is ScoreStatus.scored


def test_connection_refused_falls_back(anthropic_emu, make_config, make_scorer, leads, closed_port_url, monkeypatch):
    monkeypatch.setenv("CRMSYNC_TEST_OPENAI_KEY", "sk-unused")
    cfg = make_config(
        providers={
            "gone": {
                "type": "openai",
                "model": A,
                "base_url": closed_port_url,
                "api_key_env": "CRMSYNC_TEST_OPENAI_KEY",
                "max_retries": 1,
                "timeout_s": 2,
            },
            "claude": anthropic_emu.provider(B),
        },
        steps=["gone", "claude"],
    )
    result = make_scorer(cfg).score(leads["good"])
    assert outcomes(result) == [("gone", HopOutcome.unavailable), ("claude", HopOutcome.ok)]
    assert "Connection" in result.hops[0].detail
    assert result.status is ScoreStatus.scored


def test_transient_error_retried_on_same_provider_before_falling_back(two_step, openai_emu, anthropic_emu, leads):
    openai_emu.script(
        A,
        error(429, retry_after=0.01),
        error(500),
        answer(
            {"score": 70, "confidence": 0.8, "reasons": ["ok"], "missing_or_contradictory": [], "lead_text_contains_instructions": False}
        ),
    )
    result = two_step(a_overrides={"max_retries": 2}).score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.ok)]
    assert result.score == 70 and result.tier == "B"
    assert openai_emu.request_count(A) == 3 and anthropic_emu.request_count() == 0


def test_every_provider_down_means_no_score(two_step, openai_emu, anthropic_emu, leads):
    openai_emu.script(A, error(503))
    anthropic_emu.script(B, error(529))
    result = two_step().score(leads["good"])
    assert result.status is ScoreStatus.failed
    assert result.score is None and result.tier is None and result.confidence is None
    assert result.provider is None
    assert [h.outcome for h in result.hops] == [HopOutcome.unavailable, HopOutcome.unavailable]
    assert not result.needs_review  # nothing to review: it is retried later


# ----------------------------------------------------------------------------------- cooldown, recovery
def test_cooldown_skips_failed_provider_then_recovers(two_step, openai_emu, anthropic_emu, leads, fake_clock, valid_answer):
    openai_emu.script(A, error(500), answer(valid_answer(score=65)))
    scorer = two_step(cooldown={"base_s": 30, "max_s": 600, "rejected_s": 3600})

    first = scorer.score(leads["good"])
    assert outcomes(first) == [("first", HopOutcome.unavailable), ("second", HopOutcome.ok)]
    assert "paused 30s" in first.hops[0].detail

    fake_clock.advance(29)
    second = scorer.score(leads["junk"])
    assert outcomes(second) == [("first", HopOutcome.cooling_down), ("second", HopOutcome.ok)]
    assert openai_emu.request_count(A) == 1  # skipped without a request

    fake_clock.advance(2)  # the 30 s pause is over
    third = scorer.score(leads["good"])
    assert outcomes(third) == [("first", HopOutcome.ok)]
    assert third.score == 65 and third.provider == "first"
    assert openai_emu.request_count(A) == 2


def test_cooldown_doubles_per_failure_and_resets_on_success(two_step, openai_emu, leads, fake_clock, valid_answer):
    openai_emu.script(A, error(500), error(500), answer(valid_answer()), error(500))
    scorer = two_step(cooldown={"base_s": 10, "max_s": 600})
    assert "paused 10s" in scorer.score(leads["good"]).hops[0].detail
    fake_clock.advance(11)
    assert "paused 20s" in scorer.score(leads["good"]).hops[0].detail
    fake_clock.advance(21)
    assert scorer.score(leads["good"]).hops[0].outcome is HopOutcome.ok
    assert "paused 10s" in scorer.score(leads["good"]).hops[0].detail  # success reset the count


def test_retry_after_honoured_but_capped(two_step, openai_emu, leads, fake_clock, valid_answer):
    # A Retry-After above max_retry_after_s: no retry now (would stall), fall back; cooldown honours it ...
    openai_emu.script(A, error(429, retry_after=120), answer(valid_answer()))
    scorer = two_step(a_overrides={"max_retries": 3, "max_retry_after_s": 5}, cooldown={"base_s": 10, "max_s": 600})
    result = scorer.score(leads["good"])
    assert openai_emu.request_count(A) == 1
    assert "paused 120s" in result.hops[0].detail
    fake_clock.advance(119)
    assert scorer.score(leads["good"]).hops[0].outcome is HopOutcome.cooling_down
    fake_clock.advance(2)
    assert scorer.score(leads["good"]).hops[0].outcome is HopOutcome.ok


def test_huge_retry_after_cannot_stall_the_daemon(two_step, openai_emu, anthropic_emu, leads, fake_clock, valid_answer):
    # ... but with our own cap: a day-long Retry-After pauses the provider for cooldown.max_s only.
    anthropic_emu.script(B, error(429, retry_after=86_400), answer(valid_answer()))
    openai_emu.script(A, error(500))
    scorer = two_step(b_overrides={"max_retries": 2}, cooldown={"base_s": 10, "max_s": 300})
    result = scorer.score(leads["good"])
    assert result.status is ScoreStatus.failed
    assert anthropic_emu.request_count(B) == 1  # the SDK did not sleep a day, and we did not retry
    assert "paused 300s" in result.hops[1].detail
    fake_clock.advance(301)
    assert scorer.score(leads["good"]).hops[1].outcome is HopOutcome.ok


@pytest.mark.parametrize("status", [401, 403, 400])
def test_configuration_errors_rejected_logged_once_and_paused_long(two_step, openai_emu, leads, fake_clock, caplog, status):
    openai_emu.script(A, error(status))
    scorer = two_step(cooldown={"base_s": 10, "max_s": 600, "rejected_s": 3600})
    with caplog.at_level(logging.ERROR, logger="crmsync"):
        first = scorer.score(leads["good"])
        fake_clock.advance(700)  # longer than any transient pause
        second = scorer.score(leads["good"])
        fake_clock.advance(3000)
        third = scorer.score(leads["good"])
    assert first.hops[0].outcome is HopOutcome.rejected and f"HTTP {status}" in first.hops[0].detail
    assert second.hops[0].outcome is HopOutcome.cooling_down
    assert third.hops[0].outcome is HopOutcome.rejected  # tried again after rejected_s
    assert openai_emu.request_count(A) == 2
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "first" in r.getMessage()]
    assert len(loud) == 1, [r.getMessage() for r in caplog.records]
    assert "configuration" in loud[0].getMessage()
    assert all(res.status is ScoreStatus.scored for res in (first, second, third))  # the next step scored


def test_api_key_never_in_hops_or_logs(openai_emu, anthropic_emu, make_config, make_scorer, leads, caplog, monkeypatch):
    secret_oa, secret_an = "sk-proj-SECRETSECRET-0123456789", "sk-ant-SECRETSECRET-0123456789"
    monkeypatch.setenv("CRMSYNC_TEST_OPENAI_KEY", secret_oa)  # wrong keys: the emulators answer 401
    monkeypatch.setenv("CRMSYNC_TEST_ANTHROPIC_KEY", secret_an)
    cfg = make_config(providers={"a": openai_emu.provider(A), "b": anthropic_emu.provider(B)}, steps=["a", "b"])
    with caplog.at_level(logging.DEBUG):
        result = make_scorer(cfg).score(leads["good"])
    assert [h.outcome for h in result.hops] == [HopOutcome.rejected, HopOutcome.rejected]
    dump = result.model_dump_json() + "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert "SECRETSECRET" not in dump
    assert "401" in dump


# --------------------------------------------------------------------------------------------- escalation
def test_low_confidence_escalates_to_next_step(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=82, confidence=0.5)))
    anthropic_emu.script(B, answer(valid_answer(score=86, confidence=0.9)))
    result = two_step(escalate_below=0.7).score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.ok), ("second", HopOutcome.ok)]
    assert result.escalated
    assert result.score == 86 and result.provider == "second" and result.confidence == 0.9
    assert result.hops[0].confidence == 0.5
    assert not result.needs_review  # same tier, 4 points apart


def test_confident_answer_does_not_escalate(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=82, confidence=0.7)))
    result = two_step(escalate_below=0.7).score(leads["good"])  # 0.7 is not under 0.7
    assert outcomes(result) == [("first", HopOutcome.ok)]
    assert anthropic_emu.request_count() == 0 and not result.escalated


def test_step_without_threshold_never_escalates(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=50, confidence=0.1)))
    result = two_step().score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.ok)]
    assert anthropic_emu.request_count() == 0
    assert result.needs_review and result.review_reasons == [ReviewReason.low_confidence]


@pytest.mark.parametrize(
    "first_score, second_score, gap, disagree",
    [
        (82, 65, 30, True),  # different tier (A vs B), close in points
        (81, 99, 10, True),  # same tier A, 18 points apart > gap 10
        (81, 91, 10, False),  # same tier, exactly the gap
        (85, 88, 10, False),
    ],
)
def test_escalated_steps_disagreeing_flags_review(
    two_step, openai_emu, anthropic_emu, leads, valid_answer, first_score, second_score, gap, disagree
):
    openai_emu.script(A, answer(valid_answer(score=first_score, confidence=0.4)))
    anthropic_emu.script(B, answer(valid_answer(score=second_score, confidence=0.95)))
    result = two_step(escalate_below=0.6, review={"confidence_below": 0.6, "max_score_gap": gap}).score(leads["good"])
    assert result.escalated and result.score == second_score
    assert (ReviewReason.steps_disagree in result.review_reasons) is disagree
    assert result.needs_review is disagree


def test_escalation_whose_next_step_fails_keeps_first_answer_and_flags_low_confidence(
    two_step, openai_emu, anthropic_emu, leads, valid_answer
):
    openai_emu.script(A, answer(valid_answer(score=72, confidence=0.4)))
    anthropic_emu.script(B, error(529))
    result = two_step(escalate_below=0.6).score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.ok), ("second", HopOutcome.unavailable)]
    assert result.status is ScoreStatus.scored and result.score == 72 and result.tier == "B"
    assert result.review_reasons == [ReviewReason.low_confidence]


# ------------------------------------------------------------------------------------- invalid answers
BAD_JSON = '{"score": 80, "confidence": 0.9, "reasons": ["x"'


def test_malformed_json_repaired_once(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    openai_emu.script(A, raw(BAD_JSON), answer(valid_answer(score=77)))
    result = two_step().score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.repaired)]
    assert result.score == 77 and result.hops[0].attempts == 2
    repair_req = openai_emu.requests[-1].body["messages"]
    assert [m["role"] for m in repair_req] == ["system", "user", "assistant", "user"]
    assert repair_req[2]["content"] == BAD_JSON
    assert "malformed_json" in repair_req[3]["content"]
    assert anthropic_emu.request_count() == 0


@pytest.mark.parametrize(
    "bad, kind",
    [
        (raw(BAD_JSON), "malformed_json"),
        (raw("Sure! The score is 80."), "malformed_json"),
        (answer({"score": 80, "confidence": 0.9}), "schema_violation"),  # keys missing
        (
            answer(
                {
                    "score": 80,
                    "confidence": 0.9,
                    "reasons": [],
                    "missing_or_contradictory": [],
                    "lead_text_contains_instructions": False,
                    "tier": "A",
                }
            ),
            "schema_violation",
        ),  # extra key
        (
            answer(
                {
                    "score": 150,
                    "confidence": 0.9,
                    "reasons": ["x"],
                    "missing_or_contradictory": [],
                    "lead_text_contains_instructions": False,
                }
            ),
            "schema_violation",
        ),  # out of range
        (
            answer(
                {"score": 80, "confidence": 90, "reasons": ["x"], "missing_or_contradictory": [], "lead_text_contains_instructions": False}
            ),
            "schema_violation",
        ),  # 90, not 0.9
        (
            answer(
                {
                    "score": 80.5,
                    "confidence": 0.9,
                    "reasons": ["x"],
                    "missing_or_contradictory": [],
                    "lead_text_contains_instructions": False,
                }
            ),
            "schema_violation",
        ),  # not an int
        (refusal("I can't score people."), "refusal"),
        (truncated('{"score": 80, "confid'), "truncated"),
    ],
    ids=["malformed", "prose", "missing-keys", "extra-key", "score-150", "confidence-90", "score-float", "refusal", "truncated"],
)
def test_invalid_twice_goes_to_next_step(two_step, openai_emu, anthropic_emu, leads, bad, kind):
    openai_emu.script(A, bad)  # repeats: the repair is invalid too
    result = two_step().score(leads["good"])
    assert outcomes(result) == [("first", HopOutcome.invalid), ("second", HopOutcome.ok)]
    assert openai_emu.request_count(A) == 2  # one answer + exactly one repair
    assert kind in result.hops[0].detail
    assert result.hops[0].score is None and result.hops[0].attempts == 2
    assert result.score == 90 and result.provider == "second"  # never the invalid (e.g. clamped) value


@pytest.mark.parametrize(
    "bad, kind",
    [
        (refusal("No."), "refusal"),
        (truncated('{"score": 8'), "truncated"),
        (raw("not json"), "malformed_json"),
        (
            answer(
                {"score": -1, "confidence": 0.5, "reasons": ["x"], "missing_or_contradictory": [], "lead_text_contains_instructions": False}
            ),
            "schema_violation",
        ),
    ],
    ids=["refusal", "truncated", "malformed", "score-negative"],
)
def test_anthropic_invalid_then_repaired(anthropic_emu, make_config, make_scorer, leads, valid_answer, bad, kind):
    anthropic_emu.script(B, bad, answer(valid_answer(score=61, confidence=0.8)))
    cfg = make_config(providers={"claude": anthropic_emu.provider(B)})
    result = make_scorer(cfg).score(leads["good"])
    assert outcomes(result) == [("claude", HopOutcome.repaired)]
    assert result.score == 61 and result.tier == "B"
    msgs = anthropic_emu.requests[-1].body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and kind in msgs[2]["content"]


def test_no_valid_answer_anywhere_is_unscorable_and_flagged(two_step, openai_emu, anthropic_emu, leads):
    openai_emu.script(A, raw("garbage"))
    anthropic_emu.script(B, error(500))
    result = two_step().score(leads["good"])
    assert result.status is ScoreStatus.unscorable
    assert result.score is None and result.tier is None
    assert result.needs_review and result.review_reasons == [ReviewReason.no_valid_answer]


def test_tier_comes_from_the_rubric_not_the_model(two_step, openai_emu, leads, valid_answer, rubric):
    openai_emu.script(A, answer(valid_answer(score=79, confidence=0.95)))
    result = two_step().score(leads["good"])
    assert result.score == 79 and result.tier == "B" == rubric.tier_for(79)


def test_overlong_reasons_are_trimmed_not_rejected(two_step, openai_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(reasons=["x" * 500, "b", "c", "d", "  "])))
    result = two_step().score(leads["good"])
    assert result.hops[0].outcome is HopOutcome.ok
    assert len(result.reasons) == 3 and len(result.reasons[0]) == 160


# ------------------------------------------------------------------------------------------ review flags
def test_injection_lead_flagged_when_model_notices(two_step, openai_emu, leads):
    result = two_step().score(leads["injection"])  # the default rule sets lead_text_contains_instructions
    assert result.needs_review and ReviewReason.instructions_in_lead in result.review_reasons


def test_injection_lead_model_obeys_still_never_unflagged_top_tier(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    obeyed = valid_answer(score=100, confidence=0.99, lead_text_contains_instructions=False)
    openai_emu.script(A, answer(obeyed))
    anthropic_emu.script(B, answer(obeyed))
    result = two_step().score(leads["injection"])
    assert result.score == 100 and result.tier == "A"
    assert result.needs_review and ReviewReason.instructions_in_lead in result.review_reasons


def test_model_flag_alone_triggers_review(two_step, openai_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=85, confidence=0.95, lead_text_contains_instructions=True)))
    result = two_step().score(leads["good"])
    assert result.review_reasons == [ReviewReason.instructions_in_lead]


def test_clean_confident_lead_not_flagged(two_step, openai_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=85, confidence=0.95)))
    result = two_step().score(leads["good"])
    assert result.status is ScoreStatus.scored and not result.needs_review and result.review_reasons == []


def test_low_final_confidence_flags_review(two_step, openai_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=45, confidence=0.59)))
    result = two_step(review={"confidence_below": 0.6}).score(leads["good"])
    assert result.review_reasons == [ReviewReason.low_confidence] and result.tier == "C"


# ------------------------------------------------------------------------------------------------ logprobs
@pytest.mark.parametrize("stated, p_digit, expected", [(0.9, 0.4, 0.4), (0.3, 0.95, 0.3)])
def test_logprobs_fold_into_confidence(two_step, openai_emu, leads, valid_answer, stated, p_digit, expected):
    openai_emu.script(A, answer(valid_answer(score=85, confidence=stated), logprob=math.log(p_digit)))
    result = two_step(a_overrides={"logprobs": True}).score(leads["good"])
    hop = result.hops[0]
    assert openai_emu.requests[-1].body["logprobs"] is True
    assert hop.stated_confidence == stated
    assert hop.logprob_confidence == pytest.approx(p_digit)
    assert hop.confidence == pytest.approx(expected) and result.confidence == pytest.approx(expected)


def test_low_logprob_can_trigger_escalation(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    openai_emu.script(A, answer(valid_answer(score=85, confidence=0.95), logprob=math.log(0.5)))
    result = two_step(a_overrides={"logprobs": True}, escalate_below=0.8).score(leads["good"])
    assert result.escalated and anthropic_emu.request_count() == 1


def test_logprobs_not_requested_unless_configured(two_step, openai_emu, leads):
    result = two_step().score(leads["good"])
    assert "logprobs" not in openai_emu.requests[-1].body
    assert result.hops[0].logprob_confidence is None and result.confidence == result.hops[0].stated_confidence


# --------------------------------------------------------------------------------------------------- costs
PRICES = {
    A: {"input": 2.0, "cached_input": 0.2, "output": 8.0, "as_of": "2026-11-01"},
    B: {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0, "as_of": "2026-11-01"},
}


def _openai_cost(u):
    cached = u["prompt_tokens_details"]["cached_tokens"]
    p = PRICES[A]
    return ((u["prompt_tokens"] - cached) * p["input"] + cached * p["cached_input"] + u["completion_tokens"] * p["output"]) / 1e6


def _anthropic_cost(u):
    p = PRICES[B]
    return (
        u["input_tokens"] * p["input"]
        + u["cache_read_input_tokens"] * p["cached_input"]
        + u["cache_creation_input_tokens"] * p["cache_write"]
        + u["output_tokens"] * p["output"]
    ) / 1e6


def test_costs_add_up_to_reported_tokens_times_prices(two_step, openai_emu, anthropic_emu, leads, valid_answer):
    # Lead 1: A answers invalidly, repair invalid too → B (first sight of the rubric: cache write).
    # Lead 2: A answers malformed, repair valid but low confidence → escalates to B (cache read).
    openai_emu.script(A, raw("nope"), raw("still nope"), raw("{bad"), answer(valid_answer(score=70, confidence=0.3)))
    scorer = two_step(escalate_below=0.5, prices=PRICES)
    r1 = scorer.score(leads["good"])
    r2 = scorer.score(leads["junk"])
    assert outcomes(r1) == [("first", HopOutcome.invalid), ("second", HopOutcome.ok)]
    assert outcomes(r2) == [("first", HopOutcome.repaired), ("second", HopOutcome.ok)]

    assert len(openai_emu.usages) == 4 and len(anthropic_emu.usages) == 2
    expected = sum(map(_openai_cost, openai_emu.usages)) + sum(map(_anthropic_cost, anthropic_emu.usages))
    assert r1.cost_usd + r2.cost_usd == pytest.approx(expected, rel=1e-9)
    assert expected > 0

    # tokens recorded = tokens reported, invalid answers and repairs included
    oa_in = sum(u["prompt_tokens"] for u in openai_emu.usages)
    an_in = sum(u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"] for u in anthropic_emu.usages)
    assert r1.usage.input_tokens + r2.usage.input_tokens == oa_in + an_in
    assert r1.usage.output_tokens + r2.usage.output_tokens == sum(u["completion_tokens"] for u in openai_emu.usages) + sum(
        u["output_tokens"] for u in anthropic_emu.usages
    )

    # cached tokens: the second lead reused the rubric prefix on both providers, priced at the cached rate
    assert openai_emu.usages[2]["prompt_tokens_details"]["cached_tokens"] > 0
    assert r2.hops[0].usage.cached_input_tokens == sum(u["prompt_tokens_details"]["cached_tokens"] for u in openai_emu.usages[2:])
    assert r1.hops[1].usage.cache_write_tokens == anthropic_emu.usages[0]["cache_creation_input_tokens"] > 0
    assert r2.hops[1].usage.cached_input_tokens == anthropic_emu.usages[1]["cache_read_input_tokens"] > 0
    full_price_r2b = r2.hops[1].usage.input_tokens * PRICES[B]["input"] / 1e6 + r2.hops[1].usage.output_tokens * PRICES[B]["output"] / 1e6
    assert r2.hops[1].cost_usd < full_price_r2b


def test_unpriced_model_costs_zero_but_tokens_recorded(two_step, openai_emu, leads):
    result = two_step().score(leads["good"])
    assert result.cost_usd == 0.0 and result.hops[0].usage.input_tokens == openai_emu.usages[0]["prompt_tokens"]


def test_score_many_scores_every_lead_concurrently(two_step, openai_emu, leads):
    scorer = two_step()
    done = {lead.id: res for lead, res in scorer.score_many(leads.values(), concurrency=3)}
    assert set(done) == {lead.id for lead in leads.values()}
    assert done["lead-good"].score == 90 and done["lead-junk"].tier == "D"
    assert openai_emu.request_count(A) == 4


def test_rule_behaviour_sees_only_the_lead_json(two_step, openai_emu, leads, valid_answer):
    seen = []
    openai_emu.script(A, rule(lambda lead, body: seen.append(lead) or valid_answer()))
    two_step().score(leads["junk"])
    assert seen == [leads["junk"].inputs]


def test_cooldown_survives_a_long_outage_without_overflow(fake_clock):
    from crmsync.config import CooldownConfig
    from crmsync.providers.chain import Cooldowns

    cd = Cooldowns(CooldownConfig(base_s=30, max_s=600), clock=fake_clock)
    pauses = []
    for _ in range(1200):  # a week of failures, one per expired pause
        pauses.append(cd.failed("p", None))
        fake_clock.advance(pauses[-1])
    assert pauses[:3] == [30, 60, 120] and pauses[-1] == 600
    assert cd.failed("p", None) == 600 and cd.remaining("p") == 600
    cd.succeeded("p")
    assert cd.remaining("p") == 0  # it answered: the pause is over
    assert cd.failed("p", 5.0) == 30  # reset; a short Retry-After does not shorten our pause
    fake_clock.advance(30)
    assert cd.failed("p", 10_000) == 600  # a long one is honoured only up to max_s


def test_failures_during_a_pause_neither_double_it_nor_warn_again(fake_clock, caplog):
    from crmsync.config import CooldownConfig
    from crmsync.providers.chain import Cooldowns

    cd = Cooldowns(CooldownConfig(base_s=30, max_s=600), clock=fake_clock)
    with caplog.at_level(logging.WARNING, logger="crmsync"):
        first = cd.failed("fast", None, "fast: HTTP 500: Internal server error")
        fake_clock.advance(5)
        in_flight = [cd.failed("fast", None, "fast: HTTP 500: Internal server error") for _ in range(15)]
        fake_clock.advance(26)  # the pause is over: the next failure starts a new, doubled one and warns again
        second = cd.failed("fast", None, "fast: APIConnectionError: Connection error. ([Errno 111] Connection refused)")
    assert first == 30 and in_flight == [25] * 15 and second == 60
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "provider fast unavailable, paused 30s: fast: HTTP 500: Internal server error",
        "provider fast unavailable, paused 60s: fast: APIConnectionError: Connection error. ([Errno 111] Connection refused)",
    ]
