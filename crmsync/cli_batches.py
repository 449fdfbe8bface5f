"""`crmsync batches list|cancel`, and the lines `crmsync status` shows about provider batches (issue 14)."""

from __future__ import annotations

from pathlib import Path

import click

from .batch_store import BatchRow, BatchStore, age
from .console import config_option, load_for_command, open_ledger, out
from .errors import CrmsyncError, ProviderRejected, ProviderUnavailable
from .state import Ledger


def describe(row: BatchRow) -> str:
    """'batch batch_abc (fast, step 1): 2,000 leads, out 3 h 12 min, in_progress {…}'."""
    counts = ", ".join(f"{k} {v}" for k, v in row.counts.items() if v) or "no counts yet"
    ident = row.batch_id or f"{row.local_id} (submission not confirmed yet)"
    return (
        f"batch {ident} ({row.provider}, step {row.step + 1}): {row.requests:,} leads, out {age(row)}, "
        f"{row.provider_status or row.state}: {counts}"
    )


def batch_lines(ledger: Ledger, *, say_none: bool = False) -> list[str]:
    """For `crmsync status`: every outstanding batch with its age and counts, and what batches saved so far."""
    store = BatchStore(ledger)
    lines = [describe(row) for row in store.outstanding()] or (["no outstanding batches"] if say_none else [])
    totals = store.totals()
    if totals["batches"]:
        lines.append(
            f"batch API: {int(totals['batches'])} batches, results cost ${totals['cost_usd']:.6f}, "
            f"saving ${totals['saved_usd']:.6f} against synchronous prices"
        )
    return lines


@click.group()
def batches() -> None:
    """Leads out at the providers' batch APIs (README: Batch mode)."""


@batches.command("list")
@config_option
def batches_list(config_path: Path | None) -> None:
    """Outstanding batches with their age and request counts."""
    ledger = open_ledger(load_for_command(config_path, "WARNING"))
    try:
        lines = batch_lines(ledger, say_none=True)
    finally:
        ledger.close()
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@batches.command("cancel")
@config_option
@click.argument("batch_ids", nargs=-1)
@click.option("--all", "all_batches", is_flag=True, help="Cancel every outstanding batch.")
def batches_cancel(config_path: Path | None, batch_ids: tuple[str, ...], all_batches: bool) -> None:
    """Cancel outstanding batches (by provider batch id, or --all). Their requests that have not run come back as
    cancelled at the next cycle, and those leads are scored by the chain's next step or retried."""
    if not batch_ids and not all_batches:
        raise click.UsageError("name the batches to cancel (see `crmsync batches list`), or pass --all")
    from .app import build_scorer

    config = load_for_command(config_path, "WARNING")
    ledger = open_ledger(config)
    try:
        store = BatchStore(ledger)
        rows = [r for r in store.outstanding() if all_batches or r.batch_id in batch_ids]
        unknown = sorted(set(batch_ids) - {r.batch_id for r in rows})
        if unknown:
            raise CrmsyncError(f"no outstanding batch {', '.join(unknown)}; `crmsync batches list` shows them")
        if not rows:
            out.print("no outstanding batches")
            return
        scorer = build_scorer(config)
        failed = 0
        try:
            for row in rows:
                provider = scorer.chain.providers.get(row.provider)
                cancel = getattr(provider, "cancel_batch", None)
                if row.batch_id is None or cancel is None:
                    out.print(
                        f"{describe(row)}: cannot be cancelled yet; the next cycle confirms it first",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
                    continue
                try:
                    state = cancel(row.batch_id)
                except (ProviderUnavailable, ProviderRejected) as exc:
                    failed += 1
                    out.print(f"batch {row.batch_id}: not cancelled: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
                    continue
                store.polled(row.local_id, state.status, state.counts)
                out.print(
                    f"batch {row.batch_id} ({row.provider}, {row.requests:,} leads): {state.status}; what did not run "
                    "is scored by the next step or retried at the next cycle",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        finally:
            scorer.close()
        if failed:
            raise CrmsyncError(f"{failed} batch(es) could not be cancelled")
    finally:
        ledger.close()
