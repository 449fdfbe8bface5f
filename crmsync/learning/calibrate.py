"""Calibration: from what the chain answered (score, confidence, which step answered; the tier is a function of the
score) to P(qualified), per rubric version, fitted on labeled leads (`crmsync train calibration`).

Per rubric version and per answering step (a learned step and an LLM step mean different things by "70") when
that step has enough labels, else pooled. Isotonic: a monotone step function of the score. Platt: a logistic
regression on score and stated confidence. The serving side (``Calibrations``) re-reads the promoted version when
it changes, so a promotion or rollback needs no restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import ReviewReason, ScoreResult, ScoreStatus
from .artefact import ArtefactError, Store, Version, store
from .settings import LearnConfig
from .train import LabeledRow, check_counts, metrics, prob_ece, split

log = logging.getLogger("crmsync.learning")

POOLED = "*"
MIN_PER_STEP = 50  # labels an answering step needs for a map of its own
RELOAD_S = 5.0


@dataclass(frozen=True)
class ChainOutput:
    """One labeled lead as the chain scored it."""

    rubric_version: str
    step: str  # the provider that gave the final answer
    score: float
    confidence: float
    outcome: int


def _x(method: str, items: Sequence[ChainOutput]) -> Any:
    import numpy as np

    if method == "isotonic":
        return np.array([i.score for i in items], dtype=float)
    return np.array([[i.score / 100, i.confidence] for i in items], dtype=float)


def fit_maps(items: Sequence[ChainOutput], method: str) -> dict[str, dict[str, Any]]:
    """{rubric version: {step or "*": fitted map}}."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    def one(group: Sequence[ChainOutput]) -> Any:
        y = np.array([i.outcome for i in group])
        if method == "isotonic":
            return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(_x(method, group), y)
        return LogisticRegression(max_iter=1000).fit(_x(method, group), y)

    maps: dict[str, dict[str, Any]] = {}
    for version in sorted({i.rubric_version for i in items}):
        mine = [i for i in items if i.rubric_version == version]
        if len({i.outcome for i in mine}) < 2:
            continue
        maps[version] = {POOLED: one(mine)}
        for step in sorted({i.step for i in mine}):
            group = [i for i in mine if i.step == step]
            if len(group) >= MIN_PER_STEP and len({i.outcome for i in group}) == 2:
                maps[version][step] = one(group)
    return maps


def probability(bundle: Mapping[str, Any], rubric_version: str, step: str, score: float, confidence: float) -> float | None:
    maps = bundle["maps"].get(rubric_version)
    if not maps:
        return None
    m = maps.get(step) or maps[POOLED]
    x = _x(bundle["method"], [ChainOutput(rubric_version, step, score, confidence, 0)])
    p = m.predict_proba(x)[0, 1] if hasattr(m, "predict_proba") else m.predict(x)[0]
    return round(float(p), 4)


def with_probability(result: ScoreResult, p: float | None, band: tuple[float, float] | None) -> ScoreResult:
    """The result with its calibrated probability; with a ``[review] probability_band``, the band replaces the raw
    confidence rule: low confidence alone no longer flags, a probability inside the band does."""
    if p is None:
        return result
    update: dict[str, Any] = {"probability": p}
    if band is not None:
        reasons = [r for r in result.review_reasons if r != ReviewReason.low_confidence]
        if band[0] <= p <= band[1]:
            reasons.append(ReviewReason.uncertain_probability)
        update.update(review_reasons=reasons, needs_review=bool(reasons))
    return result.model_copy(update=update)


class Calibrations:
    """The promoted calibration of a state dir, re-read when ``crmsync train`` promotes or rolls back."""

    def __init__(self, state_dir: Path, band: tuple[float, float] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.store: Store = store(state_dir, "calibration")
        self.band = band
        self.clock = clock
        self._checked = -RELOAD_S
        self._mtime: float | None = None
        self._bundle: Mapping[str, Any] | None = None
        self.version: Version | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> Mapping[str, Any] | None:
        with self._lock:  # scoring threads wait for a load in progress rather than score without it
            now = self.clock()
            if now - self._checked < RELOAD_S:
                return self._bundle
            self._checked = now
            mtime = self.store.pointer_mtime()
            if mtime == self._mtime:
                return self._bundle
            self._mtime = mtime
            try:
                self.version = self.store.current()
                self._bundle = self.store.load(self.version) if self.version else None
            except (ArtefactError, OSError, ValueError) as exc:  # scoring goes on, without a probability
                self.version, self._bundle = None, None
                log.error("calibration not used: %s", exc)
            return self._bundle

    def apply(self, result: ScoreResult) -> ScoreResult:
        bundle = self._refresh()
        if bundle is None or result.status != ScoreStatus.scored or result.score is None:
            return result
        p = probability(bundle, result.rubric_version, result.provider or "", result.score, result.confidence or 0.0)
        return with_probability(result, p, self.band)


@dataclass
class Fitted:
    """A calibration fitted on the training part of the labeled leads, measured on the held-out part."""

    bundle: dict[str, Any]
    card: dict[str, Any]
    test: list[ChainOutput]
    test_ids: list[str]


def fit_calibration(
    items: Sequence[ChainOutput],
    ids: Sequence[str],
    ats: Sequence[str],
    cfg: LearnConfig,
    method: str = "isotonic",
    how: str | None = None,
    seed: int = 0,
) -> Fitted:
    """Guardrails (label counts), a held-out split, the maps, and ECE / AUC before and after on the held-out leads.
    "Before" reads the score as a probability (score / 100), which is what a person reading the CRM does."""
    rows = [LabeledRow(i, {}, it.outcome, a) for i, it, a in zip(ids, items, ats, strict=True)]
    check_counts(rows, cfg, "calibration")
    how = how or cfg.split
    tr, te = split(rows, how, cfg.test_share, seed)
    train, test = [items[i] for i in tr], [items[i] for i in te]
    maps = fit_maps(train, method)
    bundle = {"method": method, "maps": maps}
    y = [i.outcome for i in test]
    after = [probability(bundle, i.rubric_version, i.step, i.score, i.confidence) for i in test]
    ok = [k for k, p in enumerate(after) if p is not None]
    y_ok = [y[k] for k in ok]
    p_ok = [after[k] for k in ok]
    before = [test[k].score / 100 for k in ok]
    card = {
        "kind": "calibration",
        "method": method,
        "split": how,
        "rubric_versions": sorted(maps),
        "steps": {v: sorted(m) for v, m in maps.items()},
        "labels": {"total": len(items), "qualified": sum(i.outcome for i in items), "train": len(train), "test": len(test)},
        "metrics": {
            "held_out": {
                "n": len(ok),
                "ece_before": round(prob_ece(y_ok, before), 4) if ok else None,
                "ece": round(prob_ece(y_ok, p_ok), 4) if ok else None,  # type: ignore[arg-type]
                **({k: v for k, v in metrics(y_ok, before).items() if k == "auc"} if ok else {}),
            }
        },
        "train_ids": [ids[i] for i in tr],
        "test_ids": [ids[i] for i in te],
    }
    return Fitted(bundle, card, test, [ids[i] for i in te])


def calibration_decision(new: Fitted, store: Store, max_ece: float | None) -> tuple[bool, str]:
    """Promote only when it makes the probability better calibrated than the raw score, than the serving calibration
    on the same held-out leads, and meets ``[eval.targets] max_ece``."""
    held = new.card["metrics"]["held_out"]
    if held.get("ece") is None:
        return False, "no held-out lead has a calibrated probability (no rubric version with both outcomes)"
    if max_ece is not None and held["ece"] > max_ece:
        return False, f"held-out ECE {held['ece']} > [eval.targets] max_ece {max_ece:g}"
    if held["ece"] >= held["ece_before"]:
        return False, f"held-out ECE {held['ece']} is no better than the raw score's {held['ece_before']}"
    cur = store.current()
    if cur is None:
        return True, f"first calibration; held-out ECE {held['ece']} (raw score {held['ece_before']})"
    old_bundle = store.load(cur)
    y = [i.outcome for i in new.test]
    old = [probability(old_bundle, i.rubric_version, i.step, i.score, i.confidence) for i in new.test]
    new_p = [probability(new.bundle, i.rubric_version, i.step, i.score, i.confidence) for i in new.test]
    both = [k for k in range(len(y)) if old[k] is not None and new_p[k] is not None]
    if both:
        e_old = prob_ece([y[k] for k in both], [old[k] for k in both])  # type: ignore[misc]
        e_new = prob_ece([y[k] for k in both], [new_p[k] for k in both])  # type: ignore[misc]
        if e_new >= e_old:
            return (
                False,
                f"it does not beat the serving {cur.name}: ECE {e_new:.4f} against {e_old:.4f} on the same {len(both)} held-out leads",
            )
        return True, f"ECE {e_new:.4f} against {e_old:.4f} for {cur.name} on the same {len(both)} held-out leads"
    return True, f"the serving {cur.name} has no map for these rubric versions; held-out ECE {held['ece']}"
