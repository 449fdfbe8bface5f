"""`crmsync score`: score a CSV or JSON Lines file, no CRM needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .console import config_option, err, load_for_command, log_level_option, out

_load = load_for_command


@click.command()
@config_option
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or JSON Lines (.jsonl) of leads. CSV may be comma, semicolon or tab separated (read from the header).",
)
@click.option(
    "--output",
    "-o",
    "output_path",
    type=click.Path(path_type=Path),
    help="Write results here (.csv or .jsonl), one row per lead as it finishes. Run again with the same file to "
    "resume: leads already in it are skipped, failed ones retried. Rows are put into input order at the end.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The input's text encoding, e.g. cp1252 or latin-1 for Excel's plain 'CSV'. A UTF-8 BOM is fine.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),  # 64: [scoring] concurrency's own cap
    help="Leads scored at once, 1 to 64 (default: [scoring] concurrency).",
)
@click.option(
    "--batch",
    "batch_api",
    is_flag=True,
    help="Through the first chain step's batch API at about half price; waits for the results (up to 24 h). Needs --output.",
)
@log_level_option("WARNING")
def score(
    config_path: Path | None,
    input_path: Path,
    output_path: Path | None,
    encoding: str,
    concurrency: int | None,
    batch_api: bool,
    log_level: str,
) -> None:
    """Score leads from a file, with no CRM at all."""
    import os
    import signal

    from rich.progress import Progress

    from . import scorefile as batch
    from .app import build_scorer

    try:
        batch.text_encoding(encoding)
    except LookupError:
        raise click.BadParameter(
            f"unknown encoding {encoding!r} (try utf-8, cp1252, latin-1 or utf-16)", param_hint="'--encoding'"
        ) from None
    if batch_api and output_path is None:
        raise click.UsageError("--batch needs --output: the results, and the record of what is out, are kept beside it")
    config = _load(config_path, log_level)
    results = batch.ResultsFile(output_path) if output_path else None
    try:  # every check before the first paid call
        if output_path:
            batch.check_output_path(output_path, input_path)
        lead_file = batch.read_lead_file(input_path, config, encoding)
        for warning in lead_file.warnings:
            err.print(f"warning: {warning}", style="yellow", markup=False, highlight=False, soft_wrap=True)
        scorer = build_scorer(config)
        click.get_current_context().call_on_close(scorer.close)  # on every way out, exits and errors included
        resumed = results.open() if results else batch.Resumed()
    except batch.FileProblem as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    leads = lead_file.leads
    todo = [lead for lead in leads if lead.id not in resumed.done]
    if results and (resumed.done or resumed.retried or resumed.cut_off):
        again = [f"{resumed.retried} that failed before are tried again"] if resumed.retried else []
        again += ["a last row cut off mid-write was dropped; that lead is scored again"] if resumed.cut_off else []
        err.print(
            f"resuming: {len(leads) - len(todo)} of {len(leads)} leads already in {output_path}" + "".join(f"; {a}" for a in again),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if len(resumed.rubrics) > 1 or (resumed.rubrics and scorer.rubric.version not in resumed.rubrics):
            versions = ", ".join(f"{v} ({n})" for v, n in sorted(resumed.rubrics.items()))
            err.print(
                f"note: rows already in {output_path} were scored with rubric {versions}; this run uses {scorer.rubric.version}",
                style="yellow",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    tally = batch.Tally()
    stopped: list[int] = []

    def stop_gently(signum: int, _frame: Any) -> None:  # like the daemon: no new lead starts, those in flight are kept
        if stopped:  # the second Ctrl+C: quit now, without waiting for requests in flight
            if results:
                results.close()
                err.print(
                    f"interrupted: {results.written} result(s) of this run are in {output_path}; run the same command "
                    "again to resume (leads that were in flight are scored again)",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
            sys.stderr.flush()
            os._exit(128 + signum)
        stopped.append(signum)
        err.print(
            "stopping: no new lead starts; the ones in flight finish and are written (Ctrl+C again to quit now)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    handlers = {sig: signal.signal(sig, stop_gently) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Progress(console=err, disable=not err.is_terminal) as progress:
            task = progress.add_task("scoring", total=len(todo))

            def done(lead: Any, result: Any) -> None:
                tally.add(result)
                if results:
                    results.write(batch.result_row(lead, result))
                progress.advance(task)

            if batch_api and output_path:  # issue 14 (crmsync/scorefile_batch.py)
                from .scorefile_batch import score_in_batches

                say = lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
                saved = score_in_batches(config, scorer, leads, todo, output_path, done, lambda: bool(stopped), say)
                say(f"batch saving: ${saved:.6f} against synchronous prices")
            else:
                for lead, result in scorer.score_many(todo, concurrency or config.scoring.concurrency, stop=lambda: bool(stopped)):
                    done(lead, result)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if results:
            results.close()
    if results and (note := results.sort({lead.id: n for n, lead in enumerate(leads)})):
        err.print(f"note: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    if not todo:
        out.print(f"nothing to score: all {len(leads)} leads are already in {output_path}", markup=False, soft_wrap=True)
        sys.exit(0)
    t = Table(title=tally.headline(scorer.rubric.version, planned=len(todo)))
    t.add_column("")
    t.add_column("count", justify="right")
    for tier, n in sorted(tally.tiers.items()):
        t.add_row(f"tier {tier}", str(n))
    for label, n in (
        ("flagged for review", tally.flagged),
        ("escalations", tally.escalations),
        ("fallbacks", tally.fallbacks),
        ("unscorable", tally.unscorable),
        ("failures", tally.failures),
    ):
        t.add_row(label, str(n))
    t.add_row("cost, total", f"${tally.cost_total:.6f}")
    t.add_row("cost per lead", f"${tally.cost_per_lead:.6f}")
    out.print(t)
    if tally.failures and (why := scorer.chain.outage_summary()):  # the cause, on its own line: too long for a title
        out.print(why, style="yellow", markup=False, highlight=False, soft_wrap=True)
        if output_path:
            out.print("the failed leads are tried again when you run the same command again", markup=False)
    if len(todo) < len(leads):
        out.print(f"{len(leads) - len(todo)} more lead(s) were already in {output_path} and not scored again", markup=False)
    if output_path:
        out.print(f"results: {output_path}", markup=False)
    if stopped:
        err.print(
            f"stopped: {tally.leads} of {len(todo)} leads done"
            + (f" and written to {output_path}; run the same command again to resume" if output_path else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(128 + stopped[0])
    sys.exit(1 if tally.failures else 0)
