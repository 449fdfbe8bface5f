"""Each provider alone, against the emulators through the real SDK: status mapping, retries and Retry-After,
request shape, answer validation; plus the pure helpers of providers/base.py."""

from __future__ import annotations

import json
import math

import pytest

from crmsync.config import PriceConfig
from crmsync.errors import ConfigError, InvalidAnswer, ProviderRejected, ProviderUnavailable
from crmsync.models import ModelAnswer, Usage
from crmsync.providers.anthropic_provider import AnthropicProvider
from crmsync.providers.base import Prompt, Repair, cost_usd, score_token_confidence, validate_answer
from crmsync.providers.openai_provider import OpenAIProvider
from crmsync.providers.options import ProviderContext
from tests.conftest import SleepClock
from tests.emulators import answer, drop, error, raw, refusal, truncated

PROMPT = Prompt(system="You score leads. " * 20, user='Score this lead:\n```json\n{"company": "Acme"}\n```', cache_key="crmsync-abc")
GOOD = {"score": 72, "confidence": 0.8, "reasons": ["r"], "missing_or_contradictory": [], "lead_text_contains_instructions": False}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def oa(openai_emu, sleeps):
    made = []

    def make(**kw):
        p = OpenAIProvider("oa", OpenAIProvider.Options(**openai_emu.provider("gpt-t", **kw)), ProviderContext(clock=SleepClock(sleeps)))
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def an(anthropic_emu, sleeps):
    made = []

    def make(**kw):
        p = AnthropicProvider(
            "an", AnthropicProvider.Options(**anthropic_emu.provider("claude-t", **kw)), ProviderContext(clock=SleepClock(sleeps))
        )
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# ---------------------------------------------------------------------------------------- status mapping
@pytest.mark.parametrize(
    "status, exc",
    [
        (429, ProviderUnavailable),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (408, ProviderUnavailable),
        (409, ProviderUnavailable),
        (400, ProviderRejected),
        (401, ProviderRejected),
        (403, ProviderRejected),
        (404, ProviderRejected),
        (422, ProviderRejected),
    ],
)
def test_openai_status_mapping(oa, openai_emu, status, exc):
    openai_emu.script("gpt-t", error(status))
    with pytest.raises(exc) as info:
        oa().score(PROMPT)
    assert info.value.status == status and f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize(
    "status, exc",
    [
        (429, ProviderUnavailable),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (504, ProviderUnavailable),
        (529, ProviderUnavailable),
        (400, ProviderRejected),
        (401, ProviderRejected),
        (402, ProviderRejected),
        (403, ProviderRejected),
        (404, ProviderRejected),
    ],
)
def test_anthropic_status_mapping(an, anthropic_emu, status, exc):
    anthropic_emu.script("claude-t", error(status))
    with pytest.raises(exc) as info:
        an().score(PROMPT)
    assert info.value.status == status


def test_dropped_connection_is_unavailable(oa, an, openai_emu, anthropic_emu):
    openai_emu.script("gpt-t", drop())
    anthropic_emu.script("claude-t", drop())
    for p in (oa(), an()):
        with pytest.raises(ProviderUnavailable, match="Connection"):
            p.score(PROMPT)


def test_refused_connection_is_unavailable(closed_port_url, monkeypatch, sleeps):
    monkeypatch.setenv("K", "sk-x")
    p = OpenAIProvider(
        "gone",
        OpenAIProvider.Options(type="openai", model="m", base_url=closed_port_url, api_key_env="K", max_retries=2, timeout_s=2),
        ProviderContext(clock=SleepClock(sleeps)),
    )
    with pytest.raises(ProviderUnavailable, match="APIConnectionError"):
        p.score(PROMPT)
    assert len(sleeps) == 2  # retried twice with backoff, then gave up
    p.close()


# ----------------------------------------------------------------------------------------------- retries
def test_retry_after_is_slept_exactly_when_under_cap(oa, openai_emu, sleeps):
    openai_emu.script("gpt-t", error(429, retry_after=2), answer(GOOD))
    reply = oa(max_retries=1, max_retry_after_s=5).score(PROMPT)
    # a 429's wait is a gate for every lead of the provider; this lead sleeps until it opens
    assert reply.answer.score == 72 and sleeps == [pytest.approx(2.0, abs=0.05)] and openai_emu.request_count() == 2


def test_retry_after_ms_preferred(an, anthropic_emu, sleeps):
    anthropic_emu.script("claude-t", error(529, retry_after=9, retry_after_ms=1500), answer(GOOD))
    an(max_retries=1, max_retry_after_s=5).score(PROMPT)
    assert sleeps == [1.5]


def test_retry_after_over_cap_gives_up_at_once_and_reports_it(oa, an, openai_emu, anthropic_emu, sleeps):
    openai_emu.script("gpt-t", error(429, retry_after=60), answer(GOOD))
    anthropic_emu.script("claude-t", error(429, retry_after=60), answer(GOOD))
    for p, emu in ((oa(max_retries=3, max_retry_after_s=30), openai_emu), (an(max_retries=3, max_retry_after_s=30), anthropic_emu)):
        with pytest.raises(ProviderUnavailable) as info:
            p.score(PROMPT)
        assert info.value.retry_after == 60.0  # the chain's cooldown honours it (capped there)
        assert emu.request_count() == 1
    assert sleeps == []


def test_backoff_without_retry_after_then_gives_up(oa, openai_emu, sleeps):
    openai_emu.script("gpt-t", error(500))
    with pytest.raises(ProviderUnavailable):
        oa(max_retries=3).score(PROMPT)
    assert openai_emu.request_count() == 4 and len(sleeps) == 3
    for n, s in enumerate(sleeps):
        assert 0.75 * 0.5 * 2**n <= s <= 0.5 * 2**n


def test_rejected_and_invalid_are_not_retried(oa, openai_emu, sleeps):
    openai_emu.script("gpt-t", error(401))
    with pytest.raises(ProviderRejected):
        oa(max_retries=3).score(PROMPT)
    openai_emu.reset()
    openai_emu.script("gpt-t", raw("nope"))
    with pytest.raises(InvalidAnswer):
        oa(max_retries=3).score(PROMPT)
    assert openai_emu.request_count() == 1 and sleeps == []


def test_timeout_is_unavailable(oa, openai_emu):
    from tests.emulators import delay

    openai_emu.script("gpt-t", delay(2.0, GOOD))
    with pytest.raises(ProviderUnavailable, match="Timeout"):
        oa(timeout_s=0.3).score(PROMPT)


# ------------------------------------------------------------------------------------------ request shape
def test_openai_request_shape(oa, openai_emu):
    oa(temperature=0.0).score(PROMPT)
    body = openai_emu.requests[-1].body
    assert body["messages"] == [{"role": "system", "content": PROMPT.system}, {"role": "user", "content": PROMPT.user}]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True  # the emulator checks strict rules
    assert next(iter(rf["json_schema"]["schema"]["properties"])) == "score"  # score first: its token's logprob
    assert body["prompt_cache_key"] == "crmsync-abc" and body["max_completion_tokens"] == 400
    assert body["temperature"] == 0.0


def test_openai_json_object_schema_mode_for_llamacpp_servers(oa, openai_emu):
    oa(structured_output="json_object_schema").score(PROMPT)
    body = openai_emu.requests[-1].body
    assert body["response_format"]["type"] == "json_object" and "properties" in body["response_format"]["schema"]
    assert body["max_tokens"] == 400 and "max_completion_tokens" not in body and "prompt_cache_key" not in body


def test_anthropic_request_shape_and_cache_control(an, anthropic_emu):
    an().score(PROMPT)
    req = anthropic_emu.requests[-1]
    assert req.headers.get("anthropic-version")
    body = req.body
    assert body["system"] == [{"type": "text", "text": PROMPT.system, "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == [{"role": "user", "content": PROMPT.user}]
    assert body["output_config"]["format"]["type"] == "json_schema"
    assert body["output_config"]["format"]["schema"]["additionalProperties"] is False
    # API version 2026-10-21 rejects any sampling parameter, even at its default: never sent.
    assert not {"temperature", "top_p", "top_k"} & set(body)


def test_anthropic_forced_tool_mode(an, anthropic_emu):
    anthropic_emu.script("claude-t", answer(GOOD))
    reply = an(structured_output="tool").score(PROMPT)
    body = anthropic_emu.requests[-1].body
    assert body["tool_choice"] == {"type": "tool", "name": "record_lead_score"} and "output_config" not in body
    assert reply.answer == ModelAnswer(**GOOD)


def test_anthropic_usage_counts_all_input_and_cache(an, anthropic_emu):
    big = Prompt(system="Rubric line about order volume and fit. " * 200, user=PROMPT.user, cache_key="k")
    p = an()
    first, second = p.score(big), p.score(big)
    u1, u2 = anthropic_emu.usages
    assert first.usage.cache_write_tokens == u1["cache_creation_input_tokens"] > 0
    assert second.usage.cached_input_tokens == u2["cache_read_input_tokens"] > 0
    assert second.usage.input_tokens == u2["input_tokens"] + u2["cache_read_input_tokens"] + u2["cache_creation_input_tokens"]


def test_openai_cached_tokens_recorded(oa, openai_emu):
    big = Prompt(system="Rubric line about order volume and fit. " * 200, user=PROMPT.user, cache_key="k")
    p = oa()
    p.score(big)
    second = p.score(big)
    u2 = openai_emu.usages[1]
    assert second.usage.cached_input_tokens == u2["prompt_tokens_details"]["cached_tokens"] > 0
    assert second.usage.input_tokens == u2["prompt_tokens"]


def test_repair_request_carries_previous_answer_and_problem(oa, an, openai_emu, anthropic_emu):
    rep = Repair(raw='{"score": 150}', problem="schema_violation: score: must be <= 100")
    oa().score(PROMPT, rep)
    an().score(PROMPT, rep)
    for msgs in (openai_emu.requests[-1].body["messages"][-2:], anthropic_emu.requests[-1].body["messages"][-2:]):
        assert msgs[0] == {"role": "assistant", "content": '{"score": 150}'}
        assert msgs[1]["role"] == "user" and "score: must be <= 100" in msgs[1]["content"]


# ------------------------------------------------------------------------------------------ invalid answers
@pytest.mark.parametrize(
    "behaviour, kind",
    [
        (raw("{"), "malformed_json"),
        (refusal(), "refusal"),
        (truncated('{"score": 1'), "truncated"),
        (answer({**GOOD, "confidence": 1.5}), "schema_violation"),
    ],
)
def test_invalid_answers_carry_kind_and_usage(oa, an, openai_emu, anthropic_emu, behaviour, kind):
    openai_emu.script("gpt-t", behaviour)
    anthropic_emu.script("claude-t", behaviour)
    for p, _emu in ((oa(), openai_emu), (an(), anthropic_emu)):
        with pytest.raises(InvalidAnswer) as info:
            p.score(PROMPT)
        assert info.value.kind == kind
        assert isinstance(info.value.usage, Usage) and info.value.usage.input_tokens > 0  # still costed


def test_missing_api_key_env_is_a_startup_error_naming_it(monkeypatch):
    monkeypatch.delenv("CRMSYNC_NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="CRMSYNC_NOPE_KEY") as info:
        OpenAIProvider("fast", OpenAIProvider.Options(type="openai", model="m", api_key_env="CRMSYNC_NOPE_KEY"))
    assert "'fast'" in str(info.value)
    monkeypatch.setenv("CRMSYNC_NOPE_KEY", "   ")
    with pytest.raises(ConfigError, match="CRMSYNC_NOPE_KEY"):
        AnthropicProvider("b", AnthropicProvider.Options(type="anthropic", model="m", api_key_env="CRMSYNC_NOPE_KEY"))


# -------------------------------------------------------------------------------------------- pure helpers
# (the retry policy and Retry-After parsing are crmsync.support's: tests/test_support.py)


def test_validate_answer_accepts_fenced_json_and_rejects_out_of_range():
    text = "```json\n" + json.dumps(GOOD) + "\n```"
    assert validate_answer(text, Usage()).score == 72
    for bad in ({**GOOD, "score": 101}, {**GOOD, "score": -1}, {**GOOD, "confidence": -0.1}, {**GOOD, "score": 99.5}):
        with pytest.raises(InvalidAnswer) as info:
            validate_answer(json.dumps(bad), Usage(input_tokens=5))
        assert info.value.kind == "schema_violation" and info.value.usage == Usage(input_tokens=5)
    with pytest.raises(InvalidAnswer, match="malformed_json"):
        validate_answer("", Usage())


def test_score_token_confidence_finds_first_digit_token():
    content = '{"score": 85, "confidence": 0.9}'
    tokens = [('{"', -0.01), ("score", -0.01), ('":', -0.01), (" 8", math.log(0.6)), ("5", math.log(0.99)), (", ...", 0.0)]
    assert score_token_confidence(content, tokens) == pytest.approx(0.6)
    assert score_token_confidence('{"confidence": 0.9}', tokens) is None


def test_cost_usd_prices_each_token_kind():
    price = PriceConfig(input=2.0, cached_input=0.5, cache_write=2.5, output=10.0, as_of="2026-11-01")
    u = Usage(input_tokens=1000, cached_input_tokens=600, cache_write_tokens=100, output_tokens=50)
    assert cost_usd(u, price) == pytest.approx((300 * 2.0 + 600 * 0.5 + 100 * 2.5 + 50 * 10.0) / 1e6)
    assert cost_usd(u, PriceConfig(input=2.0, output=10.0, as_of="2026-11-01")) == pytest.approx((1000 * 2.0 + 50 * 10.0) / 1e6)
    assert cost_usd(u, None) == 0.0


def test_wire_schema_is_bounded_and_strict():
    s = ModelAnswer.wire_schema()
    assert list(s["properties"]) == ["score", "confidence", "reasons", "missing_or_contradictory", "lead_text_contains_instructions"]
    assert s["additionalProperties"] is False and set(s["required"]) == set(s["properties"])
    assert s["properties"]["reasons"]["maxItems"] == 3 and s["properties"]["reasons"]["items"]["maxLength"] == 160
    assert s["properties"]["missing_or_contradictory"]["maxItems"] == 8
    assert "description" not in s  # our docstring is not sent to the model
