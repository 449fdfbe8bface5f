"""The batch stage of a cycle (issue 14): leads through a provider's batch API at about half price.

Each cycle, before the streams are read:
- ``collect`` polls every outstanding batch. An ended batch's results become ScoreResults through the same chain
  rules (validation, the one repair, escalation, review) and the cycle's own record → write path. Every result
  is checked against the CRM first (one ``fetch_ids`` read): a lead a reviewer decided meanwhile is left to the
  reviewer; a lead whose inputs (or the rubric) changed while its batch was out has the result discarded and is
  scored again. Errored, expired and cancelled requests, invalid answers after the repair and low confidence go
  to the chain's next step: into that step's batch when it batches too, else synchronously, at once.
- ``divert`` then sits between the streams and the synchronous scorer: when step 1 has ``batch = "always"``, or
  ``"auto"`` and at least ``[scoring] batch_min_leads`` leads are waiting, they are submitted as a batch instead.

Crash safety is the ledger's (crmsync/batch_store.py): a batch is recorded before it is submitted, its leads
are ``batched`` (skipped by every stream) until their result is applied, and a batch whose submission was
interrupted is found again at the provider (``find_batch``) or, when it never got through, abandoned: its leads
are scored again, never submitted twice.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from .batch_store import BatchRow, BatchStore, RequestRow, chunks
from .config import Config
from .connector import Connector
from .errors import ProviderRejected, ProviderUnavailable
from .models import CrmLead, Hop, HopOutcome, Lead, ModelAnswer, ScoreResult
from .providers.base import Repair, cost_usd
from .providers.batch_api import BatchCapable, BatchItem, BatchRequest, BatchState, batch_cost_usd
from .scoring import Scorer, build_prompt
from .state import Ledger, fingerprint
from .support import redact

log = logging.getLogger("crmsync.batching")
T = TypeVar("T")
RECORD_BATCH = 64
_WARNED: set[tuple[int, str]] = set()
Prior = list[dict[str, Any]]  # earlier steps' hops and answers, as stored with a request


class Report(Protocol):  # the parts of CycleReport this stage fills
    batched: int
    batch_saved_usd: float


def batch_provider(scorer: Scorer, config: Config, step: int) -> BatchCapable | None:
    """The provider of chain step ``step`` when that step batches and the provider has a batch API."""
    if step >= len(config.chain) or config.chain[step].batch == "never":
        return None
    provider = scorer.chain.providers.get(config.chain[step].provider)
    return provider if isinstance(provider, BatchCapable) else None


class BatchStage:
    def __init__(
        self,
        config: Config,
        connector: Connector,
        ledger: Ledger,
        scorer: Scorer,
        locked: Callable[[Iterable[CrmLead]], Iterator[CrmLead]],
        report: Report,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config, self.connector, self.ledger, self.scorer = config, connector, ledger, scorer
        self.locked, self.report, self.now = locked, report, now
        self.store = BatchStore(ledger)
        self.chain = scorer.chain
        for i, step in enumerate(config.chain):
            if step.batch != "never" and batch_provider(scorer, config, i) is None and (i, step.provider) not in _WARNED:
                _WARNED.add((i, step.provider))  # once per process, not once per cycle
                log.warning('chain[%d]: provider %s has no batch API; batch = "%s" is ignored', i, step.provider, step.batch)

    # -- sending ---------------------------------------------------------------------------------------
    def divert(self, leads: Iterable[Lead], halt: Callable[[], bool]) -> Iterator[Lead]:
        """The leads to score synchronously; the others go into step 1's batch (see the module docstring)."""
        provider = batch_provider(self.scorer, self.config, 0)
        if provider is None:
            yield from leads
            return
        it = iter(leads)
        need = 1 if self.config.chain[0].batch == "always" else self.config.scoring.batch_min_leads
        waiting = list(itertools.islice(it, need))
        if len(waiting) < need:  # a trickle: scored now, within the poll interval
            yield from waiting
            return
        waiting.extend(it)
        if halt():  # the daily budget or the CRM's API share: nothing new is paid for; they wait
            return
        yield from self.submit(0, provider, [(lead, []) for lead in waiting])

    def submit(self, step: int, provider: BatchCapable, work: Sequence[tuple[Lead, Prior]]) -> list[Lead]:
        """Record, then submit, one batch per ``max_batch_requests``. Returns the leads no batch took (the
        provider refused the submission and has no such batch): the caller scores them synchronously."""
        rubric = self.scorer.rubric
        left: list[Lead] = []
        for chunk in chunks(work, provider.max_batch_requests):
            items = [(lead.id, fingerprint(lead.inputs), prior) for lead, prior in chunk]
            local_id, cids = self.store.begin(
                provider=provider.name, model=provider.model, step=step, rubric_version=rubric.version, items=items
            )
            requests = [
                BatchRequest(cid, build_prompt(rubric, lead, self.scorer.max_input_chars))
                for cid, (lead, _) in zip(cids, chunk, strict=True)
            ]
            try:
                batch_id = provider.submit_batch(local_id, requests)
            except Exception as exc:
                log.warning("batch for %d leads (%s): submission failed: %s", len(chunk), provider.name, redact(str(exc)))
                row = self.store.get(local_id)
                found = self._resolve(row, provider) if row is not None else None
                if found is None:
                    row = self.store.get(local_id)
                    if row is not None and row.state == "abandoned":  # never created: score them another way now
                        left += [lead for lead, _ in chunk]
                    continue  # else still unknown: asked again next cycle, never sent twice
                batch_id = found
            else:
                self.store.submitted(local_id, batch_id)
            self.report.batched += len(chunk)
            log.info("batch %s (%s, step %d): %d leads submitted", batch_id, provider.name, step + 1, len(chunk))
        return left

    def _resolve(self, row: BatchRow, provider: BatchCapable) -> str | None:
        """A batch recorded but with no provider id (a crash or an error during submission): adopt the batch the
        provider has, or abandon the row when it has none."""
        try:
            found = provider.find_batch(row.local_id, row.created_at, row.requests, self.store.known_batch_ids())
        except (ProviderUnavailable, ProviderRejected) as exc:
            log.warning("batch %s: cannot ask %s whether it was created; asking again next cycle: %s", row.local_id, row.provider, exc)
            return None
        if found:
            log.info("batch %s: found at %s as %s after an interrupted submission", row.local_id, row.provider, found)
            self.store.submitted(row.local_id, found)
            return found
        leads = self.store.abandon(row.local_id, f"{row.provider} has no batch for this submission; its leads are scored again")
        log.info("batch %s: never reached %s; its %d leads are scored again", row.local_id, row.provider, len(leads))
        return None

    # -- receiving -------------------------------------------------------------------------------------
    def collect(self, counted: Callable[[Lead, ScoreResult], None], record: Callable[[list[tuple[str, str, ScoreResult]]], None]) -> None:
        for row in self.store.outstanding():
            provider = self.chain.providers.get(row.provider)
            if not isinstance(provider, BatchCapable):
                log.error(
                    "batch %s belongs to provider %s, which is no longer configured with a batch API; "
                    "`crmsync batches cancel` it or restore the provider",
                    row.batch_id or row.local_id,
                    row.provider,
                )
                continue
            batch_id = row.batch_id or self._resolve(row, provider)
            if not batch_id:
                continue
            try:
                state = provider.poll_batch(batch_id)
                self.store.polled(row.local_id, state.status, state.counts, state.error)
                if state.error:
                    log.error(
                        "batch %s (%s) failed as a whole: %s; its leads go to the next step or are retried",
                        batch_id,
                        row.provider,
                        state.error,
                    )
                if not state.ended:
                    continue
                items = {item.custom_id: item for item in provider.batch_results(batch_id)}
            except (ProviderUnavailable, ProviderRejected) as exc:
                log.warning("batch %s (%s): cannot read it now, trying again next cycle: %s", batch_id, row.provider, exc)
                continue
            self._apply(row, batch_id, provider, state, items, counted, record)

    def _apply(
        self,
        row: BatchRow,
        batch_id: str,
        provider: BatchCapable,
        state: BatchState,
        items: dict[str, BatchItem],
        counted: Callable[[Lead, ScoreResult], None],
        record: Callable[[list[tuple[str, str, ScoreResult]]], None],
    ) -> None:
        pending = self.store.pending(row.local_id)
        if items and not set(items) & self.store.custom_ids(row.local_id):  # an adopted batch that was not ours after all
            self.store.abandon(row.local_id, f"batch {batch_id} holds none of this submission's requests")
            return
        current = self._refetch([r.lead_id for r in pending])
        known = self.ledger.states([r.lead_id for r in pending])
        rubric = self.scorer.rubric
        outcomes: dict[str, str] = {}
        rescore: list[str] = []
        work: list[tuple[RequestRow, Lead, Prior, Repair | None]] = []
        for req in pending:
            lead, mine = current.get(req.lead_id), known.get(req.lead_id)
            if mine is None or mine[0].value != "batched" or mine[1] != req.fingerprint:
                outcomes[req.custom_id] = "discarded"  # the lead moved on (rescored, decided) while the batch was out
            elif lead is None:  # gone from the CRM (or from the fetch): nothing to write; scored again if it comes back
                rescore.append(req.lead_id)
                outcomes[req.custom_id] = "discarded"
            elif lead.review_decision:  # a reviewer decided while the batch was out (the changed stream counts it)
                self.ledger.mark_human(lead.id, req.fingerprint)
                outcomes[req.custom_id] = "discarded"
            elif fingerprint(lead.inputs) != req.fingerprint or rubric.version != row.rubric_version:
                rescore.append(lead.id)  # scored again from its new inputs (or the new rubric), this very cycle
                outcomes[req.custom_id] = "discarded"
            else:
                item = items.get(req.custom_id) or BatchItem(req.custom_id, "canceled", detail=f"no result (batch {state.status})")
                hop, answer = self._hop(row, batch_id, provider, item)
                prior = [*req.prior, _dump(hop, answer)]
                repair = None
                if item.invalid is not None and self.chain.repair_attempts:  # the one repair, as on the synchronous path
                    repair = Repair(raw=item.invalid.raw or "", problem=str(item.invalid))
                work.append((req, Lead(id=lead.id, inputs=lead.inputs), prior, repair))
        if rescore:
            self.store.release(rescore)
        if outcomes:  # a discarded answer was still billed: its hops (and earlier steps') count in the ledger's spend
            paid = [
                (req.lead_id, hop)
                for req in pending
                if req.custom_id in outcomes
                for hop in [_load(p)[0] for p in req.prior]
                + ([self._hop(row, batch_id, provider, items[req.custom_id])[0]] if req.custom_id in items else [])
            ]
            self.store.settle(
                row.local_id, outcomes, sum(h.cost_usd for _, h in paid if h.mode == "batch"), sum(h.saved_usd for _, h in paid), paid=paid
            )
        if work:
            self._finish(row, work, counted, record)

    def _finish(
        self,
        row: BatchRow,
        work: list[tuple[RequestRow, Lead, Prior, Repair | None]],
        counted: Callable[[Lead, ScoreResult], None],
        record: Callable[[list[tuple[str, str, ScoreResult]]], None],
    ) -> None:
        """Decide, escalate or fall back for each answered request; record what is final."""
        nxt = row.step + 1
        onward = [w for w in work if w[3] is None and self._goes_on(w[2])]
        next_provider = batch_provider(self.scorer, self.config, nxt)
        if (
            next_provider is not None
            and onward
            and (self.config.chain[nxt].batch == "always" or len(onward) >= self.config.scoring.batch_min_leads)
        ):
            # The new batch supersedes these requests; a submission that never got through continues synchronously.
            left = {lead.id for lead in self.submit(nxt, next_provider, [(lead, prior) for _, lead, prior, _ in onward])}
            sent = {req.custom_id for req, lead, *_ in onward if lead.id not in left}
            work = [w for w in work if w[0].custom_id not in sent]
        rubric = self.scorer.rubric

        def finish(w: tuple[RequestRow, Lead, Prior, Repair | None]) -> tuple[RequestRow, Lead, ScoreResult]:
            req, lead, prior, repair = w
            prompt = build_prompt(rubric, lead, self.scorer.max_input_chars)
            result = self.chain.score(prompt, rubric, False, prior=[_load(p) for p in prior], repair=repair)
            return req, lead, self.scorer.guard.review(lead, rubric, result)

        with ThreadPoolExecutor(max_workers=self.config.scoring.concurrency, thread_name_prefix="batch") as pool:
            finished = list(pool.map(finish, work))
        for part in chunks(finished, RECORD_BATCH):
            record([(lead.id, req.fingerprint, result) for req, lead, result in part])
            cost = saved = 0.0
            for _, lead, result in part:
                counted(lead, result)
                mine = [h for h in result.hops if h.mode == "batch"]
                cost += sum(h.cost_usd for h in mine)
                saved += sum(h.saved_usd for h in mine)
            self.report.batch_saved_usd += saved
            self.store.settle(row.local_id, {req.custom_id: "applied" for req, _, _ in part}, cost, saved)

    def _goes_on(self, prior: Prior) -> bool:
        """This request's lead needs the next step: no valid answer, or an unsure one (the chain's own rule)."""
        hop, answer = _load(prior[-1])
        return answer is None or self.chain._escalate(hop.step, self.config.chain[hop.step], hop)

    def _hop(self, row: BatchRow, batch_id: str, provider: BatchCapable, item: BatchItem) -> tuple[Hop, ModelAnswer | None]:
        usage = item.reply.usage if item.reply is not None else item.usage
        price = self.chain.prices.get(provider.model)
        cost = batch_cost_usd(usage, price)
        if item.kind == "ok":
            outcome = HopOutcome.ok
        elif item.kind == "invalid":
            outcome = HopOutcome.invalid
        elif item.kind == "errored" and item.status is not None and 400 <= item.status < 500 and item.status not in (408, 409, 429):
            outcome = HopOutcome.rejected
        else:
            outcome = HopOutcome.unavailable
        detail = "" if item.kind == "ok" else f"batch {batch_id}: {item.kind}: {item.detail}"
        hop = Hop(
            step=row.step,
            provider=row.provider,
            model=provider.model,
            outcome=outcome,
            detail=redact(detail)[:500],
            latency_s=round((self.now() - row.created_at).total_seconds(), 3),
            usage=usage,
            cost_usd=cost,
            attempts=1,
            mode="batch",
            saved_usd=max(0.0, cost_usd(usage, price) - cost),
        )
        if item.reply is None:
            return hop, None
        answer, lp = item.reply.answer, item.reply.logprob_confidence
        conf = answer.confidence if lp is None else min(answer.confidence, lp)
        return hop.model_copy(
            update={"score": answer.score, "confidence": round(conf, 4), "stated_confidence": answer.confidence, "logprob_confidence": lp}
        ), answer

    def _refetch(self, lead_ids: list[str]) -> dict[str, CrmLead]:
        """The leads as the CRM has them now: their inputs (for the next step's prompt and the change check) and
        any review decision made while the batch was out."""
        if not lead_ids:
            return {}
        return {lead.id: lead for lead in self.locked(self.connector.fetch_ids(lead_ids))}


def _dump(hop: Hop, answer: ModelAnswer | None) -> dict[str, Any]:
    return {"hop": hop.model_dump(mode="json"), "answer": answer.model_dump(mode="json") if answer is not None else None}


def _load(d: dict[str, Any]) -> tuple[Hop, ModelAnswer | None]:
    return Hop.model_validate(d["hop"]), ModelAnswer.model_validate(d["answer"]) if d.get("answer") is not None else None
