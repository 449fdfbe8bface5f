"""The emulators' rate limits, through the real SDKs: what a client over the limit sees, and the headers."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from tests.emulators import AnthropicEmulator, OpenAIEmulator, answer
from tests.emulators.ratelimit import ServerLimit, go_duration

MSG = [{"role": "user", "content": "hello"}]


def test_server_limit_refills_continuously_and_banks_a_window():
    now = [0.0]
    limit = ServerLimit(120, window_s=1.0, clock=lambda: now[0])  # 2 a second, 2 banked
    assert [limit.take() for _ in range(3)] == [0.0, 0.0, 0.5]  # the third waits for half a second
    assert limit.remaining() == 0 and limit.reset_s() == pytest.approx(1.0)
    now[0] += 0.5
    assert limit.take() == 0.0 and limit.remaining() == 0
    now[0] += 10
    assert limit.remaining() == 2  # never more than the window's worth


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (0.12, "120ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3723.5, "1h2m3.5s")])
def test_reset_durations_are_go_style(seconds, text):
    assert go_duration(seconds) == text


def test_openai_over_the_limit_gets_the_documented_429():
    with OpenAIEmulator(requests_per_minute=60) as emu:  # one a second, one banked
        emu.script("m", answer({"score": 1}), answer({"score": 2}))
        client = openai.OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        ok = client.chat.completions.with_raw_response.create(model="m", messages=MSG)
        assert ok.headers["x-ratelimit-limit-requests"] == "60" and ok.headers["x-ratelimit-remaining-requests"] == "0"
        assert ok.headers["x-ratelimit-reset-requests"].endswith("ms") and "x-ratelimit-remaining-tokens" in ok.headers
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=MSG)
        err = info.value
        assert err.code == "rate_limit_exceeded" and err.type == "requests"
        assert err.body["message"].startswith(
            "Rate limit reached for m in organization org-emulator on requests per min "
            "(RPM): Limit 60, Used 60, Requested 1. Please try again in "
        )
        assert err.response.headers["retry-after"] == "1" and 900 <= int(err.response.headers["retry-after-ms"]) <= 1000
        assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
        time.sleep(int(err.response.headers["retry-after-ms"]) / 1000)
        # the refused request used up no scripted behaviour: the next answer is the second one
        assert '"score": 2' in (client.chat.completions.create(model="m", messages=MSG).choices[0].message.content or "")
        assert emu.rate_limited_count() == 1 and [r.status for r in emu.requests] == [200, 429, 200]


def test_openai_token_limit_counts_prompt_and_max_tokens():
    with OpenAIEmulator(tokens_per_minute=600) as emu:  # a whole minute banked for tokens
        client = openai.OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 400}], max_completion_tokens=300)
        with pytest.raises(openai.RateLimitError) as info:  # 400 used, 200 left, 400 asked
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 400}], max_completion_tokens=300)
        assert info.value.type == "tokens" and "tokens per min (TPM): Limit 600, Used 400, Requested 400" in info.value.message


def test_anthropic_over_the_limit_gets_rate_limit_error_and_whole_second_retry_after():
    with AnthropicEmulator(requests_per_minute=30) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        ok = client.messages.with_raw_response.create(model="m", max_tokens=10, messages=MSG)
        assert ok.headers["anthropic-ratelimit-requests-limit"] == "30"
        assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert ok.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert ok.headers["anthropic-ratelimit-tokens-limit"] == ok.headers["anthropic-ratelimit-input-tokens-limit"]
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="m", max_tokens=10, messages=MSG)
        err = info.value
        assert err.body["type"] == "error" and err.body["error"]["type"] == "rate_limit_error"
        assert err.body["error"]["message"].startswith(
            "This request would exceed the rate limit for your organization "
            "(00000000-0000-4000-8000-emulator0000) of 30 requests per minute."
        )
        assert err.response.headers["retry-after"] == "2"  # 2 s to refill one, in whole seconds
        assert "retry-after-ms" not in err.response.headers


def test_unlimited_emulators_send_static_headers_and_never_refuse():
    with OpenAIEmulator() as oa, AnthropicEmulator() as an:
        client = openai.OpenAI(base_url=oa.base_url, api_key=oa.api_key, max_retries=0)
        for _ in range(30):
            raw = client.chat.completions.with_raw_response.create(model="m", messages=MSG)
        assert raw.headers["x-ratelimit-remaining-requests"] == "9999" and oa.rate_limited_count() == 0
        raw2 = anthropic.Anthropic(base_url=an.base_url, api_key=an.api_key, max_retries=0).messages.with_raw_response.create(
            model="m", max_tokens=10, messages=MSG
        )
        assert raw2.headers["anthropic-ratelimit-requests-remaining"] == "3999"
