"""Anthropic Messages API. The only module that imports ``anthropic``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import anthropic

from ..config import require_env
from ..errors import InvalidAnswer
from ..models import ModelAnswer, Usage
from ..support import EnvVarName
from .base import (
    Prompt,
    Provider,
    Repair,
    Reply,
    connection_error,
    refused,
    repair_turns,
    status_error,
    unknown_model,
    unreachable,
    validate_answer,
)
from .batch_api import BatchItem, BatchRequest, BatchState
from .options import ProviderContext, ProviderOptions
from .pacing import RateSignal, header_int, header_str, seconds_until

TOOL = "record_lead_score"


class AnthropicOptions(ProviderOptions):
    base_url: str | None = None
    api_key_env: EnvVarName = "ANTHROPIC_API_KEY"
    structured_output: Literal["output_format", "tool"] = "output_format"


class AnthropicProvider(Provider):
    Options = AnthropicOptions

    def __init__(self, name: str, options: AnthropicOptions, context: ProviderContext | None = None) -> None:
        super().__init__(name, options, context)
        self.cfg = options
        cfg = options
        # max_retries=0: the SDK would sleep any Retry-After (up to ~49 days); Provider.score caps it.
        self.client = anthropic.Anthropic(
            api_key=require_env(cfg.api_key_env, f"provider {name!r}"),
            base_url=cfg.base_url,
            timeout=cfg.timeout_s,
            max_retries=0,
        )
        self.schema = anthropic.transform_schema(ModelAnswer.wire_schema())

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        kwargs = self._body(prompt, repair)
        try:
            # with_raw_response: the same call, plus the response's headers (the rate-limit signals).
            response = self.client.messages.with_raw_response.create(**kwargs)
        except anthropic.APIConnectionError as exc:
            raise connection_error(self.name, exc) from None
        except anthropic.APIStatusError as exc:
            self.pacer.observe(rate_signal(exc.response.headers))
            raise status_error(self.name, exc.status_code, server_message(exc), exc.response.headers) from None
        self.pacer.observe(rate_signal(response.headers))
        return self._reply(response.parse())

    def _body(self, prompt: Prompt, repair: Repair | None) -> dict[str, Any]:
        """The request, the same for a synchronous call and a batch's ``params``: one output format, one cached prefix."""
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
        return kwargs

    def _reply(self, msg: Any) -> Reply:
        """A message (synchronous or a batch's succeeded result) → a validated Reply, or InvalidAnswer."""
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

    # -- batch API (issue 14, crmsync/providers/batch_api.py): Message Batches, params = the synchronous body
    # (cache_control on the rubric prefix included: caching applies inside batches too).
    max_batch_requests = 20_000  # Anthropic allows 100,000 requests and 256 MB per batch; ~8 KB each keeps us under both

    def submit_batch(self, local_id: str, requests: Sequence[BatchRequest]) -> str:
        # No metadata on a Message Batch: find_batch recognises it by time and size, and the results by custom_id.
        with self._mapped():
            batch = self.client.messages.batches.create(
                requests=[{"custom_id": r.custom_id, "params": self._body(r.prompt, None)} for r in requests]  # type: ignore[typeddict-item]
            )
        return batch.id

    def find_batch(self, local_id: str, since: datetime, size: int, known: Collection[str]) -> str | None:
        """Message Batches carry no metadata, and custom_ids show only in results: a batch created at most two
        minutes before ``since`` or after it, unknown to the ledger, with ``size`` requests, is taken as ours.
        crmsync/batching.py checks its custom_ids when it ends and abandons it if none is ours."""
        oldest = since.timestamp() - 120
        found: list[Any] = []
        with self._mapped():
            for batch in self.client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < oldest:
                    break
                if batch.id not in known and sum(batch.request_counts.model_dump().values()) == size:
                    found.append(batch)
        return min(found, key=lambda b: abs(b.created_at.timestamp() - since.timestamp())).id if found else None

    def poll_batch(self, batch_id: str) -> BatchState:
        with self._mapped():
            return _batch_state(self.client.messages.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> BatchState:
        with self._mapped():
            return _batch_state(self.client.messages.batches.cancel(batch_id))

    def batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        with self._mapped():
            lines = list(self.client.messages.batches.results(batch_id))
        for line in lines:
            result, cid = line.result, line.custom_id
            if result.type == "succeeded":
                try:
                    yield BatchItem(cid, "ok", reply=self._reply(result.message))
                except InvalidAnswer as exc:
                    used = exc.usage if isinstance(exc.usage, Usage) else Usage()
                    yield BatchItem(cid, "invalid", invalid=exc, detail=str(exc), usage=used)
            elif result.type == "errored":
                err = result.error.error
                status = _ERROR_STATUS.get(err.type, 500)
                yield BatchItem(cid, "errored", status=status, detail=f"{err.type}: {err.message}")
            else:  # canceled / expired: the request never ran
                yield BatchItem(cid, result.type, detail=f"request {result.type}")

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """The SDK's errors as the chain's: unavailable (try again later) or rejected (configuration)."""
        try:
            yield
        except anthropic.APIConnectionError as exc:
            raise connection_error(self.name, exc) from None
        except anthropic.APIStatusError as exc:
            raise status_error(self.name, exc.status_code, server_message(exc), exc.response.headers) from None

    def check(self) -> list[str]:
        """The key, the endpoint and the model (an id or an alias), with one free call: models.retrieve."""
        where = self.cfg.base_url or "the Anthropic API"
        try:
            self.client.models.retrieve(self.cfg.model)
        except anthropic.APIConnectionError as exc:
            return [unreachable(where, connection_error(self.name, exc))]
        except anthropic.NotFoundError as exc:
            return [unknown_model(self.cfg.model, where, server_message(exc), "an id or alias from the Models API")]
        except anthropic.APIStatusError as exc:
            return [refused(where, exc.status_code, server_message(exc), self.cfg.api_key_env)]
        return []

    def close(self) -> None:
        self.client.close()  # httpx: closing twice is harmless


def _usage(u: Any) -> Usage:
    read = getattr(u, "cache_read_input_tokens", None) or 0
    written = getattr(u, "cache_creation_input_tokens", None) or 0
    # Anthropic's input_tokens is the uncached part only; ours counts all input.
    return Usage(
        input_tokens=(u.input_tokens or 0) + read + written,
        cached_input_tokens=read,
        cache_write_tokens=written,
        output_tokens=u.output_tokens or 0,
    )


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


# An errored batch request's error type → the HTTP status it stands for (what the chain decides by).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _batch_state(batch: Any) -> BatchState:
    return BatchState(batch.id, batch.processing_status, batch.processing_status == "ended", batch.request_counts.model_dump())
