"""The command line: the click group and its commands. ``click`` stays in the CLI modules (this one,
crmsync/console.py, crmsync/evaluation/cli.py and the other cli_* command modules); an import-linter
contract keeps it out of the core."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .console import config_option, err, hold_state_dir, load_for_command, log_level_option, open_ledger, out
from .errors import ConfigError, CrmsyncError
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
@click.option(
    "--show",
    type=click.Choice(["some", "all"]),
    default="some",
    show_default=True,
    help="With --once: the first and the flagged scored leads, or every one.",
)
def run(config_path: Path | None, once: bool, dry_run: bool, log_level: str, show: str) -> None:
    """Poll the CRM, score new leads, write the scores back."""
    from .app import build_connector, build_scorer
    from .cycle import SHOWN_ROWS, Cycle
    from .daemon import Daemon

    config = _load(config_path, log_level)
    hold_state_dir(config, "run")  # one instance per state dir: a second one would pay twice
    scorer = build_scorer(config)
    click.get_current_context().call_on_close(scorer.close)  # on every way out, exits and errors included
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
                raise ConfigError(
                    "[daemon] metrics_port is set but prometheus-client is not installed: pip install 'crmsync[metrics]'"
                ) from None
            observer = Metrics(config.state_dir, config.learn.drift_psi_alarm)  # the learned model's drift too (issue 15)
            observer.serve(config.daemon.metrics_port, config.daemon.metrics_address)
        sys.exit(Daemon(cycle, config.daemon.interval_s, dry_run=dry_run, observer=observer).run_forever())
    finally:
        connector.close()
        ledger.close()


def _show_results(report: Any) -> None:
    """The kept rows (the first ones and the flagged ones, or all with --show all), best score first."""
    if not report.rows:
        out.print(
            f"{report.batched} lead(s) sent to a batch; their scores land at a later cycle."
            if report.batched
            else "No leads needed a score."
        )
        return
    t = Table(title="Scored leads (advisory)")
    shown = list(report.rows[0].inputs)
    for col in ["id", *shown, "score", "tier", "conf", "review", "why"]:
        t.add_column(col, overflow="fold", max_width=48 if col == "why" else None)
    for r in sorted(report.rows, key=lambda r: -(r.score if r.score is not None else -1)):
        t.add_row(
            r.lead_id,
            *[r.inputs.get(k, "") for k in shown],
            "-" if r.score is None else str(r.score),
            r.tier or "-",
            "-" if r.confidence is None else f"{r.confidence:.2f}",
            "yes" if r.needs_review else "",
            r.why,
        )
    out.print(t)
    if report.rows_hidden:
        out.print(f"({report.rows_hidden} more lead(s) not shown; `--show all` prints every one)")


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
    for state in ("written", "pending_write", "parked", "failed", "rescore", "human", "external", "batched"):
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
        out.print(
            f"provider {f['provider']}: last failure {when} UTC ({f['outcome']}): {f['cause'] or 'cause not kept'}; {answered}",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for line in batch_lines(ledger):  # issue 14: outstanding provider batches, their age and counts; the saving
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    from .learning.status import drift_lines  # issue 15: the serving learned model's drift against its training window

    for line in drift_lines(config.state_dir, config.learn.drift_psi_alarm):
        out.print(line, style="yellow" if "DRIFT" in line else None, markup=False, highlight=False, soft_wrap=True)


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
def rescore(
    config_path: Path | None, rubric_version: str | None, tier: str | None, lead_ids: tuple[str, ...], all_leads: bool, include_parked: bool
) -> None:
    """Ask for fresh scores at the next cycle (after a rubric change). Reviewed leads are never touched."""
    if not (rubric_version or tier or lead_ids or all_leads):
        raise click.UsageError("give a filter (--rubric-version, --tier, --lead) or --all")
    config = _load(config_path, "WARNING")
    hold_state_dir(config, "rescore")
    n = _ledger(config).request_rescore(
        rubric_version=rubric_version, tier=tier, lead_ids=list(lead_ids) or None, include_parked=include_parked
    )
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


# Commands in their own modules, attached here like any other command group.
from .cli_batches import batch_lines, batches  # noqa: E402  (issue 14: crmsync batches list|cancel)
from .cli_ledger import ledger  # noqa: E402
from .cli_plugins import plugins  # noqa: E402
from .cli_score import score  # noqa: E402
from .evaluation.cli import register as _register_eval  # noqa: E402

cli.add_command(score)
cli.add_command(ledger)
cli.add_command(plugins)
cli.add_command(batches)
_register_eval(cli)
from .cli_train import register as _register_train  # noqa: E402  (issue 15: crmsync train ...)

_register_train(cli)


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
