"""Evaluation metrics for qualified/unqualified calls. Pure functions over plain lists: no I/O, no numpy.

Conventions (they match scikit-learn's defaults, which the tests check exactly):
- labels are 1 (qualified, the positive class) and 0;
- a ratio whose denominator is 0 is 0.0 (scikit-learn's ``zero_division`` default, minus the warning);
- ROC AUC is rank based (Mann-Whitney U), tied scores get their average rank; it is ``None`` when only
  one class is present (scikit-learn raises there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

N_BINS = 10


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def confusion(y_true: Sequence[int], y_pred: Sequence[int]) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp)."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    tn = fp = fn = tp = 0
    for t, p in zip(y_true, y_pred, strict=True):
        if t and p:
            tp += 1
        elif t:
            fn += 1
        elif p:
            fp += 1
        else:
            tn += 1
    return tn, fp, fn, tp


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int]) -> list[list[int]]:
    """[[tn, fp], [fn, tp]]: rows are the truth (0, 1), columns the call (0, 1)."""
    tn, fp, fn, tp = confusion(y_true, y_pred)
    return [[tn, fp], [fn, tp]]


def precision(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    _, fp, _, tp = confusion(y_true, y_pred)
    return _div(tp, tp + fp)


def recall(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    _, _, fn, tp = confusion(y_true, y_pred)
    return _div(tp, tp + fn)


def f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    _, fp, fn, tp = confusion(y_true, y_pred)
    return _div(2 * tp, 2 * tp + fp + fn)


def roc_auc(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half)."""
    if len(y_true) != len(scores):
        raise ValueError("y_true and scores differ in length")
    n_pos = sum(1 for t in y_true if t)
    n_neg = len(y_true) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1  # 1-based average rank of the tie group
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    rank_sum = sum(r for r, t in zip(ranks, y_true, strict=True) if t)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    n: int
    mean_confidence: float | None
    accuracy: float | None

    @property
    def gap(self) -> float | None:
        return None if self.n == 0 else abs(self.accuracy - self.mean_confidence)  # type: ignore[operator]


def reliability(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> list[Bin]:
    """Equal-width bins of stated confidence; each bin's mean confidence and observed accuracy.
    Bin k holds [k/n, (k+1)/n); the last bin also holds 1.0."""
    sums = [[0, 0.0, 0] for _ in range(n_bins)]  # n, sum of confidence, n correct
    for c, ok in zip(confidences, correct, strict=True):
        k = min(int(c * n_bins), n_bins - 1) if c >= 0 else 0
        sums[k][0] += 1
        sums[k][1] += c
        sums[k][2] += 1 if ok else 0
    return [Bin(k / n_bins, (k + 1) / n_bins, int(n), (s / n) if n else None, (h / n) if n else None) for k, (n, s, h) in enumerate(sums)]


def ece(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> float | None:
    """Expected calibration error: sum over bins of (share of leads) x |accuracy - mean confidence|."""
    total = len(confidences)
    if not total:
        return None
    return sum(b.n / total * b.gap for b in reliability(confidences, correct, n_bins) if b.gap is not None)  # gap is None iff n == 0


@dataclass(frozen=True)
class TierRow:
    tier: str
    n: int
    qualified: int
    rate: float | None
    lift: float | None


def tier_table(tiers: Sequence[str], y_true: Sequence[int], order: Sequence[str]) -> list[TierRow]:
    """Per tier (in ``order``): leads, qualified outcomes, outcome rate and lift over the overall base rate."""
    base = _div(sum(y_true), len(y_true))
    rows = []
    for name in order:
        ys = [y for t, y in zip(tiers, y_true, strict=True) if t == name]
        rate = _div(sum(ys), len(ys)) if ys else None
        rows.append(TierRow(name, len(ys), sum(ys), rate, (rate / base) if rate is not None and base else None))
    return rows


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    flagged: float = 0.0  # share of leads sent to review (review-threshold sweep only)
    n: int = 0


def score_cut_sweep(y_true: Sequence[int], scores: Sequence[float]) -> list[CurvePoint]:
    """Call "qualified" when score >= cut, for every distinct score (ascending cut). Also the PR curve."""
    out = []
    for cut in sorted(set(scores)):
        pred = [1 if s >= cut else 0 for s in scores]
        out.append(CurvePoint(cut, precision(y_true, pred), recall(y_true, pred), f1(y_true, pred), n=sum(pred)))
    return out


def review_sweep(y_true: Sequence[int], y_pred: Sequence[int], confidences: Sequence[float]) -> list[CurvePoint]:
    """Flag for review when confidence < t, for every distinct confidence (and 0): precision and recall
    of the calls left unflagged, and the share flagged."""
    n = len(y_true)
    out = []
    for t in sorted({0.0, *confidences}):
        keep = [i for i, c in enumerate(confidences) if c >= t]
        yt = [y_true[i] for i in keep]
        yp = [y_pred[i] for i in keep]
        out.append(CurvePoint(t, precision(yt, yp), recall(yt, yp), f1(yt, yp), flagged=_div(n - len(keep), n), n=len(keep)))
    return out


def pick(
    points: Sequence[CurvePoint], precision_target: float | None, *, prefer_low_flagging: bool = False
) -> tuple[CurvePoint | None, str]:
    """The point that meets the precision target at the best recall (ties: higher precision, then less
    flagging), or the best F1 when there is no target. Returns (point, why)."""
    if not points:
        return None, "no data"
    if precision_target is not None:
        ok = [p for p in points if p.precision >= precision_target and p.n > 0]
        if not ok:
            return None, f"no setting reaches precision {precision_target:.2f}"
        best = max(ok, key=lambda p: (p.recall, p.precision, -p.flagged if prefer_low_flagging else 0.0))
        return best, f"meets precision >= {precision_target:.2f} with the best recall"
    best = max(points, key=lambda p: (p.f1, -p.flagged if prefer_low_flagging else 0.0, p.precision))
    return best, "best F1 (no precision target set)"


@dataclass
class Item:
    """One labeled lead's result, as the metrics need it."""

    lead_id: str
    outcome: int  # 1 = qualified
    scored: bool
    status: str = "scored"
    score: float | None = None
    tier: str | None = None
    confidence: float | None = None
    needs_review: bool = False
    escalated: bool = False
    fell_back: bool = False
    cost_usd: float = 0.0


@dataclass
class Targets:
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    max_ece: float | None = None


@dataclass
class Evaluation:
    n_labeled: int
    n_scored: int
    unscored: dict[str, int]
    base_rate: float | None
    precision: float
    recall: float
    f1: float
    confusion: list[list[int]]
    auc: float | None
    ece: float | None
    reliability: list[Bin]
    tiers: list[TierRow]
    flagged_share: float
    unflagged_precision: float
    unflagged_recall: float
    escalation_rate: float
    fallback_rate: float
    cost_per_lead: float
    cost_total: float
    pr_curve: list[CurvePoint]
    cut_advice: tuple[CurvePoint | None, str]
    review_advice: tuple[CurvePoint | None, str]
    checks: list[tuple[str, float, float | None, bool]] = field(default_factory=list)  # (name, target, value, passed)
    stability: float | None = None
    scores_by_outcome: dict[int, list[float]] = field(default_factory=dict)
    extra: list[tuple[str, str]] = field(default_factory=list)  # more summary rows (eval --learned: P(qualified), LLM calls)

    @property
    def passed(self) -> bool:
        return all(ok for *_, ok in self.checks)


def evaluate(
    items: Sequence[Item],
    qualified_tiers: Sequence[str],
    tier_order: Sequence[str],
    targets: Targets | Mapping[str, Any] | None = None,
    stability: float | None = None,
) -> Evaluation:
    """Every number of the report, from the per-lead results. Unscored leads are counted, not measured."""
    if isinstance(targets, Mapping):
        targets = Targets(**targets)
    targets = targets or Targets()
    qual = set(qualified_tiers)
    scored = [it for it in items if it.scored and it.tier is not None]
    unscored: dict[str, int] = {}
    for it in items:
        if not (it.scored and it.tier is not None):
            unscored[it.status] = unscored.get(it.status, 0) + 1
    y = [it.outcome for it in scored]
    pred = [1 if it.tier in qual else 0 for it in scored]
    scores = [float(it.score or 0) for it in scored]
    conf = [float(it.confidence or 0.0) for it in scored]
    correct = [p == t for p, t in zip(pred, y, strict=True)]
    unflagged = [i for i, it in enumerate(scored) if not it.needs_review]
    yu = [y[i] for i in unflagged]
    pu = [pred[i] for i in unflagged]
    n_all = len(items)
    cost_total = sum(it.cost_usd for it in items)
    ev = Evaluation(
        n_labeled=n_all,
        n_scored=len(scored),
        unscored=unscored,
        base_rate=_div(sum(y), len(y)) if y else None,
        precision=precision(y, pred),
        recall=recall(y, pred),
        f1=f1(y, pred),
        confusion=confusion_matrix(y, pred),
        auc=roc_auc(y, scores),
        ece=ece(conf, correct),
        reliability=reliability(conf, correct),
        tiers=tier_table([it.tier for it in scored], y, tier_order),  # type: ignore[misc]
        flagged_share=_div(sum(1 for it in scored if it.needs_review), len(scored)),
        unflagged_precision=precision(yu, pu),
        unflagged_recall=recall(yu, pu),
        escalation_rate=_div(sum(it.escalated for it in scored), len(scored)),
        fallback_rate=_div(sum(it.fell_back for it in items), n_all),
        cost_per_lead=_div(cost_total, n_all),
        cost_total=cost_total,
        pr_curve=score_cut_sweep(y, scores),
        cut_advice=pick(score_cut_sweep(y, scores), targets.precision),
        review_advice=pick(review_sweep(y, pred, conf), targets.precision, prefer_low_flagging=True),
        stability=stability,
        scores_by_outcome={1: [s for s, t in zip(scores, y, strict=True) if t], 0: [s for s, t in zip(scores, y, strict=True) if not t]},
    )
    for name, target, value in (
        ("precision", targets.precision, ev.precision),
        ("recall", targets.recall, ev.recall),
        ("f1", targets.f1, ev.f1),
    ):
        if target is not None:
            ev.checks.append((name, target, value if scored else None, bool(scored) and value >= target))
    if targets.max_ece is not None:
        ev.checks.append(("max_ece", targets.max_ece, ev.ece, ev.ece is not None and ev.ece <= targets.max_ece))
    return ev


def stability(tiers_per_run: Sequence[Sequence[str | None]]) -> float | None:
    """Share of leads given the same tier in every run (leads unscored in any run count as unstable).
    ``tiers_per_run[r][i]`` is lead i's tier in run r."""
    if len(tiers_per_run) < 2 or not tiers_per_run[0]:
        return None
    n = len(tiers_per_run[0])
    same = sum(1 for i in range(n) if tiers_per_run[0][i] is not None and all(run[i] == tiers_per_run[0][i] for run in tiers_per_run))
    return same / n
