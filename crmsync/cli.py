"""The command line. The only module that imports ``click``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .config import Config
from .console import config_option, err, load_for_command, open_ledger, out
from .errors import ConfigError, CrmsyncError



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
@click.option("--log-level", default="INFO", show_default=True)
def run(config_path: Path | None, once: bool, dry_run: bool, log_level: str) -> None:
    """Poll the CRM, score new leads, write the scores back."""
    from .app import build_connector, build_scorer
    from .cycle import Cycle
    from .daemon import Daemon

    config = _load(config_path, log_level)
    scorer = build_scorer(config)
    connector = build_connector(config)
    ledger = _ledger(config)
    cycle = Cycle(config, connector, ledger, scorer)
    try:
        if once:
            report = cycle.run(dry_run=dry_run)
            _show_results(report.results, config)
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


def _show_results(results: list[tuple[Any, Any]], config: Config) -> None:
    if not results:
        out.print("No leads needed a score.")
        return
    t = Table(title="Scored leads (advisory)")
    shown = [k for k in ("company", "title", "monthly_orders") if k in config.fields.inputs]
    for col in ["id", *shown, "score", "tier", "conf", "review", "why"]:
        t.add_column(col, overflow="fold", max_width=48 if col == "why" else None)
    from .cycle import result_values

    for lead, r in sorted(results, key=lambda lr: -(lr[1].score or -1)):
        t.add_row(lead.id, *[str(lead.inputs.get(k) or "") for k in shown], "-" if r.score is None else str(r.score), r.tier or "-",
                  "-" if r.confidence is None else f"{r.confidence:.2f}", "yes" if r.needs_review else "", result_values(r)["reasons"])
    out.print(t)


@cli.command()
@config_option
@click.option("--input", "-i", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV or JSON Lines (.jsonl) of leads.")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False, path_type=Path), help="Write results here (.csv or .jsonl).")
@click.option("--concurrency", type=int, help="Leads scored at once (default: [scoring] concurrency).")
def score(config_path: Path | None, input_path: Path, output_path: Path | None, concurrency: int | None) -> None:
    """Score leads from a file, with no CRM at all."""
    from rich.progress import Progress

    from .app import build_scorer
    from .batch import read_leads, result_row, summarize, write_results

    config = _load(config_path, "WARNING")
    leads = read_leads(input_path, config)
    scorer = build_scorer(config)
    results = []
    with Progress(console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("scoring", total=len(leads))
        for lead, result in scorer.score_many(leads, concurrency or config.scoring.concurrency):
            results.append((lead, result))
            progress.advance(task)
    order = {lead.id: n for n, lead in enumerate(leads)}
    results.sort(key=lambda lr: order[lr[0].id])
    if output_path:
        write_results(output_path, [result_row(lead, r) for lead, r in results])
    s = summarize(results)
    t = Table(title=f"{s['leads']} leads scored with rubric {scorer.rubric.version}")
    t.add_column("")
    t.add_column("count", justify="right")
    for tier, n in s["tiers"].items():
        t.add_row(f"tier {tier}", str(n))
    for key in ("flagged", "escalations", "fallbacks", "unscorable", "failures"):
        t.add_row(key if key != "flagged" else "flagged for review", str(s[key]))
    t.add_row("cost, total", f"${s['cost_total']:.6f}")
    t.add_row("cost per lead", f"${s['cost_per_lead']:.6f}")
    out.print(t)
    if output_path:
        out.print(f"results: {output_path}")
    sys.exit(1 if s["failures"] else 0)


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
    for state in ("written", "pending_write", "parked", "failed", "rescore", "human"):
        t.add_row(state.replace("_", " "), str(s["states"].get(state, 0)))
    t.add_row("flagged for review", str(s["flagged"]))
    for tier, n in sorted(s["tiers"].items()):
        t.add_row(f"tier {tier}", str(n))
    t.add_row("cost today (UTC)", f"${s['cost_today']:.6f} in {s['calls_today']} calls")
    t.add_row("cost in total", f"${s['cost_total']:.6f} in {s['calls_total']} calls")
    out.print(t)
    for lead_id, reason in s["parked"]:
        out.print(f"parked {lead_id}: {reason}", style="yellow", markup=False, highlight=False)


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
        err.print(str(exc), markup=False, highlight=False)
        sys.exit(2)
    except CrmsyncError as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        sys.exit(1)
