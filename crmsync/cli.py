"""The command line. The only module that imports ``click``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .console import config_option, err, load_for_command, log_level_option, open_ledger, out
from .errors import ConfigError, CrmsyncError
from .console import hold_state_dir
from .instance import stop_on_signals



_load = load_for_command
_ledger = open_ledger


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crmsync")
def cli() -> None:
    """crmsync: advisory LLM lead scores, written back into your CRM."""


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="Run one cycle and exit (non-zero when something failed).")
@click.option("--dry-run", is_flag=True, help="Score and report, but write nothing to the CRM or the ledger.")
@log_level_option()
@click.option("--show", type=click.Choice(["some", "all"]), default="some", show_default=True,
              help="With --once: the first and the flagged scored leads, or every one.")
def run(config_path: Path | None, once: bool, dry_run: bool, log_level: str, show: str) -> None:
    """Poll the CRM, score new leads, write the scores back."""
    from .app import build_connector, build_scorer
    from .cycle import SHOWN_ROWS, Cycle
    from .daemon import Daemon

    config = _load(config_path, log_level)
    hold_state_dir(config, "run")  # one instance per state dir: a second one would pay twice
    scorer = build_scorer(config)
    connector = build_connector(config)
    ledger = _ledger(config)
    if not dry_run:
        ledger.probe_writable()  # before any LLM call: a ledger that cannot record a score must cost nothing
    cycle = Cycle(config, connector, ledger, scorer)
    try:
        if once:
            stop = stop_on_signals()  # SIGTERM/SIGINT: in-flight leads finish, are stored and written; exit 0
            report = cycle.run(dry_run=dry_run, rows=None if show == "all" else SHOWN_ROWS, stop=stop)
            _show_results(report)
            out.print(report.line(), style="bold", markup=False, soft_wrap=True)
            for e in report.errors:
                err.print(f"error: {e}", style="red", markup=False, highlight=False)
            sys.exit(0 if report.ok else 1)
        observer = None
        if config.daemon.metrics_port:
            try:
                from .metrics import Metrics
            except ImportError:
                raise ConfigError("[daemon] metrics_port is set but prometheus-client is not installed: pip install 'crmsync[metrics]'") from None
            observer = Metrics()
            observer.serve(config.daemon.metrics_port, config.daemon.metrics_address)
        sys.exit(Daemon(cycle, config.daemon.interval_s, dry_run=dry_run, observer=observer).run_forever())
    finally:
        connector.close()
        ledger.close()


def _show_results(report: Any) -> None:
    """The kept rows (the first ones and the flagged ones, or all with --show all), best score first."""
    if not report.rows:
        out.print("No leads needed a score.")
        return
    t = Table(title="Scored leads (advisory)")
    shown = list(report.rows[0].inputs)
    for col in ["id", *shown, "score", "tier", "conf", "review", "why"]:
        t.add_column(col, overflow="fold", max_width=48 if col == "why" else None)
    for r in sorted(report.rows, key=lambda r: -(r.score if r.score is not None else -1)):
        t.add_row(r.lead_id, *[r.inputs.get(k, "") for k in shown], "-" if r.score is None else str(r.score), r.tier or "-",
                  "-" if r.confidence is None else f"{r.confidence:.2f}", "yes" if r.needs_review else "", r.why)
    out.print(t)
    if report.rows_hidden:
        out.print(f"({report.rows_hidden} more lead(s) not shown; `--show all` prints every one)")


@cli.command()
@config_option
@click.option("--input", "-i", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV or JSON Lines (.jsonl) of leads. CSV may be comma, semicolon or tab separated (read from the header).")
@click.option("--output", "-o", "output_path", type=click.Path(path_type=Path),
              help="Write results here (.csv or .jsonl), one row per lead as it finishes. Run again with the same file to "
                   "resume: leads already in it are skipped, failed ones retried. Rows are put into input order at the end.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="The input's text encoding, e.g. cp1252 or latin-1 for Excel's plain 'CSV'. A UTF-8 BOM is fine.")
@click.option("--concurrency", type=click.IntRange(1, 64),  # 64: [scoring] concurrency's own cap
              help="Leads scored at once, 1 to 64 (default: [scoring] concurrency).")
@log_level_option("WARNING")
def score(config_path: Path | None, input_path: Path, output_path: Path | None, encoding: str, concurrency: int | None,
          log_level: str) -> None:
    """Score leads from a file, with no CRM at all."""
    import os
    import signal

    from rich.progress import Progress

    from . import batch
    from .app import build_scorer

    try:
        batch.text_encoding(encoding)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {encoding!r} (try utf-8, cp1252, latin-1 or utf-16)", param_hint="'--encoding'") from None
    config = _load(config_path, log_level)
    results = batch.ResultsFile(output_path) if output_path else None
    try:  # every check before the first paid call
        if output_path:
            batch.check_output_path(output_path, input_path)
        lead_file = batch.read_lead_file(input_path, config, encoding)
        for warning in lead_file.warnings:
            err.print(f"warning: {warning}", style="yellow", markup=False, highlight=False, soft_wrap=True)
        scorer = build_scorer(config)
        resumed = results.open() if results else batch.Resumed()
    except batch.FileProblem as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    leads = lead_file.leads
    todo = [lead for lead in leads if lead.id not in resumed.done]
    if results and (resumed.done or resumed.retried or resumed.cut_off):
        again = [f"{resumed.retried} that failed before are tried again"] if resumed.retried else []
        again += ["a last row cut off mid-write was dropped; that lead is scored again"] if resumed.cut_off else []
        err.print(f"resuming: {len(leads) - len(todo)} of {len(leads)} leads already in {output_path}" + "".join(f"; {a}" for a in again),
                  markup=False, highlight=False, soft_wrap=True)
        if len(resumed.rubrics) > 1 or (resumed.rubrics and scorer.rubric.version not in resumed.rubrics):
            versions = ", ".join(f"{v} ({n})" for v, n in sorted(resumed.rubrics.items()))
            err.print(f"note: rows already in {output_path} were scored with rubric {versions}; this run uses {scorer.rubric.version}",
                      style="yellow", markup=False, highlight=False, soft_wrap=True)
    tally = batch.Tally()
    stopped: list[int] = []

    def stop_gently(signum: int, _frame: Any) -> None:  # like the daemon: no new lead starts, those in flight are kept
        if stopped:  # the second Ctrl+C: quit now, without waiting for requests in flight
            if results:
                results.close()
                err.print(f"interrupted: {results.written} result(s) of this run are in {output_path}; run the same command "
                          "again to resume (leads that were in flight are scored again)", markup=False, highlight=False, soft_wrap=True)
            sys.stderr.flush()
            os._exit(128 + signum)
        stopped.append(signum)
        err.print("stopping: no new lead starts; the ones in flight finish and are written (Ctrl+C again to quit now)",
                  markup=False, highlight=False, soft_wrap=True)

    handlers = {sig: signal.signal(sig, stop_gently) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Progress(console=err, disable=not err.is_terminal) as progress:
            task = progress.add_task("scoring", total=len(todo))
            for lead, result in scorer.score_many(todo, concurrency or config.scoring.concurrency, stop=lambda: bool(stopped)):
                tally.add(result)
                if results:
                    results.write(batch.result_row(lead, result))
                progress.advance(task)
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
    for label, n in (("flagged for review", tally.flagged), ("escalations", tally.escalations), ("fallbacks", tally.fallbacks),
                     ("unscorable", tally.unscorable), ("failures", tally.failures)):
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
        err.print(f"stopped: {tally.leads} of {len(todo)} leads done" + (f" and written to {output_path}; run the same command "
                  "again to resume" if output_path else ""), markup=False, highlight=False, soft_wrap=True)
        sys.exit(128 + stopped[0])
    sys.exit(1 if tally.failures else 0)


@cli.command()
@config_option
def status(config_path: Path | None) -> None:
    """Summarise the ledger: scored, pending writes, parked leads with reasons, cost."""
    config = _load(config_path, "WARNING")
    ledger = _ledger(config)
    s = ledger.summary()
    t = Table(title=f"crmsync ledger ({config.crm.type})")
    t.add_column("")
    t.add_column("value", justify="right")
    for state in ("written", "pending_write", "parked", "failed", "rescore", "human", "external"):
        label = "adopted (scored elsewhere)" if state == "external" else state.replace("_", " ")
        t.add_row(label, str(s["states"].get(state, 0)))
    t.add_row("flagged for review", str(s["flagged"]))
    for tier, n in sorted(s["tiers"].items()):
        t.add_row(f"tier {tier}", str(n))
    t.add_row("cost today (UTC)", f"${s['cost_today']:.6f} in {s['calls_today']} calls")
    t.add_row("cost in total", f"${s['cost_total']:.6f} in {s['calls_total']} calls")
    changed, unscored = ledger.bookmark("changed"), ledger.bookmark("unscored")
    if changed and changed[0]:
        t.add_row("changes read up to", f"{changed[0]:%Y-%m-%d %H:%M:%S} UTC")
    if unscored:
        t.add_row("unscored scan", f"after id {unscored[1]}" if unscored[1] else "from the first (last scan reached the end)")
    out.print(t)
    for lead_id, reason in s["parked"]:
        out.print(f"parked {lead_id}: {reason}", style="yellow", markup=False, highlight=False)
    for f in ledger.provider_failures():  # an outage must be visible here, not only in the ledger
        when = f["at"][:19].replace("T", " ")
        answered = f"last answer {f['last_answer'][:19].replace('T', ' ')} UTC" if f["last_answer"] else "no answer recorded"
        out.print(f"provider {f['provider']}: last failure {when} UTC ({f['outcome']}): {f['cause'] or 'cause not kept'}; {answered}",
                  style="yellow", markup=False, highlight=False, soft_wrap=True)


@cli.command()
@config_option
def check(config_path: Path | None) -> None:
    """Validate the config, the rubric, provider keys, and the CRM's fields. Exit 1 on any problem."""
    from .checks import run_checks

    config = _load(config_path, "WARNING")
    problems = run_checks(config)
    for p in problems:
        color = "red" if p.severity == "error" else "yellow"
        out.print(f"{p.severity} {p.where}: {p.message}\n    fix: {p.fix}", style=color, markup=False, highlight=False)
    errors = [p for p in problems if p.severity == "error"]
    out.print("all checks passed" if not errors else f"{len(errors)} problem(s)")
    sys.exit(1 if errors else 0)


@cli.command()
@config_option
@click.option("--rubric-version", help="Only leads scored with this rubric version.")
@click.option("--tier", help="Only leads in this tier.")
@click.option("--lead", "lead_ids", multiple=True, help="Only this lead id (repeatable).")
@click.option("--all", "all_leads", is_flag=True, help="Every scored lead (needs no other filter).")
@click.option("--include-parked", is_flag=True, help="Also leads whose write was parked.")
def rescore(config_path: Path | None, rubric_version: str | None, tier: str | None, lead_ids: tuple[str, ...], all_leads: bool, include_parked: bool) -> None:
    """Ask for fresh scores at the next cycle (after a rubric change). Reviewed leads are never touched."""
    if not (rubric_version or tier or lead_ids or all_leads):
        raise click.UsageError("give a filter (--rubric-version, --tier, --lead) or --all")
    config = _load(config_path, "WARNING")
    hold_state_dir(config, "rescore")
    n = _ledger(config).request_rescore(rubric_version=rubric_version, tier=tier, lead_ids=list(lead_ids) or None, include_parked=include_parked)
    out.print(f"{n} lead(s) will be rescored at the next cycle")


@cli.group()
def fields() -> None:
    """Manage the CRM's output fields."""


@fields.command("create")
@config_option
def fields_create(config_path: Path | None) -> None:
    """Create the missing output fields in the CRM (idempotent)."""
    from .app import build_connector

    config = _load(config_path, "INFO")
    connector = build_connector(config)
    try:
        created = connector.create_fields()
    except NotImplementedError as exc:
        out.print(str(exc))
        sys.exit(1)
    finally:
        connector.close()
    out.print("created: " + ", ".join(created) if created else "nothing to create: every output field exists")


@cli.group()
def ledger() -> None:
    """Back up and recover the ledger (README, Operations: Recovery)."""


@ledger.command("backup")
@config_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def ledger_backup(config_path: Path | None, dest: Path) -> None:
    """Copy the ledger to DEST with SQLite's online backup: safe while crmsync runs, so it takes no lock."""
    config = _load(config_path, "WARNING")
    source = _ledger(config)
    try:
        size = source.backup(dest)
    finally:
        source.close()
    out.print(f"ledger {source.path} backed up to {dest} ({size} bytes)", markup=False, highlight=False, soft_wrap=True)


@ledger.command("rebuild")
@config_option
def ledger_rebuild(config_path: Path | None) -> None:
    """Rebuild the ledger from the CRM after losing it: no LLM call, nothing rescored whose inputs are unchanged."""
    from .app import build_connector
    from .rebuild import rebuild

    config = _load(config_path, "INFO")
    hold_state_dir(config, "ledger rebuild")
    connector = build_connector(config)
    store = _ledger(config)
    try:
        counts = rebuild(config, connector, store)
    finally:
        connector.close()
        store.close()
    out.print(
        f"ledger rebuilt from the CRM: {counts['written']} scored by crmsync with unchanged inputs (kept), "
        f"{counts['rescore']} with changed inputs (rescored next cycle), {counts['adopted']} scored without an input "
        f"hash (adopted, left alone), {counts['human']} decided by a reviewer, {counts['unscored']} unscored, "
        f"{counts['kept']} already in the ledger. No LLM call was made.", markup=False, highlight=False, soft_wrap=True)
    if not config.fields.outputs.input_hash:
        out.print("note: [fields.outputs] input_hash is not mapped, so crmsync cannot tell its own scores from others'; "
                  "map it (see config.example.toml) so a future rebuild can.", style="yellow", markup=False, highlight=False)


# eval and labels live in their own package; registered here like any other command group.
from .evaluation.cli import register as _register_eval  # noqa: E402

_register_eval(cli)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except ConfigError as exc:
        err.print("configuration error", style="red")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)  # a wrapped path cannot be copied
        sys.exit(2)
    except CrmsyncError as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)  # paths unbroken
        sys.exit(exc.exit_code)  # 1; 3: another crmsync holds the state dir; 4: the ledger cannot be used
