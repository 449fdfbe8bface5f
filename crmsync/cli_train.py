"""`crmsync train model | calibration | rollback | show`: learn from the labeled leads in the ledger (issue 15).
Registered onto the main group by ``register(cli)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .config import Config
from .console import config_option, err, load_for_command, open_ledger, out
from .errors import CrmsyncError

NEEDS_EXTRA = "`crmsync train` needs scikit-learn: pip install 'crmsync[learn]'"


def _sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        err.print(NEEDS_EXTRA, style="red", markup=False)
        sys.exit(2)


def labeled_rows(config: Config) -> list[Any]:
    """One row per labeled lead in the ledger (a reviewer's decision wins over a conversion), oldest outcome first."""
    from .evaluation.cli import merged_labels
    from .learning.train import LabeledRow

    ledger = open_ledger(config)
    try:
        labs = merged_labels(ledger)
    finally:
        ledger.close()
    names = list(config.fields.inputs)
    return [
        LabeledRow(x["lead_id"], {k: x["inputs"].get(k) for k in names}, 1 if x["outcome"] == "qualified" else 0, x["decided_at"] or "")
        for x in labs
    ]


def qualified_cut(config: Config) -> int:
    from .app import rubric_path
    from .rubric import load_rubric

    tiers = load_rubric(rubric_path(config)).tiers
    cuts = [c for t, c in tiers.items() if t in config.eval.qualified_tiers]
    return min(cuts) if cuts else max(tiers.values())


def _warn_other_paths(config: Config, root: Path) -> None:
    """A `type = "learned"` provider reading another folder than the one trained into would never see this model."""
    for name, opts in config.providers.items():
        path = getattr(opts, "path", None)
        if opts.type == "learned" and path is not None and config.path(path).resolve() != root.resolve():
            _say(
                f"warning: providers.{name}.path = {path!r} is {config.path(path)}, not {root}: that provider will not serve "
                f'this model. Set path = "{root}".',
                "yellow",
            )


def _say(msg: str, style: str | None = None) -> None:
    out.print(msg, style=style, markup=False, highlight=False, soft_wrap=True)


def _refused(exc: CrmsyncError) -> None:
    err.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
    sys.exit(1)


def register(cli_group: click.Group) -> None:
    @cli_group.group("train")
    def train() -> None:
        """Learn from outcomes: a learned first step, calibrated probabilities, rollback."""

    split_option = click.option(
        "--split",
        "how",
        type=click.Choice(["time", "stratified"]),
        help="Held-out split: the latest leads (time, the default: [learn] split) or a stratified sample.",
    )
    promote_option = click.option(
        "--promote", is_flag=True, help="Serve the new version if it meets [eval.targets] and beats the serving one on the held-out leads."
    )

    @train.command("model")
    @config_option
    @click.option(
        "--algorithm",
        type=click.Choice(["logistic", "gbt"]),
        default="logistic",
        show_default=True,
        help="logistic regression, or gradient-boosted trees (gbt).",
    )
    @click.option("--calibration", type=click.Choice(["isotonic", "platt"]), default="isotonic", show_default=True)
    @split_option
    @promote_option
    @click.option("--seed", type=int, default=0, show_default=True)
    def train_model(config_path: Path | None, algorithm: str, calibration: str, how: str | None, promote: bool, seed: int) -> None:
        """Fit a model on the mapped inputs of the labeled leads; save it with a model card."""
        from .learning.artefact import store
        from .learning.promote import decide
        from .learning.train import card_markdown, fit

        _sklearn()
        config = load_for_command(config_path, "WARNING")
        rows = labeled_rows(config)
        try:
            trained = fit(
                rows,
                list(config.fields.inputs),
                config.learn,
                algorithm=algorithm,
                how=how,
                qualified_cut=qualified_cut(config),
                calibration=calibration,
                seed=seed,
            )
        except CrmsyncError as exc:
            _refused(exc)
        models = store(config.state_dir, "model")
        decision = decide(trained, models, config.eval.targets.model_dump()) if promote else None
        version = models.save(trained.bundle, trained.card, card_markdown(trained.card))
        held = trained.card["metrics"]["held_out"]
        _say(
            f"trained {version.name} ({algorithm}, {trained.card['split']} split): {trained.card['labels']['train']} leads to train, "
            f"{held.get('n')} held out; ROC AUC {held.get('auc')}, precision {held.get('precision')}, recall {held.get('recall')}, "
            f"ECE {held.get('ece')}. Card: {version.path / 'card.md'}"
        )
        for name, why in trained.card["features"]["skipped"].items():
            _say(f"not used: {name} ({why})")
        if decision is None:
            _say("not serving: run again with --promote to serve it when it beats the serving model")
        elif decision.promote:
            _warn_other_paths(config, models.root)
            prev = models.promote(version, decision.why)
            _say(
                f"promoted {version.name}: {decision.why}"
                + (f"; {prev.name} is kept: `crmsync train rollback` serves it again" if prev else ""),
                "green",
            )
        else:
            _say(f"not promoted: {decision.why}. {version.name} is kept on disk, not serving.", "yellow")
            sys.exit(1)

    @train.command("calibration")
    @config_option
    @click.option("--method", type=click.Choice(["isotonic", "platt"]), default="isotonic", show_default=True)
    @split_option
    @promote_option
    def train_calibration(config_path: Path | None, method: str, how: str | None, promote: bool) -> None:
        """Fit P(qualified) from the chain's answers (score, confidence, answering step) on labeled leads, per rubric version."""
        from .learning.artefact import store
        from .learning.calibrate import ChainOutput, calibration_decision, fit_calibration
        from .models import ScoreStatus

        _sklearn()
        config = load_for_command(config_path, "WARNING")
        rows = labeled_rows(config)
        ledger = open_ledger(config)
        items, ids, ats = [], [], []
        try:
            for r in rows:
                got = ledger.get(r.lead_id)
                res = got.result if got else None
                if res is None or res.status != ScoreStatus.scored or res.score is None:
                    continue
                items.append(ChainOutput(res.rubric_version, res.provider or "", float(res.score), float(res.confidence or 0.0), r.outcome))
                ids.append(r.lead_id)
                ats.append(r.at)
        finally:
            ledger.close()
        _say(f"{len(rows)} labeled lead(s), {len(items)} of them scored by the chain")
        try:
            fitted = fit_calibration(items, ids, ats, config.learn, method, how)
        except CrmsyncError as exc:
            _refused(exc)
        cals = store(config.state_dir, "calibration")
        held = fitted.card["metrics"]["held_out"]
        version = cals.save(
            fitted.bundle,
            fitted.card,
            f"- method {method}, rubric versions {', '.join(fitted.card['rubric_versions'])}\n"
            f"- held-out ECE {held['ece']} (raw score read as a probability: {held['ece_before']})\n",
        )
        _say(
            f"calibration {version.name} ({method}): held-out ECE {held['ece']} (raw score as probability: {held['ece_before']}), "
            f"{held['n']} held-out leads"
        )
        if not promote:
            _say("not serving: run again with --promote")
            return
        ok, why = calibration_decision(fitted, cals, config.eval.targets.max_ece)
        if not ok:
            _say(f"not promoted: {why}. {version.name} is kept on disk, not serving.", "yellow")
            sys.exit(1)
        prev = cals.promote(version, why)
        _say(
            f"promoted {version.name}: {why}"
            + (f"; {prev.name} is kept: `crmsync train rollback --calibration` serves it again" if prev else ""),
            "green",
        )

    @train.command("rollback")
    @config_option
    @click.option("--calibration", "kind", flag_value="calibration", help="Roll back the calibration instead of the model.")
    @click.option("--model", "kind", flag_value="model", default=True, hidden=True)
    def train_rollback(config_path: Path | None, kind: str) -> None:
        """Serve the version that served before the current one (the daemon picks it up within seconds)."""
        from .learning.artefact import store

        config = load_for_command(config_path, "WARNING")
        try:
            old, new = store(config.state_dir, kind).rollback()
        except CrmsyncError as exc:
            _refused(exc)
        _say(f"rolled back the {kind}: {new.name} serves again ({old.name} is kept on disk)", "green")

    @train.command("show")
    @config_option
    def train_show(config_path: Path | None) -> None:
        """The versions on disk, which one serves, and its drift."""
        from .learning.artefact import store
        from .learning.status import drift_lines

        config = load_for_command(config_path, "WARNING")
        for kind in ("model", "calibration"):
            s = store(config.state_dir, kind)
            cur = s.current()
            for v in s.versions():
                held = v.card()["metrics"].get("held_out", {})
                mark = "serving" if cur and cur.name == v.name else "       "
                _say(f"{kind:11} {mark} {v.name}  held-out AUC {held.get('auc')}  ECE {held.get('ece')}")
        for line in drift_lines(config.state_dir, config.learn.drift_psi_alarm):
            _say(line)
