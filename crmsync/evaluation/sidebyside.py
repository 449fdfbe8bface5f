"""`crmsync eval --learned`: the rubric chain, the learned step alone, the cascade (learned first, the chain's LLM steps
for its uncertain band) and, with a promoted calibration, each of them calibrated: side by side on the same labels.

"The same held-out labels": labeled leads the serving model was trained on are left out of every column (it would
look better on them than it is), so all columns are measured on leads none of them learned from.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from ..config import ChainStep, Config
from ..errors import ConfigError
from ..learning.artefact import Version, store
from ..learning.calibrate import Calibrations
from ..learning.train import prob_ece
from ..models import HopOutcome, ScoreResult
from .metrics import Evaluation, Targets, evaluate
from .run import CACHE_FILE, EvalCache, LabeledLead, chain_signature, items_of, score_labeled

DEFAULT_ESCALATE = 0.65
ANSWERED = (HopOutcome.ok, HopOutcome.repaired, HopOutcome.invalid)


def _learned_name(config: Config, models_root: Path) -> tuple[str, dict[str, Any]]:
    """The learned provider of the config, or one added for the evaluation reading the state dir's model store."""
    for name, opts in config.providers.items():
        if opts.type == "learned":
            return name, dict(config.providers)
    from ..providers.learned_provider import LearnedOptions

    return "learned", {**config.providers, "learned": LearnedOptions(type="learned", path=str(models_root))}


def variants(config: Config, escalate_below: float | None) -> tuple[dict[str, Config], str, Version]:
    """{column name: a config whose chain is that variant}, the learned provider's name, the serving model."""
    models = store(config.state_dir, "model")
    serving = models.current()
    if serving is None:
        raise ConfigError(f"eval --learned: no learned model is serving under {models.root}; run `crmsync train model --promote` first")
    learned, providers = _learned_name(config, models.root)
    llm = [s for s in config.chain if providers[s.provider].type != "learned"]
    configured = next((s.escalate_below for s in config.chain if s.provider == learned), None)
    below = escalate_below if escalate_below is not None else configured if configured is not None else DEFAULT_ESCALATE
    chains: dict[str, list[ChainStep]] = {}
    if llm:
        chains["rubric chain"] = llm
    chains["learned step"] = [ChainStep(provider=learned)]
    if llm:
        chains[f"cascade (<{below:g} to LLM)"] = [ChainStep(provider=learned, escalate_below=below), *llm]
    return {n: config.model_copy(update={"chain": c, "providers": providers}) for n, c in chains.items()}, learned, serving


def _extra(results: list[ScoreResult], labeled: list[LabeledLead], learned: str, calibrated: bool) -> list[tuple[str, str]]:
    n = len(results) or 1
    llm = sum(1 for r in results for h in r.hops if h.mode == "score" and h.provider != learned and h.outcome in ANSWERED)
    rows = [
        ("LLM calls per lead", f"{llm / n:.3f}"),
        ("answered by the learned step", f"{100 * sum(r.provider == learned for r in results) / n:.1f}%"),
    ]
    if calibrated:
        from sklearn.metrics import roc_auc_score

        pairs = [(x.outcome, r.probability) for x, r in zip(labeled, results, strict=True) if r.probability is not None]
        y, p = [a for a, _ in pairs], [b for _, b in pairs]
        auc = roc_auc_score(y, p) if 0 < sum(y) < len(y) else None
        rows += [
            ("ROC AUC (P(qualified))", "-" if auc is None else f"{auc:.3f}"),
            ("ECE (P(qualified))", f"{prob_ece(y, p):.3f}" if p else "-"),
        ]
    return rows


def side_by_side(
    config: Config, labeled: list[LabeledLead], concurrency: int, escalate_below: float | None, err: Console
) -> tuple[dict[str, Evaluation], list[str], int, int]:
    """(evaluations by column, notes, scored now, from cache)."""
    from rich.progress import Progress

    from ..app import build_scorer

    configs, learned, serving = variants(config, escalate_below)
    seen = set(serving.card().get("train_ids", []))
    held = [x for x in labeled if x.lead.id not in seen]
    left_out = len(labeled) - len(held)
    notes = [
        f"learned model {serving.name}; {left_out} lead(s) it was trained on are left out of every column: {len(held)} held-out lead(s)"
    ]
    if not held:
        raise ConfigError(
            "eval --learned: every labeled lead was in the learned model's training data; label other leads "
            "(or use the model card's held-out leads, its test_ids)"
        )
    cal = Calibrations(config.state_dir, config.review.probability_band)
    cache = EvalCache(config.state_dir / CACHE_FILE)
    evs: dict[str, Evaluation] = {}
    called = cached = 0
    targets = Targets(**config.eval.targets.model_dump())
    try:
        with Progress(console=err, disable=not err.is_terminal) as progress:
            for name, cfg in configs.items():
                scorer = build_scorer(cfg)
                scorer.calibration = None  # applied below, so cached results are calibrated by the serving version too
                sig = chain_signature(cfg) + (f" @{serving.hash}" if any(s.provider == learned for s in cfg.chain) else "")
                try:
                    task = progress.add_task(f"scoring {name}", total=len(held))
                    run = score_labeled(scorer, scorer.rubric, held, cache, sig, 1, concurrency, partial(progress.advance, task))
                finally:
                    scorer.close()
                called, cached = called + run.called, cached + run.cached
                results = run.runs[0]
                ev = evaluate(items_of(held, results), config.eval.qualified_tiers, list(run.rubric.tiers), targets)
                ev.extra = _extra(results, held, learned, False)
                evs[name] = ev
                calibrated = [cal.apply(r) for r in results]
                if cal.version is not None:
                    ev = evaluate(items_of(held, calibrated), config.eval.qualified_tiers, list(run.rubric.tiers), targets)
                    ev.extra = _extra(calibrated, held, learned, True)
                    evs[f"{name} + calibration"] = ev
    finally:
        cache.close()
    if cal.version is None:
        notes.append("no calibration is serving: `crmsync train calibration --promote` adds the calibrated columns")
    else:
        notes.append(
            f"calibration {cal.version.name}"
            + (f", review on P(qualified) in {list(config.review.probability_band)}" if config.review.probability_band else "")
        )
    return evs, notes, called, cached


def eval_learned(
    config: Config,
    labeled: list[LabeledLead],
    labels_path: Path,
    html_path: Path | None,
    json_path: Path | None,
    concurrency: int,
    escalate_below: float | None,
    out: Console,
    err: Console,
) -> int:
    """The whole `crmsync eval --learned` after the labels are read. Exit status: the last column's [eval.targets]
    (the cascade, calibrated when a calibration serves: what would run in production)."""
    from .report import as_dict, html_report, print_report

    evs, notes, called, cached = side_by_side(config, labeled, concurrency, escalate_below, err)
    held = next(iter(evs.values())).n_labeled
    title = f"crmsync eval --learned: {held} held-out labeled leads, qualified = tier {' or '.join(config.eval.qualified_tiers)}"
    print_report(out, title, evs)
    for note in notes:
        out.print(note, markup=False, highlight=False, soft_wrap=True)
    out.print(f"scored now {called}, from cache {cached} ({config.state_dir / CACHE_FILE})", markup=False, highlight=False)
    if html_path:
        meta = {"labels": str(labels_path), "config": config.source, **{f"note {i}": n for i, n in enumerate(notes, 1)}}
        html_path.write_text(html_report(title, evs, meta), encoding="utf-8")
        out.print(f"HTML report: {html_path}", markup=False, highlight=False)
    if json_path:
        json_path.write_text(
            json.dumps(
                {"runs": {n: as_dict(e) for n, e in evs.items()}, "notes": notes, "scored_now": called, "from_cache": cached},
                indent=1,
                default=str,
            ),
            encoding="utf-8",
        )
    return 0 if evs[list(evs)[-1]].passed else 1
