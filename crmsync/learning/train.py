"""Fit a learned model on labeled leads: guardrails first, then a held-out split, the fit, its calibration, the
metrics the model card reports and the promotion rule reads.

Scores on the rubric's scale. The classifier is fitted with balanced class weights, so its raw probability ``p``
is 0.5 where a lead is as likely one class as the other *after reweighting*: that is the decision threshold. The
score maps ``p`` piecewise-linearly so that the threshold lands on the rubric's lowest qualified cut (e.g. 60):
a learned score of 60+ means "qualified", exactly as an LLM's would. Confidence is the distance from the threshold,
0.5 at it and 1.0 at either end, so ``escalate_below`` sends the uncertain band to the next step. P(qualified) is
the raw ``p`` calibrated on out-of-fold predictions of the training rows (never the held-out ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CrmsyncError
from .drift import baseline
from .features import FeatureSpec, build_pipeline, infer_spec, separation_check, to_matrix
from .settings import LearnConfig

THRESHOLD = 0.5  # balanced class weights: the raw probability's decision point


class TooFewLabels(CrmsyncError):
    """Not enough labeled leads to train on; the message says how many are missing."""


@dataclass(frozen=True)
class LabeledRow:
    lead_id: str
    inputs: Mapping[str, Any]
    outcome: int  # 1 = qualified
    at: str = ""  # when the outcome was known (ISO time): the time-ordered split's clock


def check_counts(rows: Sequence[LabeledRow], cfg: LearnConfig, what: str = "training") -> None:
    n, pos = len(rows), sum(r.outcome for r in rows)
    neg = n - pos
    short = []
    if n < cfg.min_labels:
        short.append(f"{cfg.min_labels - n} more labeled lead(s)")
    if pos < cfg.min_positives:
        short.append(f"{cfg.min_positives - pos} more qualified")
    if neg < cfg.min_positives:
        short.append(f"{cfg.min_positives - neg} more unqualified")
    if short:
        raise TooFewLabels(
            f"refused: {n} labeled lead(s), {pos} qualified and {neg} unqualified; {what} needs at least {cfg.min_labels} with "
            f"{cfg.min_positives} of each ([learn] min_labels, min_positives). Missing: {', '.join(short)}. "
            f"Run `crmsync labels pull` as reviews and conversions come in."
        )


def split(rows: Sequence[LabeledRow], how: str, test_share: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, test). time: the latest ``test_share`` by outcome time (ties by lead id) are held out, as a
    model meets the future; stratified: a random sample keeping the qualified share."""
    n = len(rows)
    k = max(1, round(n * test_share))
    if how == "time":
        order = sorted(range(n), key=lambda i: (rows[i].at or "", rows[i].lead_id))
        return sorted(order[: n - k]), sorted(order[n - k :])
    if how == "stratified":
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(list(range(n)), test_size=k, stratify=[r.outcome for r in rows], random_state=seed)
        return sorted(tr), sorted(te)
    raise CrmsyncError(f"unknown split {how!r}: use time or stratified")


def to_score(p: float, cut: int, t: float = THRESHOLD) -> tuple[int, float]:
    """(score 0–100, confidence 0.5–1) for raw probability ``p``; ``cut`` is the rubric's lowest qualified score."""
    if p >= t:
        score = cut + round((100 - cut) * (p - t) / (1 - t))
        conf = 0.5 + 0.5 * (p - t) / (1 - t)
    else:
        score = min(cut - 1, int(cut * p / t)) if cut > 0 else 0
        conf = 0.5 + 0.5 * (t - p) / t
    return max(0, min(100, score)), round(min(1.0, max(0.5, conf)), 4)


def prob_ece(y: Sequence[int], p: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error of a probability: Σ share of bin · |observed rate − mean probability|."""
    tot = [[0, 0.0, 0] for _ in range(bins)]
    for t, q in zip(y, p, strict=True):
        b = tot[min(int(q * bins), bins - 1)]
        b[0] += 1
        b[1] += q
        b[2] += t
    n = len(y) or 1
    return sum(c / n * abs(h / c - s / c) for c, s, h in tot if c)


def metrics(y: Sequence[int], raw: Sequence[float], prob: Sequence[float] | None = None, t: float = THRESHOLD) -> dict[str, Any]:
    """The held-out numbers of a model card: AUC, precision/recall/F1 at the threshold, ECE of P(qualified)."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    pred = [1 if q >= t else 0 for q in raw]
    out: dict[str, Any] = {
        "n": len(y),
        "qualified": int(sum(y)),
        "auc": round(float(roc_auc_score(y, raw)), 4) if 0 < sum(y) < len(y) else None,
        "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
        "recall": round(float(recall_score(y, pred, zero_division=0)), 4),
        "f1": round(float(f1_score(y, pred, zero_division=0)), 4),
    }
    if prob is not None:
        out["ece"] = round(prob_ece(y, prob), 4)
    return out


def fit_calibrator(raw: Sequence[float], y: Sequence[int], method: str) -> Any:
    """A monotone map raw score → P(qualified): isotonic regression or Platt (a one-input logistic regression)."""
    import numpy as np

    x = np.asarray(raw, dtype=float)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, np.asarray(y))
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=1e6, max_iter=1000).fit(x.reshape(-1, 1), np.asarray(y))
    raise CrmsyncError(f"unknown calibration method {method!r}: use isotonic or platt")


def apply_calibrator(cal: Any, raw: Sequence[float]) -> list[float]:
    import numpy as np

    x = np.asarray(raw, dtype=float)
    if hasattr(cal, "predict_proba"):
        return [float(v) for v in cal.predict_proba(x.reshape(-1, 1))[:, 1]]
    return [float(v) for v in cal.predict(x)]


@dataclass
class Trained:
    """A fitted model and everything its card says. ``bundle`` is what goes into model.joblib."""

    bundle: dict[str, Any]
    card: dict[str, Any]
    test_rows: list[LabeledRow]
    test_raw: list[float]


def fit(
    rows: Sequence[LabeledRow],
    names: Sequence[str],
    cfg: LearnConfig,
    *,
    algorithm: str = "logistic",
    how: str | None = None,
    qualified_cut: int = 60,
    calibration: str = "isotonic",
    seed: int = 0,
) -> Trained:
    """Guardrails (label counts, leak guard), split, fit, calibrate on out-of-fold training predictions, measure."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    check_counts(rows, cfg)
    how = how or cfg.split
    tr, te = split(rows, how, cfg.test_share, seed)
    train = [rows[i] for i in tr]
    test = [rows[i] for i in te]
    check_counts(train, LearnConfig(min_labels=10, min_positives=max(5, cfg.min_positives // 2)), "the training part of the split")
    y_tr = np.array([r.outcome for r in train])
    y_te = [r.outcome for r in test]
    spec = infer_spec([r.inputs for r in train], names, allow=cfg.allow_fields)
    separation_check(spec, [r.inputs for r in train], list(y_tr), cfg.leak_auc, seed)
    X_tr = to_matrix(spec, [r.inputs for r in train])
    pipe = build_pipeline(spec, algorithm, cfg.max_categories, seed)
    oof = cross_val_predict(
        build_pipeline(spec, algorithm, cfg.max_categories, seed),
        X_tr,
        y_tr,
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        method="predict_proba",
    )[:, 1]
    cal = fit_calibrator(oof, list(y_tr), calibration)
    pipe.fit(X_tr, y_tr)
    raw_tr = pipe.predict_proba(X_tr)[:, 1]
    raw_te = [float(v) for v in pipe.predict_proba(to_matrix(spec, [r.inputs for r in test]))[:, 1]] if test else []
    held = metrics(y_te, raw_te, apply_calibrator(cal, raw_te)) if test else {}
    bundle = {
        "pipeline": pipe,
        "calibrator": cal,
        "spec": spec.as_dict(),
        "threshold": THRESHOLD,
        "qualified_cut": qualified_cut,
        "algorithm": algorithm,
    }
    ats = sorted(r.at for r in rows if r.at)
    card = {
        "kind": "model",
        "algorithm": algorithm,
        "calibration": calibration,
        "split": how,
        "test_share": cfg.test_share,
        "data_window": {
            "from": ats[0] if ats else None,
            "to": ats[-1] if ats else None,
            "train_to": max((r.at for r in train if r.at), default=None),
        },
        "features": spec.as_dict(),
        "threshold": THRESHOLD,
        "qualified_cut": qualified_cut,
        "labels": {
            "total": len(rows),
            "qualified": int(sum(r.outcome for r in rows)),
            "train": len(train),
            "train_qualified": int(y_tr.sum()),
            "test": len(test),
            "test_qualified": int(sum(y_te)),
        },
        "metrics": {"held_out": held, "train": metrics(list(y_tr), list(raw_tr))},
        "drift_baseline": baseline(spec, [r.inputs for r in train], [to_score(p, qualified_cut)[0] for p in raw_tr], cfg.max_categories),
        "train_ids": [r.lead_id for r in train],
        "test_ids": [r.lead_id for r in test],
    }
    return Trained(bundle, card, test, raw_te)


def predict_raw(bundle: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]]) -> list[float]:
    spec = FeatureSpec.from_dict(bundle["spec"])
    return [float(v) for v in bundle["pipeline"].predict_proba(to_matrix(spec, inputs))[:, 1]]


def card_markdown(card: Mapping[str, Any]) -> str:
    """The human half of the model card."""
    lab, held, f = card["labels"], card["metrics"].get("held_out", {}), card["features"]
    lines = [
        f"- algorithm: {card['algorithm']} (class_weight balanced), calibration: {card['calibration']}",
        f"- data window: {card['data_window']['from']} .. {card['data_window']['to']} (training up to {card['data_window']['train_to']})",
        (
            f"- labels: {lab['total']} ({lab['qualified']} qualified); train {lab['train']} ({lab['train_qualified']}), "
            f"held out {lab['test']} ({lab['test_qualified']}), split: {card['split']}"
        ),
        f"- features: numeric {', '.join(f['numeric']) or '-'}; categorical {', '.join(f['categorical']) or '-'}",
        *(f"- not used: {k} ({v})" for k, v in f["skipped"].items()),
        (
            f"- held-out metrics: ROC AUC {held.get('auc')}, precision {held.get('precision')}, recall {held.get('recall')}, "
            f"F1 {held.get('f1')}, ECE of P(qualified) {held.get('ece')}"
        ),
        f"- decision: raw probability >= {card['threshold']} is scored >= {card['qualified_cut']} (the lowest qualified tier)",
    ]
    return "\n".join(lines) + "\n"
