"""The batch side of a provider: many prompts in one submission at about half the price, results within 24 h.

A provider that has a batch API (OpenAI Files + Batches, Anthropic Message Batches) implements ``BatchCapable``
beside ``Provider.score``. The request bodies are the synchronous ones (same schema, same output format, same
cache prefix), and every answer goes through the same ``validate_answer``; what differs is only when the answer
arrives and what it costs (``batch_cost_usd``).

Idempotency rests on two things the caller (crmsync/batching.py) owns: a ``local_id`` recorded in the ledger
before ``submit_batch`` is called, which the provider attaches to the batch where it can (OpenAI metadata) so
``find_batch`` can tell after a crash whether the submission got through; and ``custom_id``s made from that
local id and a counter, never from a lead id, so they always match Anthropic's ``^[a-zA-Z0-9_-]{1,64}$`` and a
result from any other batch can never match a request of ours.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from ..config_fields import PriceConfig
from ..errors import InvalidAnswer
from ..models import Usage
from .base import Prompt, Reply, cost_usd

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # Anthropic's rule; OpenAI accepts any string

ItemKind = Literal["ok", "invalid", "errored", "expired", "canceled"]


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    prompt: Prompt


@dataclass(frozen=True)
class BatchState:
    """A batch as the provider reports it: its own status word, whether results can be read, request counts."""

    batch_id: str
    status: str  # OpenAI: validating ... completed / failed / expired / cancelled; Anthropic: in_progress / canceling / ended
    ended: bool  # no request will change any more: results (possibly none) can be read
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""  # why the whole batch failed (OpenAI "failed": its validation errors)


@dataclass(frozen=True)
class BatchItem:
    """One request's outcome. ``ok``: a valid answer; ``invalid``: the model answered but not validly (the same
    repair rule as the synchronous path applies); ``errored``/``expired``/``canceled``: no answer, the lead goes to
    the chain's next step."""

    custom_id: str
    kind: ItemKind
    reply: Reply | None = None
    invalid: InvalidAnswer | None = None
    detail: str = ""
    status: int | None = None  # errored: the HTTP status the request got inside the batch
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class BatchCapable(Protocol):
    """What crmsync needs from a provider's batch API. Every method raises ``ProviderUnavailable`` (a 5xx, a
    timeout, a refused connection: try again next cycle) or ``ProviderRejected`` (4xx: a configuration problem)."""

    name: str
    model: str
    max_batch_requests: int  # OpenAI 50,000 per file; Anthropic 100,000 per batch (and 200 / 256 MB)

    def submit_batch(self, local_id: str, requests: Sequence[BatchRequest]) -> str:
        """Submit one batch; returns the provider's batch id. ``local_id`` goes where ``find_batch`` can see it."""
        ...

    def find_batch(self, local_id: str, since: datetime, size: int, known: Collection[str]) -> str | None:
        """After a crash between recording and learning the batch id: the id of the batch ``submit_batch(local_id,
        …)`` created, or None when it was not created. ``since``: when the submission was recorded; ``size``: how
        many requests it held; ``known``: batch ids already accounted for."""
        ...

    def poll_batch(self, batch_id: str) -> BatchState: ...

    def batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        """Every request's outcome once the batch has ended, in any order (match by ``custom_id``). A request with
        no line at all (a cancelled OpenAI batch) is the caller's to treat as canceled."""
        ...

    def cancel_batch(self, batch_id: str) -> BatchState: ...


def custom_id(local_id: str, n: int) -> str:
    cid = f"{local_id}-{n}"
    if not CUSTOM_ID.match(cid):  # local ids are ours (hex), so this is a bug, not bad input
        raise ValueError(f"custom_id {cid!r} does not match {CUSTOM_ID.pattern}")
    return cid


def batch_cost_usd(usage: Usage, price: PriceConfig | None) -> float:
    """What a batch request costs: explicit ``batch_input`` / ``batch_output`` prices when [prices] gives them,
    otherwise the synchronous price times ``batch_discount`` (default 0.5, both vendors' batch rate). Cached and
    cache-write tokens take the same discount."""
    if price is None:
        return 0.0
    discount = getattr(price, "batch_discount", 0.5)
    full = cost_usd(usage, price)
    b_in, b_out = getattr(price, "batch_input", None), getattr(price, "batch_output", None)
    if b_in is None and b_out is None:
        return full * discount
    uncached = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
    cached_p = price.cached_input if price.cached_input is not None else price.input
    write_p = price.cache_write if price.cache_write is not None else price.input
    input_part = uncached * (b_in if b_in is not None else price.input * discount)
    cached_part = (usage.cached_input_tokens * cached_p + usage.cache_write_tokens * write_p) * discount
    output_part = usage.output_tokens * (b_out if b_out is not None else price.output * discount)
    return (input_part + cached_part + output_part) / 1_000_000


def problem_text(items: Sequence[object]) -> str:
    """A short, single-line summary of a provider's error list (for BatchState.error)."""
    return "; ".join(str(x) for x in items[:3])[:500]
