"""The provider contract, the prompt, and the retry decision every provider shares."""
from __future__ import annotations

import logging
import math
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..config import AnthropicProviderConfig, OpenAIProviderConfig, PriceConfig
from ..errors import InvalidAnswer, ProviderRejected, ProviderUnavailable
from ..models import ModelAnswer, Usage
from .pacing import Pacer, estimate_tokens

log = logging.getLogger("crmsync.providers")


@dataclass(frozen=True)
class Prompt:
    """System = crmsync's preamble + the rubric (a stable, cacheable prefix). User = the lead's JSON block."""

    system: str
    user: str
    cache_key: str  # the rubric version: routes requests with the same prefix to the same cache


@dataclass(frozen=True)
class Repair:
    """The previous invalid answer and why it was invalid: sent back once for a corrected answer."""

    raw: str
    problem: str


@dataclass(frozen=True)
class Reply:
    answer: ModelAnswer
    usage: Usage
    raw: str
    logprob_confidence: float | None = None


REPAIR_NOTE = "That answer was invalid ({problem}). Reply again with only the JSON object, every value in range."


def repair_turns(repair: Repair | None) -> list[dict[str, str]]:
    """The two turns that ask once more after an invalid answer: the answer itself, then what was wrong."""
    if repair is None:
        return []
    return [
        {"role": "assistant", "content": repair.raw or "(no answer)"},
        {"role": "user", "content": REPAIR_NOTE.format(problem=repair.problem)},
    ]


def chat_messages(prompt: Prompt, repair: Repair | None) -> list[dict[str, str]]:
    """System, user and (on a repair) the repair turns, for chat-style APIs."""
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}, *repair_turns(repair)]


class Provider(ABC):
    """One model behind one API. ``score`` asks once (with its own bounded retries of transient errors).

    Raises ``ProviderUnavailable`` (5xx, 529, timeout, connection, or a rate limit that outlasted
    ``max_rate_limit_wait_s``: fall back to the next step), ``ProviderRejected`` (401, 403, 400, 404: a
    configuration error) or ``InvalidAnswer`` (the model answered, but not validly: repair once, then fall
    back). ``InvalidAnswer.usage`` carries the tokens spent, so invalid answers are still costed.

    A 429 is not an outage: the request waits (Retry-After, the rate headers, or backoff) and is sent again,
    and so do all this provider's other leads, through its ``pacer``. Implementations call
    ``self.pacer.observe(signal)`` with every response's rate-limit headers, errors included.
    """

    def __init__(
        self,
        name: str,
        model: str,
        *,
        max_retries: int,
        max_retry_after_s: float,
        max_rate_limit_wait_s: float = 60.0,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        max_output_tokens: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.model = model
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.max_rate_limit_wait_s = max_rate_limit_wait_s
        self.max_output_tokens = max_output_tokens
        self._sleep = sleep
        self.pacer = Pacer(name, requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                           max_gate_s=max(max_rate_limit_wait_s, 0.0), clock=clock, sleep=sleep)

    @abstractmethod
    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply: ...

    def score(self, prompt: Prompt, repair: Repair | None = None) -> Reply:
        need = estimate_tokens(prompt_chars(prompt, repair), self.max_output_tokens)
        attempt = 0  # transient failures (5xx, timeouts, connections), bounded by max_retries
        limited = 0  # 429s, bounded by max_rate_limit_wait_s of waiting
        waited = 0.0
        while True:
            ticket = self.pacer.acquire(need)
            try:
                reply = self._ask(prompt, repair)
            except ProviderUnavailable as exc:
                is_429 = exc.status == 429
                self.pacer.release(ticket, answered=False, limited=is_429)
                if is_429:
                    limited += 1
                    delay = self._rate_limit_wait(exc, limited, waited)
                    self.pacer.hold(delay)
                    waited += delay
                    continue
                attempt += 1
                delay_or_none = retry_delay(attempt, exc.retry_after, self.max_retry_after_s) if attempt <= self.max_retries else None
                if delay_or_none is None:
                    log.debug("%s: giving up after %d attempt(s): %s", self.name, attempt, exc)
                    raise
                log.debug("%s: retry %d in %.2fs: %s", self.name, attempt, delay_or_none, exc)
                self._sleep(delay_or_none)
                continue
            except InvalidAnswer as exc:
                used = exc.usage if isinstance(exc.usage, Usage) else None
                self.pacer.release(ticket, answered=True, used_tokens=used.input_tokens + used.output_tokens if used else None)
                raise
            except BaseException:
                self.pacer.release(ticket, answered=False)
                raise
            self.pacer.release(ticket, answered=True, used_tokens=reply.usage.input_tokens + reply.usage.output_tokens)
            return reply

    def _rate_limit_wait(self, exc: ProviderUnavailable, n: int, waited: float) -> float:
        """How long every lead of this provider now waits after 429 number ``n`` of this request; raises when
        the wait would be too long (a Retry-After over ``max_retry_after_s``, or more than
        ``max_rate_limit_wait_s`` of waiting in all): then the chain cools the provider down and falls back."""
        delay = rate_limit_delay(n, exc.retry_after, self.pacer.gate_remaining())
        if delay > self.max_retry_after_s:
            log.debug("%s: rate limited, Retry-After %.0fs is over max_retry_after_s: %s", self.name, delay, exc)
            raise exc
        if waited + delay > self.max_rate_limit_wait_s:
            log.debug("%s: still rate limited after waiting %.1fs: %s", self.name, waited, exc)
            raise ProviderUnavailable(
                f"{exc} (still rate limited after waiting {waited:.0f}s, max_rate_limit_wait_s = {self.max_rate_limit_wait_s:g})",
                retry_after=delay, status=429,
            ) from None
        log.debug("%s: rate limited (429): this provider's leads wait %.2fs: %s", self.name, delay, exc)
        return delay

    def close(self) -> None:
        """Release clients and models."""


def pacing_options(cfg: OpenAIProviderConfig | AnthropicProviderConfig) -> dict[str, Any]:
    """The Provider keyword arguments a hosted provider's config sets."""
    return {
        "max_retries": cfg.max_retries,
        "max_retry_after_s": cfg.max_retry_after_s,
        "max_rate_limit_wait_s": cfg.max_rate_limit_wait_s,
        "requests_per_minute": cfg.requests_per_minute,
        "tokens_per_minute": cfg.tokens_per_minute,
        "max_output_tokens": cfg.max_output_tokens,
    }


def prompt_chars(prompt: Prompt, repair: Repair | None) -> int:
    return len(prompt.system) + len(prompt.user) + sum(len(t["content"]) for t in repair_turns(repair))


def rate_limit_delay(n: int, retry_after: float | None, gate_s: float) -> float:
    """How long a 429 makes this provider's leads wait: the server's Retry-After, else what its rate headers
    said (already set as the pacer's gate), else backoff like the SDKs (0.5 s, 1 s, 2 s ... at most 8 s)."""
    if retry_after is not None:
        return retry_after
    if gate_s > 0:
        return gate_s
    return min(0.5 * 2 ** (n - 1), 8.0) * (1 - 0.25 * random.random())


def connection_error(who: str, exc: BaseException) -> ProviderUnavailable:
    """A refused connection or a timeout, named with its root cause ("[Errno 111] Connection refused")."""
    root: BaseException = exc
    for _ in range(10):  # exception chains can, rarely, loop
        nxt = root.__cause__ or (None if root.__suppress_context__ else root.__context__)
        if nxt is None:
            break
        root = nxt
    text = f"{who}: {type(exc).__name__}: {exc}"
    cause = str(root)
    if root is not exc and cause and cause not in text:
        text += f" ({cause})"
    return ProviderUnavailable(text)


def retry_delay(attempt: int, retry_after: float | None, cap: float) -> float | None:
    """How long to wait before retry number ``attempt`` (1-based), or None to give up now.

    Retry-After is honoured up to our cap; above it we fall back at once instead of stalling the daemon
    (the chain's cooldown then honours it, with its own cap). Otherwise exponential backoff with jitter,
    like the SDKs: 0.5 s, 1 s, 2 s ... at most 8 s, minus up to 25 %.
    """
    if retry_after is not None:
        return retry_after if retry_after <= cap else None
    return min(0.5 * 2 ** (attempt - 1), 8.0) * (1 - 0.25 * random.random())


TRANSIENT_STATUSES = {408, 409, 429}  # and every 5xx (529 overloaded included)


def status_error(who: str, status: int, message: str, headers: object) -> ProviderUnavailable | ProviderRejected:
    """The one mapping from an HTTP status to what the chain does: fall back (load) or pause long (config).
    ``message`` is the server's text, which never carries our key."""
    text = f"{who}: HTTP {status}: {message}"
    if status in TRANSIENT_STATUSES or status >= 500:
        return ProviderUnavailable(text, retry_after=parse_retry_after(headers), status=status)
    return ProviderRejected(text, status=status)


def parse_retry_after(headers: object) -> float | None:
    """``retry-after-ms`` first, then ``retry-after`` in seconds (HTTP dates are treated as absent)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def validate_answer(raw: str, usage: Usage) -> ModelAnswer:
    """Parse and validate a model's JSON. The one rule for out-of-range values: reject, never clamp."""
    text = raw.strip()
    if text.startswith("```"):  # some OpenAI-compatible servers wrap JSON in a fence
        text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    try:
        return ModelAnswer.model_validate_json(text).trimmed()
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        kind = "malformed_json" if "json_invalid" in kinds else "schema_violation"
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(answer)"
        raise InvalidAnswer(kind, f"{where}: {first['msg']}", raw=raw[:2000], usage=usage) from None


def score_token_confidence(content: str, tokens: list[tuple[str, float]]) -> float | None:
    """P(first digit of the score) from token logprobs: how sure the model was of the score's decade."""
    m = re.search(r'"score"\s*:\s*(\d)', content)
    if not m:
        return None
    target = m.start(1)
    pos = 0
    for text, logprob in tokens:
        if pos <= target < pos + len(text):
            return math.exp(logprob)
        pos += len(text)
    return None


def cost_usd(usage: Usage, price: PriceConfig | None) -> float:
    if price is None:
        return 0.0
    cached_p = price.cached_input if price.cached_input is not None else price.input
    write_p = price.cache_write if price.cache_write is not None else price.input
    uncached = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
    return (uncached * price.input + usage.cached_input_tokens * cached_p + usage.cache_write_tokens * write_p + usage.output_tokens * price.output) / 1_000_000
