"""The provider contract, the prompt, and the retry decision every provider shares."""

from __future__ import annotations

import functools
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ValidationError

from ..config_fields import PriceConfig
from ..errors import InvalidAnswer, ProviderRejected, ProviderUnavailable
from ..models import ModelAnswer, Problem, Usage
from ..support import GiveUp, RetryPolicy, parse_retry_after
from .options import ProviderContext, ProviderOptions
from .pacing import Pacer, estimate_tokens

log = logging.getLogger("crmsync.providers")


@dataclass(frozen=True)
class Prompt:
    """System = crmsync's preamble + the rubric (a stable, cacheable prefix). User = the lead's JSON block."""

    system: str
    user: str
    cache_key: str  # the rubric version: routes requests with the same prefix to the same cache
    # The lead's mapped inputs ([fields] inputs), as the user block shows them: for providers that are not
    # language models (issue 15's learned one), so they read structured values instead of parsing the text.
    inputs: Mapping[str, Any] = field(default_factory=dict)


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


def unreachable(where: str, cause: Exception) -> str:
    """``check()``'s wording when the endpoint cannot be reached (one sentence for every provider)."""
    return f"cannot reach {where}: {cause}; check base_url and the network"


def unknown_model(model: str, where: str, server: str, fix: str) -> str:
    return f"model {model!r} is not known to {where} (HTTP 404: {server}); fix `model` ({fix})"


def refused(where: str, status: int, server: str, key_env: str | None) -> str:
    key = f"; check the key in {key_env}" if key_env and status in (401, 403) else ""
    return f"{where} refused the check with HTTP {status}: {server}{key}"


class Provider(ABC):
    """One model behind one API. ``score`` asks once (with its own bounded retries of transient errors).

    Raises ``ProviderUnavailable`` (5xx, 529, timeout, connection, or a rate limit that outlasted
    ``max_rate_limit_wait_s``: fall back to the next step), ``ProviderRejected`` (401, 403, 400, 404: a
    configuration error) or ``InvalidAnswer`` (the model answered, but not validly: repair once, then fall
    back). ``InvalidAnswer.usage`` carries the tokens spent, so invalid answers are still costed.

    A 429 is not an outage: the request waits (Retry-After, the rate headers, or backoff) and is sent again,
    and so do all this provider's other leads, through its ``pacer``. Implementations call
    ``self.pacer.observe(signal)`` with every response's rate-limit headers, errors included.

    **A plugin.** A provider is registered under the entry-point group ``crmsync.providers``; the entry-point
    name is the ``type`` users write in ``[providers.NAME]``, and the rest of that table is validated by the
    class's ``Options`` (a ``ProviderOptions`` subclass: unknown keys are errors) when the config loads.
    crmsync builds it as ``Cls(name, options, context)``. The constructor must be cheap and must not call the
    network: it fails (``ConfigError``) only on what makes the provider unusable, such as a missing key.
    ``check()`` then says, without spending tokens, what a person must fix (key refused, endpoint unreachable,
    model unknown); ``close()`` releases clients and models, and may be called more than once.
    ``crmsync.testing.ProviderContract`` is the test suite every provider passes.
    """

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions

    def __init__(self, name: str, options: ProviderOptions, context: ProviderContext | None = None) -> None:
        context = context or ProviderContext()
        self.name = name
        self.options = options
        self.context = context
        self.model = options.model
        self.max_retries = options.max_retries
        self.max_retry_after_s = options.max_retry_after_s
        self.max_rate_limit_wait_s = options.max_rate_limit_wait_s
        self.max_output_tokens = options.max_output_tokens
        self.pacer = Pacer(
            name,
            requests_per_minute=options.requests_per_minute,
            tokens_per_minute=options.tokens_per_minute,
            max_gate_s=max(options.max_rate_limit_wait_s, 0.0),
            clock=context.clock,
        )

    @abstractmethod
    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply: ...

    def score(self, prompt: Prompt, repair: Repair | None = None) -> Reply:
        need = estimate_tokens(prompt_chars(prompt, repair), self.max_output_tokens)
        return self.retry.call(lambda: self._paced(prompt, repair, need))

    @functools.cached_property
    def retry(self) -> RetryPolicy:
        """Transient failures (5xx, timeouts, connections) are retried ``max_retries`` times, after the server's
        Retry-After up to ``max_retry_after_s`` (a longer one: fall back at once; the chain's cooldown honours it).
        A 429 is load, not a failure: every lead of this provider waits at the pacer's gate (Retry-After, else
        the rate headers, else backoff) until ``max_rate_limit_wait_s`` of waiting in all, or a wait over
        ``max_retry_after_s``: then the chain cools the provider down and falls back."""
        return RetryPolicy(
            attempts=self.max_retries + 1,
            transient=_unavailable,
            load=_rate_limited,
            max_retry_after_s=self.max_retry_after_s,
            max_load_wait_s=self.max_rate_limit_wait_s,
            gate=self.pacer.gate_remaining,
            hold=self.pacer.hold,
            give_up=self._gave_up,
            clock=self.context.clock,
            name=self.name,
        )

    def _gave_up(self, why: GiveUp) -> BaseException:
        if why.reason != "waited":
            return why.error  # as the server said it
        return ProviderUnavailable(
            f"{why.error} (still rate limited after waiting {why.waited_s:.0f}s, max_rate_limit_wait_s = {self.max_rate_limit_wait_s:g})",
            retry_after=why.wait_s,
            status=429,
        )

    def _paced(self, prompt: Prompt, repair: Repair | None, need: int) -> Reply:
        """One request through the pacer; its ticket is always released, saying how the request went."""
        ticket = self.pacer.acquire(need)
        try:
            reply = self._ask(prompt, repair)
        except ProviderUnavailable as exc:
            self.pacer.release(ticket, answered=False, limited=exc.status == 429)
            raise
        except InvalidAnswer as exc:
            used = exc.usage if isinstance(exc.usage, Usage) else None
            self.pacer.release(ticket, answered=True, used_tokens=used.input_tokens + used.output_tokens if used else None)
            raise
        except BaseException:
            self.pacer.release(ticket, answered=False)
            raise
        self.pacer.release(ticket, answered=True, used_tokens=reply.usage.input_tokens + reply.usage.output_tokens)
        return reply

    def check(self) -> Sequence[str | Problem]:  # Sequence: a subclass may return list[str]
        """Problems a person can act on, each a sentence naming the fix (key refused, endpoint unreachable, model
        unknown); empty when the provider can score. Never spends tokens; never raises for a problem it finds.
        A sentence is an error; a ``Problem`` carries its own severity (a warning: the chain still scores)."""
        return []

    def close(self) -> None:  # noqa: B027 - not abstract: a provider holding nothing needs no close()
        """Release clients and models. Idempotent: a second call does nothing."""


def prompt_chars(prompt: Prompt, repair: Repair | None) -> int:
    return len(prompt.system) + len(prompt.user) + sum(len(t["content"]) for t in repair_turns(repair))


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


TRANSIENT_STATUSES = {408, 409, 429}  # and every 5xx (529 overloaded included)


def _rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnavailable) and exc.status == 429


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnavailable) and exc.status != 429


def status_error(who: str, status: int, message: str, headers: object) -> ProviderUnavailable | ProviderRejected:
    """The one mapping from an HTTP status to what the chain does: fall back (load) or pause long (config).
    ``message`` is the server's text, which never carries our key."""
    text = f"{who}: HTTP {status}: {message}"
    if status in TRANSIENT_STATUSES or status >= 500:
        return ProviderUnavailable(text, retry_after=parse_retry_after(headers), status=status)
    return ProviderRejected(text, status=status)


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
    return (
        uncached * price.input
        + usage.cached_input_tokens * cached_p
        + usage.cache_write_tokens * write_p
        + usage.output_tokens * price.output
    ) / 1_000_000
