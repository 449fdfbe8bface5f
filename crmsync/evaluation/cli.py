"""`crmsync eval` and `crmsync labels pull|export`. Registered onto the main group by ``register(cli)``."""

from __future__ import annotations

import csv
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from ..console import config_option as _config_option
from ..console import err, hold_state_dir, load_for_command, open_ledger, out

if TYPE_CHECKING:
    from ..config import Config
    from ..rubric import Rubric
    from ..state import Ledger

# chat-jsonl export: the assistant's answer for a label. A label says qualified or not, not a score, so we
# use the middle of the score range the label implies under the rubric's tiers (see assistant_answer).
CONFIDENCE_BY_SOURCE = {"review": 0.9, "conversion": 0.8}


def _consoles() -> tuple[Console, Console]:
    return out, err


def _load(config_path: Path | None) -> Config:
    return load_for_command(config_path, "WARNING")


def _ledger(config: Config) -> Ledger:
    return open_ledger(config)


def eval_command(
    config_path: Path | None,
    labels_path: Path,
    compare_prompt: Path | None,
    html_path: Path | None,
    reruns: int,
    concurrency: int | None,
    json_path: Path | None = None,
    learned: bool = False,
    escalate_below: float | None = None,
) -> int:
    from rich.progress import Progress

    from ..app import build_scorer
    from ..rubric import load_rubric
    from .report import html_report, print_report
    from .run import CACHE_FILE, EvalCache, chain_signature, evaluate_run, read_labels, score_labeled, tier_changes

    out, err = _consoles()
    config = _load(config_path)
    labeled = read_labels(labels_path, config)
    if learned:  # issue 15: the rubric chain, the learned step, the cascade (+ calibrated) side by side (sidebyside.py)
        from .sidebyside import eval_learned

        return eval_learned(
            config, labeled, labels_path, html_path, json_path, concurrency or config.scoring.concurrency, escalate_below, out, err
        )
    cand = load_rubric(compare_prompt) if compare_prompt else None  # before any provider is opened
    scorer = build_scorer(config)
    current = scorer.rubric
    rubrics = {f"current ({current.version})": current}
    if cand is not None:
        rubrics[f"candidate ({cand.version})"] = cand
    sig = chain_signature(config)
    runs = {}
    try:
        cache = EvalCache(config.state_dir / CACHE_FILE)
    except BaseException:
        scorer.close()
        raise
    try:
        with Progress(console=err, disable=not err.is_terminal) as progress:
            for name, rubric in rubrics.items():
                task = progress.add_task(f"scoring {name}", total=len(labeled) * reruns)
                runs[name] = score_labeled(
                    scorer,
                    rubric,
                    labeled,
                    cache,
                    sig,
                    reruns,
                    concurrency or config.scoring.concurrency,
                    functools.partial(progress.advance, task),
                )
    finally:
        cache.close()
        scorer.close()
    evs = {name: evaluate_run(r, config) for name, r in runs.items()}
    changes = tier_changes(*runs.values()) if compare_prompt else None
    called = sum(r.called for r in runs.values())
    cached = sum(r.cached for r in runs.values())
    title = f"crmsync eval: {len(labeled)} labeled leads, qualified = tier {' or '.join(config.eval.qualified_tiers)}"
    print_report(out, title, evs, changes)
    out.print(f"chain {sig}; scored now {called}, from cache {cached} ({config.state_dir / CACHE_FILE})", highlight=False)
    if html_path:
        meta = {"labels": str(labels_path), "config": config.source, "chain": sig, "reruns": str(reruns)}
        html_path.write_text(html_report(title, evs, meta, changes), encoding="utf-8")
        out.print(f"HTML report: {html_path}")
    if json_path:
        from .report import as_dict

        json_path.write_text(
            json.dumps(
                {
                    "runs": {n: as_dict(e) for n, e in evs.items()},
                    "changed": changes,
                    "scored_now": called,
                    "from_cache": cached,
                    "chain": sig,
                },
                indent=1,
                default=str,
            ),
            encoding="utf-8",
        )
    # Targets: on the candidate when comparing (that is what is about to ship), else on the current rubric.
    judged = evs[list(evs)[-1]]
    return 0 if judged.passed else 1


def merged_labels(ledger: Ledger) -> list[dict[str, Any]]:
    """One label per lead: a reviewer's decision wins over a conversion signal."""
    best: dict[str, dict[str, Any]] = {}
    for lab in ledger.labels():
        cur = best.get(lab["lead_id"])
        if cur is None or (lab["source"] == "review" and cur["source"] != "review"):
            best[lab["lead_id"]] = lab
    return [best[k] for k in sorted(best)]


def assistant_answer(rubric: Rubric, qualified_tiers: list[str], outcome: str, source: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The model answer a label stands for. Qualified: the middle of [lowest qualified tier's cut, 100];
    unqualified: the middle of [0, that cut). E.g. tiers A=80 B=60 with qualified A,B: 80 and 30."""
    from ..scoring import looks_like_instructions

    cuts = [c for t, c in rubric.tiers.items() if t in qualified_tiers] or [max(rubric.tiers.values())]
    low = min(cuts)
    score = round((low + 100) / 2) if outcome == "qualified" else max(0, round((low - 1) / 2))
    missing = [k for k in ("monthly_orders", "employees", "industry") if k in inputs and inputs.get(k) in (None, "")]
    who = "a reviewer" if source == "review" else "the lead's conversion"
    return {
        "score": score,
        "confidence": CONFIDENCE_BY_SOURCE.get(source, 0.8),
        "reasons": [f"{outcome} according to {who}"],
        "missing_or_contradictory": missing,
        "lead_text_contains_instructions": looks_like_instructions(inputs),
    }


def register(cli_group: click.Group) -> None:
    """Add `eval` and the `labels` group to crmsync's command group."""

    @cli_group.command("eval")
    @_config_option
    @click.option(
        "--labels",
        "labels_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="CSV or JSONL of leads (columns as the CRM fields in [fields] inputs) with an `outcome` column.",
    )
    @click.option(
        "--compare-prompt",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A candidate rubric: score with both, show metrics side by side and the leads whose tier changed.",
    )
    @click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write a self-contained HTML report.")
    @click.option(
        "--reruns",
        type=click.IntRange(1, 20),
        default=1,
        show_default=True,
        help="Score each lead N times (N >= 2 reports tier stability).",
    )
    @click.option("--concurrency", type=int, help="Leads scored at once (default: [scoring] concurrency).")
    @click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the metrics as JSON (for CI).")
    @click.option(
        "--learned",
        is_flag=True,
        help="Side by side on the same held-out leads: the rubric chain, the learned step, the "
        "cascade, and each calibrated (needs `crmsync train model --promote`).",
    )
    @click.option(
        "--escalate-below",
        type=click.FloatRange(0, 1),
        help="With --learned: the cascade's learned-step threshold (default: the config's, else 0.65).",
    )
    def eval_(
        config_path: Path | None,
        labels_path: Path,
        compare_prompt: Path | None,
        html_path: Path | None,
        reruns: int,
        concurrency: int | None,
        json_path: Path | None,
        learned: bool,
        escalate_below: float | None,
    ) -> None:
        """Measure the scorer on labeled leads: precision, recall, calibration, cost. Exit 1 if a target fails."""
        if learned and (compare_prompt or reruns > 1):
            raise click.UsageError("--learned compares chains on one rubric: leave out --compare-prompt and --reruns")
        sys.exit(eval_command(config_path, labels_path, compare_prompt, html_path, reruns, concurrency, json_path, learned, escalate_below))

    @cli_group.group("labels")
    def labels() -> None:
        """Harvest outcomes (reviewer decisions, conversions) from the CRM for `crmsync eval`."""

    @labels.command("pull")
    @_config_option
    def labels_pull(config_path: Path | None) -> None:
        """Read reviewer decisions and conversions from the CRM into the ledger."""
        from ..app import build_connector

        out, err = _consoles()
        config = _load(config_path)
        hold_state_dir(config, "labels pull")
        connector = build_connector(config)
        ledger = _ledger(config)
        seen = changed = 0
        try:
            try:
                for rec in connector.fetch_labels():
                    seen += 1
                    changed += ledger.add_label(rec.lead_id, rec.source, rec.outcome, rec.inputs, rec.decided_at)
            except NotImplementedError as exc:
                err.print(str(exc))
                sys.exit(1)
        finally:
            connector.close()
            ledger.close()
        out.print(f"{seen} label(s) in the CRM, {changed} new or changed")

    @labels.command("export")
    @_config_option
    @click.option("--output", "-o", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--format", "fmt", type=click.Choice(["csv", "chat-jsonl"]), default="csv", show_default=True)
    def labels_export(config_path: Path | None, output_path: Path, fmt: str) -> None:
        """Write the pulled labels: CSV for `crmsync eval --labels`, or chat JSON Lines for fine-tuning."""
        from ..app import rubric_path
        from ..models import Lead
        from ..rubric import load_rubric
        from ..scoring import build_prompt

        out, _ = _consoles()
        config = _load(config_path)
        ledger = _ledger(config)
        try:
            labs = merged_labels(ledger)
        finally:
            ledger.close()
        mapping = config.fields.inputs
        if fmt == "csv":
            with open(output_path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["id", *mapping.values(), "outcome", "label_source"])
                for lab in labs:
                    w.writerow(
                        [
                            lab["lead_id"],
                            *("" if lab["inputs"].get(k) is None else lab["inputs"].get(k) for k in mapping),
                            lab["outcome"],
                            lab["source"],
                        ]
                    )
        else:
            rubric = load_rubric(rubric_path(config))
            with open(output_path, "w", encoding="utf-8") as fh:
                for lab in labs:
                    inputs = {k: lab["inputs"].get(k) for k in mapping if lab["inputs"].get(k) not in (None, "")}
                    prompt = build_prompt(rubric, Lead(id=lab["lead_id"], inputs=inputs), config.scoring.max_input_chars)
                    answer = assistant_answer(rubric, config.eval.qualified_tiers, lab["outcome"], lab["source"], lab["inputs"])
                    fh.write(
                        json.dumps(
                            {
                                "messages": [
                                    {"role": "system", "content": prompt.system},
                                    {"role": "user", "content": prompt.user},
                                    {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
                                ]
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
        q = sum(1 for x in labs if x["outcome"] == "qualified")
        out.print(f"{len(labs)} label(s) ({q} qualified) written to {output_path}")
