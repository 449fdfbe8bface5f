"""Local emulator of the OpenAI Chat Completions API (``POST /v1/chat/completions``)."""

from __future__ import annotations

import hashlib
import math
import time

from ._http import BaseEmulator
from .behaviours import Behaviour, answer_text, content_text, logprob_entries, new_id, ntokens
from .ratelimit import ServerLimit, go_duration

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TIERS = ("default", "flex", "scale", "priority", "fast")


def _err(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _mask(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 3) + key[-4:] if len(key) > 8 else "*" * len(key)


def strict_schema_problem(schema: object, ctx: tuple = ()) -> str | None:
    """First violation of OpenAI strict-mode rules in ``schema`` (every object has
    ``additionalProperties: false`` and lists all of its properties in ``required``), else None."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"In context={ctx!r}, 'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        missing = [k for k in props if k not in required]
        if missing:
            return (
                f"In context={ctx!r}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
        for k, sub in props.items():
            if p := strict_schema_problem(sub, (*ctx, "properties", k)):
                return p
    if "items" in schema and (p := strict_schema_problem(schema["items"], (*ctx, "items"))):
        return p
    for key in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(schema.get(key) or []):
            if p := strict_schema_problem(sub, (*ctx, key, str(i))):
                return p
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            if p := strict_schema_problem(sub, (*ctx, key, name)):
                return p
    return None


class OpenAIEmulator(BaseEmulator):
    """Chat Completions emulator. ``base_url`` ends in ``/v1``; auth is ``Authorization: Bearer``.

    Usage: ``with OpenAIEmulator() as oa: openai.OpenAI(base_url=oa.base_url, api_key=oa.api_key)``.
    Prompt caching: a request whose leading system/developer message (same model, same text) was seen
    before reports ``cached_tokens`` = that message's tokens rounded down to a multiple of 128, when the
    prompt and the cached amount are both >= ``cache_min_tokens`` (1024, as on the real API).
    Rate limits: ``OpenAIEmulator(requests_per_minute=500)`` (or ``.limit(...)``) refuses what is over the limit
    with OpenAI's 429 (``type`` requests/tokens, ``code`` rate_limit_exceeded, ``retry-after`` and
    ``retry-after-ms``); every response carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.
    """

    path = "/v1/chat/completions"

    def __init__(self, api_key: str | None = None, *, cache_min_tokens: int = 1024, **limits):
        super().__init__(api_key, **limits)
        self.cache_min_tokens = cache_min_tokens
        self._seen_prefixes: set[str] = set()

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # ---- protocol
    def _auth_ok(self, headers: dict) -> bool:
        return headers.get("authorization", "") == f"Bearer {self.api_key}"

    def _headers(self) -> dict:
        return {
            "x-request-id": self._rid(),
            "openai-processing-ms": "1",
            "openai-version": "2020-10-01",
            "openai-organization": "org-emulator",
            **_limit_headers("requests", self.request_limit, ("10000", "9999", "6ms")),
            **_limit_headers("tokens", self.token_limit, ("2000000", "1999000", "30ms")),
        }

    def _rate_limit_error(self, kind, limit, requested, wait_s, body):
        unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        used = limit.per_minute - limit.remaining() if kind == "tokens" else limit.per_minute
        err = _err(
            f"Rate limit reached for {body.get('model')} in organization org-emulator on {unit}: "
            f"Limit {limit.per_minute}, Used {used}, Requested {int(requested)}. Please try again in "
            f"{go_duration(wait_s)}. Visit https://platform.openai.com/account/rate-limits to learn more.",
            type_=kind,
            code="rate_limit_exceeded",
        )
        return err, {"retry-after": str(math.ceil(wait_s)), "retry-after-ms": str(math.ceil(wait_s * 1000))}

    def _model_info(self, rec, headers, model):
        """``GET /v1/models/{model}``: the Model object (id, object "model", created, owned_by), or the API's
        404 for a model the key cannot use. ``GET /v1/models``: ``{"object": "list", "data": [Model, ...]}``."""
        if (failure := self._auth_failure(rec, headers)) is not None:
            return failure
        if model is None:
            return 200, {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"} for m in sorted(self.known_models or ())
                ],
            }
        if self.known_models is not None and model not in self.known_models:
            return 404, _err(f"The model '{model}' does not exist", param="model", code="model_not_found")
        return 200, {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"}

    def _precheck(self, h, rec, headers, parse_ok):
        if (failure := self._auth_failure(rec, headers)) is not None:
            return failure
        if rec.method != "POST" or rec.path != self.path:
            return 404, _err(f"Invalid URL ({rec.method} {rec.path})")
        if not parse_ok or not isinstance(rec.body, dict):
            return 400, _err(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)"
            )
        return self._validate(rec.body)

    def _auth_failure(self, rec, headers):
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return 401, _err(
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
                "field (with blank username) if you're accessing the API from your browser and are "
                "prompted for a username and password. You can obtain an API key from "
                "https://platform.openai.com/account/api-keys."
            )
        if not rec.auth_ok:
            return 401, _err(
                f"Incorrect API key provided: {_mask(auth[7:].strip())}. You can find your API key "
                "at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _validate(self, body: dict):
        for name in ("model", "messages"):
            if name not in body:
                return 400, _err(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        if not isinstance(body["model"], str) or not body["model"]:
            return 400, _err("Invalid type for 'model': expected a string.", param="model", code="invalid_type")
        msgs = body["messages"]
        if not isinstance(msgs, list):
            return 400, _err("Invalid type for 'messages': expected an array.", param="messages", code="invalid_type")
        if not msgs:
            return 400, _err(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                role = m.get("role") if isinstance(m, dict) else None
                return 400, _err(
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.",
                    param=f"messages[{i}].role",
                    code="invalid_value",
                )
        return self._validate_response_format(body.get("response_format"))

    def _validate_response_format(self, rf):
        if rf is None:
            return None
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            t = rf.get("type") if isinstance(rf, dict) else rf
            return 400, _err(
                f"Invalid value: '{t}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                param="response_format.type",
                code="invalid_value",
            )
        if rf["type"] != "json_schema":
            return None  # includes llama.cpp-style {"type": "json_object", "schema": {...}}
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            return 400, _err(
                "Missing required parameter: 'response_format.json_schema'.",
                param="response_format.json_schema",
                code="missing_required_parameter",
            )
        if not js.get("name"):
            return 400, _err(
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
                code="missing_required_parameter",
            )
        schema = js.get("schema")
        if js.get("strict"):
            name = js["name"]
            if not isinstance(schema, dict) or schema.get("type") != "object":
                got = schema.get("type") if isinstance(schema, dict) else None
                return 400, _err(
                    f"Invalid schema for response_format '{name}': schema must be a JSON Schema of "
                    f"'type: \"object\"', got 'type: \"{got}\"'.",
                    param="response_format",
                    code="invalid_json_schema",
                )
            if problem := strict_schema_problem(schema):
                return 400, _err(
                    f"Invalid schema for response_format '{name}': {problem}", param="response_format", code="invalid_json_schema"
                )
        return None

    def _error_body(self, status: int, body: dict) -> dict:
        model = body.get("model", "the model")
        if status == 401:
            return _err(
                f"Incorrect API key provided: {_mask(self.api_key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        if status == 403:
            return _err("You are not allowed to sample from this model", code="permission_denied")
        if status == 404:
            return _err(f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found")
        if status == 429:
            return _err(
                f"Rate limit reached for {model} in organization org-emulator on requests per min (RPM): "
                "Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                type_="requests",
                code="rate_limit_exceeded",
            )
        if status == 503:
            return _err("The server is overloaded or not ready yet.", type_="server_error")
        if status >= 500:
            return _err("The server had an error while processing your request. Sorry about that!", type_="server_error")
        return _err("Invalid request.")

    # ---- success
    def _usage(self, body: dict, completion_text: str) -> dict:
        msgs = body["messages"]
        prompt = sum(ntokens(content_text(m.get("content"))) for m in msgs)
        for extra in ("tools", "response_format", "functions"):
            if body.get(extra) is not None:
                prompt += ntokens(repr(body[extra]))
        cached = 0
        if msgs[0].get("role") in ("system", "developer"):
            prefix = content_text(msgs[0].get("content"))
            key = hashlib.sha256(f"{body['model']}\0{prefix}".encode()).hexdigest()
            with self._lock:
                seen = key in self._seen_prefixes
                self._seen_prefixes.add(key)
            if seen and prompt >= self.cache_min_tokens:
                cached = ntokens(prefix) // 128 * 128
                cached = cached if cached >= self.cache_min_tokens else 0
        completion = ntokens(completion_text)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _success(self, body: dict, b: Behaviour) -> dict:
        content, refusal_text, span, finish = None, None, None, "stop"
        if b.kind == "answer":
            assert b.obj is not None  # answer() always sets it
            content, span = answer_text(b.obj)
        elif b.kind in ("raw", "truncated"):
            content = b.text
            finish = "length" if b.kind == "truncated" else "stop"
        elif b.kind == "refusal":
            refusal_text = b.text
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if content is not None and isinstance(limit, int) and limit > 0 and ntokens(content) > limit:
            content, finish = content[: limit * 4], "length"  # cut by the token limit, like the real model
            span = (min(span[0], len(content)), min(span[1], len(content))) if span else None
        logprobs = None
        if body.get("logprobs"):
            top = int(body.get("top_logprobs") or 0)
            lp = b.logprob if b.logprob is not None else 0.0
            logprobs = {
                "content": logprob_entries(content, span, lp, top) if content is not None else None,
                "refusal": logprob_entries(refusal_text, None, 0.0, top) if refusal_text else None,
            }
        message: dict[str, object] = {"role": "assistant", "content": content, "refusal": refusal_text, "annotations": []}
        n = body["n"] if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        tier = body.get("service_tier")
        usage = self._usage(body, content or refusal_text or "")
        if finish == "length" and isinstance(limit, int) and limit > 0:
            usage["completion_tokens"] = limit
            usage["total_tokens"] = usage["prompt_tokens"] + limit
        return {
            "id": new_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": i, "message": dict(message), "logprobs": logprobs, "finish_reason": finish} for i in range(n)],
            "usage": usage,
            "service_tier": tier if tier in _TIERS else "default",
            "system_fingerprint": "fp_emulator",
        }


def _limit_headers(kind: str, limit: ServerLimit | None, static: tuple[str, str, str]) -> dict:
    if limit is None:  # nothing enforced: the same static figures on every response
        lim, remaining, reset = static
    else:
        lim, remaining, reset = str(limit.per_minute), str(limit.remaining()), go_duration(limit.reset_s())
    return {f"x-ratelimit-limit-{kind}": lim, f"x-ratelimit-remaining-{kind}": remaining, f"x-ratelimit-reset-{kind}": reset}
