"""Prometheus metrics for the daemon (the ``metrics`` extra): what each cycle did and what it cost.

Counters live in a registry of their own (no global state), fed once per cycle from the CycleReport.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .cycle import CycleReport
from .learning.artefact import ArtefactError
from .learning.status import serving_drift


class Metrics:
    def __init__(self, state_dir: Path | None = None, drift_alarm: float = 0.25) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.state_dir, self.drift_alarm = state_dir, drift_alarm  # issue 15: the serving learned model's drift
        self.drift_psi = Gauge(
            "crmsync_learned_drift_psi",
            "Population stability of the learned model's inputs (largest) and scores against its training window",
            ["what"],
            registry=r,
        )
        self.drift_flag = Gauge("crmsync_learned_drift_alarm", "1 when that PSI is over [learn] drift_psi_alarm", registry=r)
        self.leads = Counter("crmsync_leads", "Leads handled, by outcome", ["outcome"], registry=r)
        self.tiers = Counter("crmsync_scored_leads_by_tier", "Scored leads, by tier", ["tier"], registry=r)
        self.flagged = Counter("crmsync_leads_flagged_for_review", "Results flagged needs-review", registry=r)
        self.escalations = Counter("crmsync_escalations", "Leads that a later chain step scored too", registry=r)
        self.fallbacks = Counter("crmsync_fallbacks", "Leads where a chain step failed or was cooling down", registry=r)
        self.writes = Counter("crmsync_crm_writes", "CRM record writes, by result", ["result"], registry=r)
        self.cost = Counter("crmsync_llm_cost_usd", "LLM spend in USD, from the [prices] table", registry=r)
        self.batched = Counter("crmsync_leads_sent_to_batch", "Leads sent to a provider's batch API", registry=r)
        self.batch_saving = Counter("crmsync_batch_saving_usd", "Batch results: synchronous price minus what they cost, USD", registry=r)
        self.calls = Counter(
            "crmsync_llm_calls", "Chain hops that called a model, by provider and outcome", ["provider", "model", "outcome"], registry=r
        )
        self.tokens = Counter("crmsync_llm_tokens", "Tokens, by provider and kind", ["provider", "model", "kind"], registry=r)
        self.cycle_seconds = Gauge("crmsync_last_cycle_duration_seconds", "Duration of the last cycle", registry=r)
        self.cycle_time = Gauge("crmsync_last_cycle_timestamp_seconds", "When the last cycle ended (unix time)", registry=r)
        self.cycle_ok = Gauge("crmsync_last_cycle_ok", "1 if the last cycle had no failure", registry=r)
        self.rubric_broken = Gauge("crmsync_rubric_edit_rejected", "1 while a broken rubric edit is being ignored", registry=r)

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def observe(self, report: CycleReport, seconds: float, rubric_error: str | None) -> None:
        for outcome in ("scored", "unscorable", "failed", "skipped", "human"):
            self.leads.labels(outcome).inc(getattr(report, outcome))
        for tier, n in report.tiers.items():
            self.tiers.labels(tier).inc(n)
        self.flagged.inc(report.flagged)
        self.escalations.inc(report.escalated)
        self.fallbacks.inc(report.fell_back)
        self.writes.labels("ok").inc(report.written)
        self.writes.labels("rejected").inc(report.write_errors)
        self.writes.labels("parked").inc(report.parked)
        self.cost.inc(report.cost_usd)
        self.batched.inc(report.batched)
        self.batch_saving.inc(report.batch_saved_usd)
        for (provider, model, outcome), n in report.calls.items():
            self.calls.labels(provider, model, outcome).inc(n)
        for (provider, model, kind), n in report.tokens.items():
            self.tokens.labels(provider, model, kind).inc(n)
        self.cycle_seconds.set(seconds)
        self.cycle_time.set(time.time())
        self.cycle_ok.set(1 if report.ok else 0)
        self.rubric_broken.set(1 if rubric_error else 0)
        self.observe_drift()

    def observe_drift(self) -> None:
        """The drift window the learned provider keeps next to its model; nothing while no learned model serves."""
        if self.state_dir is None:
            return
        try:
            found = serving_drift(self.state_dir, self.drift_alarm)
        except ArtefactError:
            return  # `crmsync status` says what is wrong with the model folder
        if found is None or not found[1].enough:
            return
        report = found[1]
        self.drift_psi.labels("inputs").set(max(report.inputs.values(), default=0.0))
        if report.scores is not None:
            self.drift_psi.labels("scores").set(report.scores)
        self.drift_flag.set(1 if report.alarm else 0)
