"""Anthropic Messages API. The only module that imports ``anthropic``."""
from __future__ import annotations

import json
from typing import Any

import anthropic

from ..config import AnthropicProviderConfig, require_env
from ..errors import InvalidAnswer
from ..models import ModelAnswer, Usage
from .base import Prompt, Provider, Repair, Reply, connection_error, pacing_options, repair_turns, status_error, validate_answer
from .pacing import RateSignal, header_int, header_str, seconds_until

TOOL = "record_lead_score"


class AnthropicProvider(Provider):
    def __init__(self, name: str, cfg: AnthropicProviderConfig, **kw: Any) -> None:
        super().__init__(name, cfg.model, **pacing_options(cfg), **kw)
        self.cfg = cfg
        # max_retries=0: the SDK would sleep any Retry-After (up to ~49 days); Provider.score caps it.
        self.client = anthropic.Anthropic(
            api_key=require_env(cfg.api_key_env, f"provider {name!r}"),
            base_url=cfg.base_url,
            timeout=cfg.timeout_s,
            max_retries=0,
        )
        self.schema = anthropic.transform_schema(ModelAnswer.wire_schema())

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        messages = [{"role": "user", "content": prompt.user}, *repair_turns(repair)]
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_output_tokens,
            # The rubric is the stable prefix: cache it (silently ignored when shorter than the model's minimum).
            "system": [{"type": "text", "text": prompt.system, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
        }
        # No temperature: API version 2026-10-21 (what anthropic 2.x sends) rejects any sampling parameter.
        if self.cfg.structured_output == "tool":
            kwargs["tools"] = [{"name": TOOL, "description": "Record the lead's score.", "input_schema": self.schema, "strict": True}]
            kwargs["tool_choice"] = {"type": "tool", "name": TOOL}
        else:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": self.schema}}
        try:
            # with_raw_response: the same call, plus the response's headers (the rate-limit signals).
            response = self.client.messages.with_raw_response.create(**kwargs)
        except anthropic.APIConnectionError as exc:
            raise connection_error(self.name, exc) from None
        except anthropic.APIStatusError as exc:
            self.pacer.observe(rate_signal(exc.response.headers))
            raise status_error(self.name, exc.status_code, server_message(exc), exc.response.headers) from None
        self.pacer.observe(rate_signal(response.headers))
        msg = response.parse()
        usage = _usage(msg.usage)
        raw = ""
        for block in msg.content:
            if block.type == "tool_use" and block.name == TOOL:
                raw = json.dumps(block.input)
                break
            if block.type == "text":
                raw += block.text
        if msg.stop_reason == "refusal":
            raise InvalidAnswer("refusal", "the model refused", raw=raw[:2000], usage=usage)
        if msg.stop_reason == "max_tokens":
            raise InvalidAnswer("truncated", f"hit max_output_tokens ({self.cfg.max_output_tokens})", raw=raw[:2000], usage=usage)
        return Reply(answer=validate_answer(raw, usage), usage=usage, raw=raw)

    def close(self) -> None:
        self.client.close()


def _usage(u: Any) -> Usage:
    read = getattr(u, "cache_read_input_tokens", None) or 0
    written = getattr(u, "cache_creation_input_tokens", None) or 0
    # Anthropic's input_tokens is the uncached part only; ours counts all input.
    return Usage(input_tokens=(u.input_tokens or 0) + read + written, cached_input_tokens=read, cache_write_tokens=written, output_tokens=u.output_tokens or 0)


def rate_signal(headers: object) -> RateSignal:
    """Anthropic's anthropic-ratelimit-* headers: limits per minute, resets as RFC 3339 times. The ``tokens``
    pair is the most restrictive token limit in effect; input tokens when it is absent."""
    tokens = "tokens" if header_int(headers, "anthropic-ratelimit-tokens-limit") is not None else "input-tokens"
    return RateSignal(
        requests_limit=header_int(headers, "anthropic-ratelimit-requests-limit"),
        requests_remaining=header_int(headers, "anthropic-ratelimit-requests-remaining"),
        requests_reset_s=seconds_until(header_str(headers, "anthropic-ratelimit-requests-reset")),
        tokens_limit=header_int(headers, f"anthropic-ratelimit-{tokens}-limit"),
        tokens_remaining=header_int(headers, f"anthropic-ratelimit-{tokens}-remaining"),
        tokens_reset_s=seconds_until(header_str(headers, f"anthropic-ratelimit-{tokens}-reset")),
    )


def server_message(exc: anthropic.APIStatusError) -> str:
    """The server's own words ("Overloaded"), not the SDK's "Error code: 529 - {'type': 'error', ...}"."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else exc.message
