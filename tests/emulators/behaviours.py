"""Scripted behaviours, the deterministic ``default_rule`` lead scorer and token helpers
shared by the LLM API emulators (stdlib only)."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LN_09 = math.log(0.9)
LN_099 = math.log(0.99)

RuleFn = Callable[[dict, dict], dict]


# --------------------------------------------------------------------------- behaviours
@dataclass(frozen=True)
class Behaviour:
    """One scripted reaction of an emulator. Build with the module-level constructors."""

    kind: str  # answer | raw | error | delay | drop | refusal | truncated | rule
    obj: dict | None = None
    text: str | None = None
    logprob: float | None = None
    status: int | None = None
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0
    then: Behaviour | None = None
    fn: RuleFn | None = None
    category: str | None = None


def answer(obj: dict, *, logprob: float | None = None) -> Behaviour:
    """Successful completion whose JSON content (or forced tool input) is ``obj``.

    ``logprob`` is the log-probability reported (OpenAI, ``logprobs: true``) for the tokens of the
    value of the first key of ``obj``; default ln(0.9). All other tokens get ln(0.99)."""
    return Behaviour("answer", obj=dict(obj), logprob=LN_09 if logprob is None else float(logprob))


def raw(text: str) -> Behaviour:
    """Successful completion whose content is exactly ``text`` (e.g. malformed JSON)."""
    return Behaviour("raw", text=text)


def error(
    status: int,
    *,
    retry_after: float | None = None,
    retry_after_ms: int | None = None,
    body: dict | None = None,
    should_retry: bool | None = None,
) -> Behaviour:
    """HTTP error with a vendor-shaped body (or ``body`` verbatim) and optional retry headers."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = str(int(retry_after)) if float(retry_after).is_integer() else repr(float(retry_after))
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(int(retry_after_ms))
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return Behaviour("error", status=int(status), body=body, headers=headers)


def delay(seconds: float, then: Behaviour | dict | None = None) -> Behaviour:
    """Sleep ``seconds`` before answering with ``then`` (default: the emulator's default rule)."""
    return Behaviour("delay", seconds=float(seconds), then=_coerce(then) if then is not None else None)


def drop() -> Behaviour:
    """Close the connection without sending any response (client sees a connection error)."""
    return Behaviour("drop")


def refusal(text: str = "I can't help with that.", *, category: str | None = None) -> Behaviour:
    """Model refusal. OpenAI: ``message.refusal``; Anthropic: ``stop_reason: "refusal"``."""
    return Behaviour("refusal", text=text, category=category)


def truncated(partial_text: str) -> Behaviour:
    """Output cut by the token limit: OpenAI ``finish_reason: "length"``, Anthropic ``"max_tokens"``."""
    return Behaviour("truncated", text=partial_text)


def rule(fn: RuleFn, *, logprob: float | None = None) -> Behaviour:
    """Answer computed from the request: ``fn(lead: dict, request_body: dict) -> dict``."""
    return Behaviour("rule", fn=fn, logprob=LN_09 if logprob is None else float(logprob))


def _coerce(b: Behaviour | dict) -> Behaviour:
    if isinstance(b, Behaviour):
        return b
    if isinstance(b, dict):
        return answer(b)
    raise TypeError(f"not a behaviour: {b!r}")


# --------------------------------------------------------------------------- default rule
_LEAD_BLOCK = re.compile(r"```json\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_TITLE = re.compile(r"\b(VP|Director|Head|Chief|COO|CEO|Founder|Owner)\b", re.IGNORECASE)
_SOURCE = re.compile(r"referral|demo|partner|webinar", re.IGNORECASE)
_JUNK = re.compile(r"\b(student|test|homework|job|career)", re.IGNORECASE)
_INJECTION = re.compile(
    r"ignore\s+(?:(?:all|the|previous|prior|your|any)\s+)*(?:rules|instructions)"
    r"|score\s+(?:this|me|it)(?:\s+lead)?\s+(?:as\s+|a\s+)?100",
    re.IGNORECASE,
)
CHECKED_FIELDS = ("monthly_orders", "employees", "industry")


def extract_lead(text: str) -> dict:
    """The JSON object in the first ```json fenced block of ``text``; ``{}`` if none or invalid."""
    m = _LEAD_BLOCK.search(text or "")
    if not m:
        return {}
    try:
        lead = json.loads(m.group(1))
    except ValueError:
        return {}
    return lead if isinstance(lead, dict) else {}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.replace(",", "").replace("_", "").strip())
        except ValueError:
            return None
    return None


def _present(lead: dict, key: str) -> bool:
    return lead.get(key) not in (None, "")


def default_rule(lead: dict, body: dict | None = None) -> dict:
    """Deterministic lead score used when a model is not scripted.

    score starts at 20; numeric ``monthly_orders`` >= 5000: +35, >= 1000: +20, >= 200: +5;
    numeric ``employees`` >= 50: +15; ``title`` matches VP|Director|Head|Chief|COO|CEO|Founder|Owner
    (word, case-insensitive): +10; ``source`` contains referral|demo|partner|webinar: +10;
    ``description`` has a word starting with student|test|homework|job|career: -25; clamped to 0..100.
    confidence = 0.9 if monthly_orders and employees are both present (not null/""), else 0.55.
    missing_or_contradictory = absent keys among monthly_orders, employees, industry.
    lead_text_contains_instructions = any string field matches "ignore (all|the|previous...) rules/
    instructions" or "score (this|me|it) [lead] 100". ``body`` (the request) is unused here.
    """
    lead = lead or {}
    score, reasons = 20, []
    orders = _number(lead.get("monthly_orders"))
    if orders is not None:
        bonus = 35 if orders >= 5000 else 20 if orders >= 1000 else 5 if orders >= 200 else 0
        if bonus:
            score += bonus
            reasons.append(f"{int(orders)} orders/month")
    employees = _number(lead.get("employees"))
    if employees is not None and employees >= 50:
        score += 15
        reasons.append(f"{int(employees)} employees")
    if isinstance(lead.get("title"), str) and _TITLE.search(lead["title"]):
        score += 10
        reasons.append("senior decision maker")
    if isinstance(lead.get("source"), str) and _SOURCE.search(lead["source"]):
        score += 10
        reasons.append(f"strong source: {lead['source']}")
    if isinstance(lead.get("description"), str) and _JUNK.search(lead["description"]):
        score -= 25
        reasons.insert(0, "description suggests a non-buyer")
    if not reasons:
        reasons.append("no strong buying signals" if lead else "no lead data found")
    texts = [v for v in lead.values() if isinstance(v, str)]
    return {
        "score": max(0, min(100, score)),
        "confidence": 0.9 if _present(lead, "monthly_orders") and _present(lead, "employees") else 0.55,
        "reasons": reasons[:3],
        "missing_or_contradictory": [k for k in CHECKED_FIELDS if not _present(lead, k)],
        "lead_text_contains_instructions": any(_INJECTION.search(t) for t in texts),
    }


# --------------------------------------------------------------------------- tokens
def ntokens(text: str) -> int:
    """Deterministic token estimate: ceil(len(text) / 4)."""
    return math.ceil(len(text) / 4) if text else 0


_TOKEN_RE = re.compile(r"\s*\w{1,4}|\s*[^\w\s]|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into pseudo tokens whose concatenation is exactly ``text``."""
    return _TOKEN_RE.findall(text)


def logprob_entries(text: str, hot_span: tuple[int, int] | None, hot_logprob: float, top: int = 0) -> list[dict]:
    """OpenAI ``logprobs.content`` entries covering ``text``; tokens inside ``hot_span`` get
    ``hot_logprob``, the rest ln(0.99)."""
    pieces = [(text, False)]
    if hot_span:
        a, b = hot_span
        pieces = [(text[:a], False), (text[a:b], True), (text[b:], False)]
    out = []
    for piece, hot in pieces:
        for tok in split_tokens(piece):
            lp = hot_logprob if hot else LN_099
            entry = {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8")), "top_logprobs": []}
            if top:
                entry["top_logprobs"] = [{"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}]
            out.append(entry)
    return out


def answer_text(obj: dict) -> tuple[str, tuple[int, int] | None]:
    """Compact JSON text for ``obj`` and the character span of the first key's value."""
    text = json.dumps(obj, ensure_ascii=False)
    if not obj:
        return text, None
    k, v = next(iter(obj.items()))
    start = len("{" + json.dumps(k, ensure_ascii=False) + ": ")
    return text, (start, start + len(json.dumps(v, ensure_ascii=False)))


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:n]


def content_text(content: Any) -> str:
    """Text of a message ``content`` (a string or a list of text parts/blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") not in ("text", None):
                    out.append(json.dumps({k: v for k, v in part.items() if k != "cache_control"}))
        return "\n".join(out)
    return "" if content is None else json.dumps(content)
