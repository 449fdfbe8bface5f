"""Local emulator of the Anthropic Messages API (``POST /v1/messages``)."""

from __future__ import annotations

import hashlib
import json
import math

from ._http import BaseEmulator
from .behaviours import Behaviour, answer_text, content_text, new_id, ntokens
from .ratelimit import ServerLimit, rfc3339_in

_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: (
        "billing_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        (
            "This request would exceed the rate limit for your organization of 50 requests per "
            "minute. Please reduce the prompt length or the maximum tokens requested, or try "
            "again later."
        ),
    ),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_schema_problem(schema: object, path: str = "") -> str | None:
    """Structured outputs require ``additionalProperties: false`` on every object schema."""
    if not isinstance(schema, dict):
        return None
    if (schema.get("type") == "object" or "properties" in schema) and schema.get("additionalProperties") is not False:
        return f"For 'object' type, 'additionalProperties' must be explicitly set to false (at '{path or '/'}')"
    subs = [(f"{path}/properties/{k}", v) for k, v in (schema.get("properties") or {}).items()]
    if "items" in schema:
        subs.append((f"{path}/items", schema["items"]))
    for key in ("anyOf", "allOf", "oneOf"):
        subs += [(f"{path}/{key}/{i}", v) for i, v in enumerate(schema.get(key) or [])]
    for key in ("$defs", "definitions"):
        subs += [(f"{path}/{key}/{k}", v) for k, v in (schema.get(key) or {}).items()]
    for p, sub in subs:
        if problem := anthropic_schema_problem(sub, p):
            return problem
    return None


class AnthropicEmulator(BaseEmulator):
    """Messages API emulator. ``base_url`` has no ``/v1`` (the SDK appends ``/v1/messages``).

    Auth: ``x-api-key: <api_key>``; ``Authorization: Bearer <api_key>`` is also accepted when
    ``accept_bearer`` (default True) because anthropic 2.14 sends ``api_key`` that way.
    ``min_cacheable``: prefixes shorter than this many tokens are silently not cached.
    Rate limits: ``AnthropicEmulator(requests_per_minute=500)`` (or ``.limit(...)``) refuses what is over the
    limit with a 429 ``rate_limit_error`` and ``retry-after`` (whole seconds); every response carries
    ``anthropic-ratelimit-{requests,tokens,input-tokens}-{limit,remaining,reset}`` (reset: RFC 3339).
    """

    path = "/v1/messages"
    default_api_key = "sk-ant-test-emulator"
    _rid_prefix = "req_011C"

    def __init__(self, api_key: str | None = None, *, min_cacheable: int = 1024, accept_bearer: bool = True, **limits):
        super().__init__(api_key, **limits)
        self.min_cacheable = min_cacheable
        self.accept_bearer = accept_bearer
        self._cache: set[str] = set()

    @property
    def base_url(self) -> str:
        return self.url

    # ---- protocol
    def _auth_ok(self, headers: dict) -> bool:
        if headers.get("x-api-key") == self.api_key:
            return True
        return self.accept_bearer and headers.get("authorization") == f"Bearer {self.api_key}"

    ORG = "00000000-0000-4000-8000-emulator0000"

    def _headers(self) -> dict:
        tokens = _limit_headers("tokens", self.token_limit, ("2000000", "1999000"))
        return {
            "request-id": self._rid(),
            "anthropic-organization-id": self.ORG,
            **_limit_headers("requests", self.request_limit, ("4000", "3999")),
            **tokens,
            **{k.replace("-tokens-", "-input-tokens-"): v for k, v in tokens.items()},
        }

    def _rate_limit_error(self, kind, limit, requested, wait_s, body):
        unit = "requests" if kind == "requests" else "input tokens"
        err = self._err(
            "rate_limit_error",
            f"This request would exceed the rate limit for your organization ({self.ORG}) of "
            f"{limit.per_minute:,} {unit} per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current "
            "usage. Please reduce the prompt length or the maximum tokens requested, or try again "
            "later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss "
            "your options for a rate limit increase.",
        )
        return err, {"retry-after": str(max(1, math.ceil(wait_s)))}

    def _err(self, type_: str, message: str) -> dict:
        return {"type": "error", "error": {"type": type_, "message": message}, "request_id": self._rid()}

    def _bad(self, message: str) -> tuple[int, dict]:
        return 400, self._err("invalid_request_error", message)

    def _model_info(self, rec, headers, model):
        """``GET /v1/models/{model_id}`` (an id or an alias): the ModelInfo object (type "model", id,
        display_name, created_at), or a 404 ``not_found_error``."""
        if (failure := self._auth_failure(rec, headers)) is not None:
            return failure
        if not headers.get("anthropic-version"):
            return self._bad("anthropic-version: header is required")
        if model is None:  # GET /v1/models: one page holds them all here
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"} for m in sorted(self.known_models or ())
            ]
            return 200, {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        if self.known_models is not None and model not in self.known_models:
            return 404, self._err("not_found_error", f"model: {model}")
        return 200, {"type": "model", "id": model, "display_name": model, "created_at": "2026-01-01T00:00:00Z"}

    def _auth_failure(self, rec, headers):
        has_key = bool(headers.get("x-api-key")) or (self.accept_bearer and bool(headers.get("authorization")))
        if not has_key:
            return 401, self._err("authentication_error", "x-api-key header is required")
        if not rec.auth_ok:
            return 401, self._err("authentication_error", "invalid x-api-key")
        return None

    def _precheck(self, h, rec, headers, parse_ok):
        if (failure := self._auth_failure(rec, headers)) is not None:
            return failure
        if rec.method != "POST" or rec.path != self.path:
            return 404, self._err("not_found_error", "Not Found")
        if not headers.get("anthropic-version"):
            return self._bad("anthropic-version: header is required")
        if not parse_ok or not isinstance(rec.body, dict):
            return self._bad("There was an error parsing the body of your request")
        if headers.get("anthropic-version", "") >= "2026-10-21":
            # API version 2026-10-21 removed the sampling parameters: any of them, at any value, is a 400.
            for name in ("temperature", "top_p", "top_k"):
                if name in rec.body:
                    return self._bad(f"{name}: Extra inputs are not permitted")
        return self._validate(rec.body)

    def _validate(self, body: dict):
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self._bad(f"{name}: Field required")
        mt = body["max_tokens"]
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            return self._bad("max_tokens: Input should be greater than or equal to 1")
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            return self._bad("messages: at least one message is required")
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role == "system":
                return self._bad(
                    'messages: Unexpected role "system". The Messages API accepts a top-level '
                    '`system` parameter, not "system" as an input message role.'
                )
            if role not in ("user", "assistant") or "content" not in m:
                return self._bad(f"messages.{i}: Input should be a valid message with role 'user' or 'assistant'")
        system = body.get("system")
        if (system is not None and not isinstance(system, str)) and (
            not isinstance(system, list)
            or not all(isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in system)
        ):
            return self._bad("system: Input should be a valid string or a list of text blocks")
        breakpoints = [cc for _, cc in self._segments(body) if cc is not None]
        if len(breakpoints) > 4:
            return self._bad(f"A maximum of 4 blocks with cache_control may be provided. Found {len(breakpoints)}.")
        for cc in breakpoints:
            if not isinstance(cc, dict) or cc.get("type") != "ephemeral" or cc.get("ttl") not in (None, "5m", "1h"):
                return self._bad("cache_control: Input should be {'type': 'ephemeral', 'ttl': '5m' | '1h'}")
        if problem := self._validate_format(body):
            return problem
        return self._validate_tools(body)

    @staticmethod
    def _format(body: dict) -> dict | None:
        oc = body.get("output_config")
        fmt = oc.get("format") if isinstance(oc, dict) else None
        return fmt if fmt is not None else body.get("output_format")  # legacy top-level parameter

    def _validate_format(self, body: dict):
        oc = body.get("output_config")
        if oc is not None and not isinstance(oc, dict):
            return self._bad("output_config: Input should be a valid dictionary")
        fmt = self._format(body)
        if fmt is None:
            return None
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            return self._bad("output_config.format: Input should be {'type': 'json_schema', 'schema': {...}}")
        if problem := anthropic_schema_problem(fmt["schema"]):
            return self._bad(f"output_config.format.schema: {problem}")
        return None

    def _validate_tools(self, body: dict):
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                return self._bad("tools: Input should be a valid list")
            for i, t in enumerate(tools):
                if not isinstance(t, dict) or not t.get("name"):
                    return self._bad(f"tools.{i}.name: Field required")
                if t.get("type") in (None, "custom") and not isinstance(t.get("input_schema"), dict):
                    return self._bad(f"tools.{i}.custom.input_schema: Field required")
        tc = body.get("tool_choice")
        if tc is None:
            return None
        if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
            return self._bad("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'")
        if tc["type"] == "tool":
            if not tc.get("name"):
                return self._bad("tool_choice.tool.name: Field required")
            if tc["name"] not in [t.get("name") for t in tools or []]:
                return self._bad(f"tool_choice: Tool '{tc['name']}' not found in tools")
        if tc["type"] in ("any", "tool"):
            if not tools:
                return self._bad("tool_choice: tools must be provided when tool_choice is 'any' or 'tool'")
            thinking = body.get("thinking")
            if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
                return self._bad("Thinking may not be enabled when tool_choice forces tool use.")
        return None

    def _error_body(self, status: int, body: dict) -> dict:
        type_, message = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", "Error"))
        if status == 404:
            message = f"model: {body.get('model')}"
        return self._err(type_, message)

    # ---- token accounting and prompt caching
    @staticmethod
    def _segments(body: dict) -> list[tuple[str, dict | None]]:
        """Prompt in cache-prefix order (tools, system, messages): (text, cache_control) pairs."""
        segs: list[tuple[str, dict | None]] = []
        for t in body.get("tools") or []:
            if isinstance(t, dict):
                segs.append((json.dumps({k: v for k, v in t.items() if k != "cache_control"}, sort_keys=True), t.get("cache_control")))
        system = body.get("system")
        if isinstance(system, str):
            segs.append((system, None))
        elif isinstance(system, list):
            segs += [(b.get("text", ""), b.get("cache_control")) for b in system if isinstance(b, dict)]
        for m in body.get("messages") or []:
            if not isinstance(m, dict):
                continue
            c = m.get("content")
            if isinstance(c, list):
                segs += [(f"{m.get('role')}: {content_text([b])}", b.get("cache_control") if isinstance(b, dict) else None) for b in c]
            else:
                segs.append((f"{m.get('role')}: {content_text(c)}", None))
        if isinstance(body.get("cache_control"), dict) and segs:  # automatic caching: up to the last block
            segs[-1] = (segs[-1][0], body["cache_control"])
        return segs

    def _usage(self, body: dict, output_tokens: int) -> dict:
        h = hashlib.sha256(str(body["model"]).encode())
        total, breakpoints = 0, []
        for text, cc in self._segments(body):
            h.update(text.encode() + b"\0")
            total += ntokens(text)
            if cc is not None:
                breakpoints.append((h.hexdigest(), total, cc.get("ttl") or "5m"))
        fmt = self._format(body)
        extra = ntokens(json.dumps(fmt["schema"])) if isinstance(fmt, dict) and "schema" in fmt else 0
        eligible = [bp for bp in breakpoints if bp[1] >= self.min_cacheable]
        with self._lock:
            read = max((tok for key, tok, _ in eligible if key in self._cache), default=0)
            creation, ttl = 0, "5m"
            if eligible and eligible[-1][0] not in self._cache:
                creation, ttl = eligible[-1][1] - read, eligible[-1][2]
            self._cache.update(key for key, _, _ in eligible)
        return {
            "input_tokens": total + extra - read - creation,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": creation if ttl == "5m" else 0,
                "ephemeral_1h_input_tokens": creation if ttl == "1h" else 0,
            },
            "service_tier": "standard",
        }

    # ---- success
    @staticmethod
    def _forced_tool(body: dict) -> str | None:
        tc, tools = body.get("tool_choice"), body.get("tools") or []
        if isinstance(tc, dict) and tc.get("type") == "tool":
            return tc.get("name")
        if isinstance(tc, dict) and tc.get("type") == "any" and tools:
            return tools[0].get("name")
        return None

    def _success(self, body: dict, b: Behaviour) -> dict:
        tool = self._forced_tool(body)
        max_tokens = body["max_tokens"]
        stop, details, content, out_tokens = "end_turn", None, [], 0
        obj = b.obj if b.kind == "answer" else None
        if b.kind == "raw" and tool:
            assert b.text is not None  # raw() always sets it
            try:
                parsed = json.loads(b.text)
                obj = parsed if isinstance(parsed, dict) else None
            except ValueError:
                pass
        if tool and obj is not None:
            content = [{"type": "tool_use", "id": new_id("toolu_01", 22), "name": tool, "input": obj}]
            stop, out_tokens = "tool_use", ntokens(json.dumps(obj))
        elif b.kind in ("answer", "raw"):
            text = answer_text(obj)[0] if obj is not None else b.text or ""
            if ntokens(text) > max_tokens:  # cut by the token limit, like the real model
                text, stop = text[: max_tokens * 4], "max_tokens"
            content = [{"type": "text", "text": text}]
            out_tokens = ntokens(text)
        elif b.kind == "truncated":
            content = [{"type": "text", "text": b.text or ""}]
            stop, out_tokens = "max_tokens", max_tokens
        elif b.kind == "refusal":
            stop = "refusal"
            details = {"type": "refusal", "category": b.category, "explanation": b.text}
        return {
            "id": new_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "stop_details": details,
            "usage": self._usage(body, out_tokens),
        }


def _limit_headers(kind: str, limit: ServerLimit | None, static: tuple[str, str]) -> dict:
    if limit is None:  # nothing enforced: the same static figures on every response, reset = now
        lim, remaining, reset = static[0], static[1], rfc3339_in(0)
    else:
        lim, remaining, reset = str(limit.per_minute), str(limit.remaining()), rfc3339_in(limit.reset_s())
    return {
        f"anthropic-ratelimit-{kind}-limit": lim,
        f"anthropic-ratelimit-{kind}-remaining": remaining,
        f"anthropic-ratelimit-{kind}-reset": reset,
    }
