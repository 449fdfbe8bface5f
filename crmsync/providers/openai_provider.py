"""OpenAI and every OpenAI-compatible server (Azure, vLLM, Ollama, llama.cpp server, LM Studio).

The only module that imports ``openai``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion
from pydantic import Field

from ..config import require_env
from ..errors import InvalidAnswer, ProviderRejected
from ..models import ModelAnswer, Usage
from ..support import EnvVarName
from .base import (
    Prompt,
    Provider,
    Repair,
    Reply,
    chat_messages,
    connection_error,
    refused,
    score_token_confidence,
    status_error,
    unknown_model,
    unreachable,
    validate_answer,
)
from .batch_api import BatchItem, BatchRequest, BatchState, problem_text
from .options import ProviderContext, ProviderOptions
from .pacing import RateSignal, header_int, header_str, parse_duration


class OpenAIOptions(ProviderOptions):
    base_url: str | None = Field(None, description="Azure, vLLM, Ollama, llama.cpp server, LM Studio ...")
    api_key_env: EnvVarName = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    structured_output: Literal["json_schema", "json_object_schema"] = "json_schema"
    # Not sent unless set: reasoning models (GPT-5.x, GPT-6) reject it.
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature; omit for models that reject it")
    logprobs: bool = Field(False, description="ask for token logprobs and fold them into the confidence")

    def paid(self) -> bool:
        return self.base_url is None  # a self-hosted OpenAI-compatible server bills nothing


class OpenAIProvider(Provider):
    Options = OpenAIOptions

    def __init__(self, name: str, options: OpenAIOptions, context: ProviderContext | None = None) -> None:
        super().__init__(name, options, context)
        self.cfg = options
        cfg = options
        # Our own retry loop (Provider.score) caps Retry-After, paces 429s and logs each decision: the SDK retries none.
        self.client = openai.OpenAI(
            api_key=require_env(cfg.api_key_env, f"provider {name!r}"),
            base_url=cfg.base_url,
            timeout=cfg.timeout_s,
            max_retries=0,
        )
        schema = ModelAnswer.wire_schema()
        if cfg.structured_output == "json_schema":
            self.response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": "lead_score", "schema": schema, "strict": True},
            }
        else:  # llama.cpp's server and others accept only json_object with a schema
            self.response_format = {"type": "json_object", "schema": schema}

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        kwargs = self._body(prompt, repair)
        try:
            # with_raw_response: the same call, plus the response's headers (the rate-limit signals).
            response = self.client.chat.completions.with_raw_response.create(**kwargs)
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise connection_error(self.name, exc) from None
        except openai.APIStatusError as exc:
            self.pacer.observe(rate_signal(exc.response.headers))
            raise status_error(self.name, exc.status_code, server_message(exc), exc.response.headers) from None
        self.pacer.observe(rate_signal(response.headers))
        return self._reply(response.parse())

    def _body(self, prompt: Prompt, repair: Repair | None) -> dict[str, Any]:
        """The request body, the same for a synchronous call and a batch line: one schema, one cache prefix."""
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": chat_messages(prompt, repair),
            "response_format": self.response_format,
        }
        if self.cfg.structured_output == "json_schema":
            kwargs["max_completion_tokens"] = self.cfg.max_output_tokens
            kwargs["prompt_cache_key"] = prompt.cache_key
        else:
            kwargs["max_tokens"] = self.cfg.max_output_tokens
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.cfg.logprobs:
            kwargs["logprobs"] = True
        return kwargs

    def _reply(self, completion: Any) -> Reply:
        """A completion (synchronous or from a batch's output file) → a validated Reply, or InvalidAnswer."""
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

    def check(self) -> list[str]:
        """The key, the endpoint and the model, with one free call (models.retrieve); an OpenAI-compatible
        server without that route is asked for its model list instead."""
        where = self.cfg.base_url or "the OpenAI API"
        try:
            self.client.models.retrieve(self.cfg.model)
        except openai.APIConnectionError as exc:
            return [unreachable(where, connection_error(self.name, exc))]
        except openai.NotFoundError as exc:
            if self.cfg.base_url and self.cfg.model in self._listed():
                return []
            return [unknown_model(self.cfg.model, where, server_message(exc), "a name the endpoint lists, or check the key's project")]
        except openai.APIStatusError as exc:
            return [refused(where, exc.status_code, server_message(exc), self.cfg.api_key_env)]
        return []

    def _listed(self) -> set[str]:
        try:
            return {m.id for m in self.client.models.list()}
        except openai.OpenAIError:
            return set()

    # -- batch API (issue 14, crmsync/providers/batch_api.py): Files + Batches, lines with the synchronous body.
    max_batch_requests = 20_000  # OpenAI allows 50,000 lines and 200 MB per file; ~8 KB a line keeps us under both
    BATCH_ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"

    def submit_batch(self, local_id: str, requests: Sequence[BatchRequest]) -> str:
        data = "".join(
            json.dumps({"custom_id": r.custom_id, "method": "POST", "url": self.BATCH_ENDPOINT, "body": self._body(r.prompt, None)}) + "\n"
            for r in requests
        ).encode()
        if len(data) > 200 * 1024 * 1024:
            raise ProviderRejected(
                f"{self.name}: a batch of {len(requests)} requests is {len(data) // 2**20} MB, over OpenAI's 200 MB per batch file",
                status=413,
            )
        with self._mapped():
            upload = self.client.files.create(file=(f"crmsync-{local_id}.jsonl", data, "application/jsonl"), purpose="batch")
            # metadata: how find_batch recognises this submission after a crash before its id was stored
            batch = self.client.batches.create(
                input_file_id=upload.id, endpoint=self.BATCH_ENDPOINT, completion_window="24h", metadata={"crmsync_batch": local_id}
            )
        return batch.id

    def find_batch(self, local_id: str, since: datetime, size: int, known: Collection[str]) -> str | None:
        oldest = since.timestamp() - 3600  # newest first: stop once past the submission (with clock skew to spare)
        with self._mapped():
            for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}).get("crmsync_batch") == local_id:
                    return batch.id
                if batch.created_at < oldest:
                    break
        return None

    def poll_batch(self, batch_id: str) -> BatchState:
        with self._mapped():
            return _batch_state(self.client.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> BatchState:
        with self._mapped():
            return _batch_state(self.client.batches.cancel(batch_id))

    def batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        with self._mapped():
            batch = self.client.batches.retrieve(batch_id)
            texts = [self.client.files.content(f).text for f in (batch.output_file_id, batch.error_file_id) if f]
        for text in texts:
            for line in text.splitlines():
                if line.strip():
                    yield self._item(json.loads(line))

    def _item(self, line: dict[str, Any]) -> BatchItem:
        cid, response, error = str(line.get("custom_id")), line.get("response") or {}, line.get("error")
        if error:  # batch_expired / batch_cancelled: the request never ran
            detail = f"{error.get('code')}: {error.get('message')}"
            if error.get("code") == "batch_expired":
                return BatchItem(cid, "expired", detail=detail)
            return BatchItem(cid, "canceled", detail=detail)
        status, body = int(response.get("status_code") or 0), response.get("body") or {}
        if status != 200:
            err = body.get("error")
            message = err.get("message") if isinstance(err, dict) else None
            return BatchItem(cid, "errored", status=status, detail=f"HTTP {status}: {message or body}")
        try:
            return BatchItem(cid, "ok", reply=self._reply(ChatCompletion.model_validate(body)))
        except InvalidAnswer as exc:
            used = exc.usage if isinstance(exc.usage, Usage) else Usage()
            return BatchItem(cid, "invalid", invalid=exc, detail=str(exc), usage=used)

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """The SDK's errors as the chain's: unavailable (try again later) or rejected (configuration)."""
        try:
            yield
        except openai.APIConnectionError as exc:
            raise connection_error(self.name, exc) from None
        except openai.APIStatusError as exc:
            raise status_error(self.name, exc.status_code, server_message(exc), exc.response.headers) from None

    def close(self) -> None:
        self.client.close()  # httpx: closing twice is harmless


def _usage(u: Any) -> Usage:
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    written = getattr(details, "cache_write_tokens", None) or 0
    return Usage(
        input_tokens=u.prompt_tokens or 0, cached_input_tokens=cached, cache_write_tokens=written, output_tokens=u.completion_tokens or 0
    )


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


def _batch_state(batch: Any) -> BatchState:
    counts = batch.request_counts.model_dump() if batch.request_counts else {}
    errors = [f"line {e.line}: {e.message}" if e.line else str(e.message) for e in (batch.errors.data or [])] if batch.errors else []
    return BatchState(batch.id, batch.status, batch.status in ("completed", "failed", "expired", "cancelled"), counts, problem_text(errors))
