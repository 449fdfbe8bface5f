"""OpenAI and every OpenAI-compatible server (Azure, vLLM, Ollama, llama.cpp server, LM Studio).

The only module that imports ``openai``.
"""
from __future__ import annotations

from typing import Any

import openai

from ..config import OpenAIProviderConfig, require_env
from ..errors import InvalidAnswer
from ..models import ModelAnswer, Usage
from .base import (
    Prompt, Provider, Repair, Reply, chat_messages, connection_error, pacing_options, score_token_confidence,
    status_error, validate_answer,
)
from .pacing import RateSignal, header_int, header_str, parse_duration


class OpenAIProvider(Provider):
    def __init__(self, name: str, cfg: OpenAIProviderConfig, **kw: Any) -> None:
        super().__init__(name, cfg.model, **pacing_options(cfg), **kw)
        self.cfg = cfg
        # Our own retry loop (Provider.score) caps Retry-After, paces 429s and logs each decision: the SDK retries none.
        self.client = openai.OpenAI(
            api_key=require_env(cfg.api_key_env, f"provider {name!r}"),
            base_url=cfg.base_url,
            timeout=cfg.timeout_s,
            max_retries=0,
        )
        schema = ModelAnswer.wire_schema()
        if cfg.structured_output == "json_schema":
            self.response_format: dict[str, Any] = {"type": "json_schema", "json_schema": {"name": "lead_score", "schema": schema, "strict": True}}
        else:  # llama.cpp's server and others accept only json_object with a schema
            self.response_format = {"type": "json_object", "schema": schema}

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        kwargs: dict[str, Any] = {"model": self.cfg.model, "messages": chat_messages(prompt, repair), "response_format": self.response_format}
        if self.cfg.structured_output == "json_schema":
            kwargs["max_completion_tokens"] = self.cfg.max_output_tokens
            kwargs["prompt_cache_key"] = prompt.cache_key
        else:
            kwargs["max_tokens"] = self.cfg.max_output_tokens
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.cfg.logprobs:
            kwargs["logprobs"] = True
        try:
            # with_raw_response: the same call, plus the response's headers (the rate-limit signals).
            response = self.client.chat.completions.with_raw_response.create(**kwargs)
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise connection_error(self.name, exc) from None
        except openai.APIStatusError as exc:
            self.pacer.observe(rate_signal(exc.response.headers))
            raise status_error(self.name, exc.status_code, server_message(exc), exc.response.headers) from None
        self.pacer.observe(rate_signal(response.headers))
        completion = response.parse()
        usage = _usage(completion.usage)
        if not completion.choices:
            raise InvalidAnswer("empty", "no choices in the response", usage=usage)
        choice = completion.choices[0]
        message = choice.message
        if getattr(message, "refusal", None):
            raise InvalidAnswer("refusal", str(message.refusal)[:300], usage=usage)
        if choice.finish_reason == "length":
            raise InvalidAnswer("truncated", f"hit max_output_tokens ({self.cfg.max_output_tokens})", raw=message.content, usage=usage)
        if choice.finish_reason == "content_filter":
            raise InvalidAnswer("refusal", "content filter", usage=usage)
        raw = message.content or ""
        answer = validate_answer(raw, usage)
        lp = None
        if choice.logprobs and choice.logprobs.content:
            lp = score_token_confidence(raw, [(t.token, t.logprob) for t in choice.logprobs.content])
        return Reply(answer=answer, usage=usage, raw=raw, logprob_confidence=lp)

    def close(self) -> None:
        self.client.close()


def _usage(u: Any) -> Usage:
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    written = getattr(details, "cache_write_tokens", None) or 0
    return Usage(input_tokens=u.prompt_tokens or 0, cached_input_tokens=cached, cache_write_tokens=written, output_tokens=u.completion_tokens or 0)


def rate_signal(headers: object) -> RateSignal:
    """OpenAI's x-ratelimit-* headers: limits per minute, resets as durations ("6m0s", "1s", "120ms")."""
    return RateSignal(
        requests_limit=header_int(headers, "x-ratelimit-limit-requests"),
        requests_remaining=header_int(headers, "x-ratelimit-remaining-requests"),
        requests_reset_s=parse_duration(header_str(headers, "x-ratelimit-reset-requests")),
        tokens_limit=header_int(headers, "x-ratelimit-limit-tokens"),
        tokens_remaining=header_int(headers, "x-ratelimit-remaining-tokens"),
        tokens_reset_s=parse_duration(header_str(headers, "x-ratelimit-reset-tokens")),
    )


def server_message(exc: openai.APIStatusError) -> str:
    """The server's own words ("The server is overloaded ..."), not the SDK's "Error code: 503 - {...}"."""
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message")
    return message if isinstance(message, str) and message else exc.message
