"""crmsync.evaluation.metrics agrees exactly with scikit-learn, and the calibration/advice helpers behave."""

from __future__ import annotations

import contextlib
import math
import random
import warnings

import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from crmsync.evaluation import metrics as m


def _cases() -> list[tuple[str, list[int], list[int], list[float]]]:
    rng = random.Random(7)
    cases = []
    for k in range(25):
        n = rng.randint(1, 80)
        y = [rng.randint(0, 1) for _ in range(n)]
        p = [rng.randint(0, 1) for _ in range(n)]
        s = [float(rng.randint(0, 10 if k % 2 else 100)) for _ in range(n)]  # coarse scores: many ties
        cases.append((f"random{k}", y, p, s))
    cases += [
        ("all negative truth", [0, 0, 0, 0], [0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0]),
        ("all positive truth", [1, 1, 1], [1, 0, 1], [5.0, 5.0, 1.0]),
        ("no positive calls", [1, 0, 1, 0], [0, 0, 0, 0], [3.0, 1.0, 2.0, 2.0]),
        ("all positive calls", [1, 0, 0, 0], [1, 1, 1, 1], [9.0, 9.0, 9.0, 9.0]),
        ("everything zero", [0, 0], [0, 0], [0.0, 0.0]),
        ("perfect", [0, 1, 0, 1], [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]),
        ("all tied scores", [0, 1, 1, 0, 1], [1, 1, 0, 0, 1], [50.0] * 5),
        ("single lead", [1], [1], [80.0]),
    ]
    return cases


@pytest.mark.parametrize(("name", "y", "p", "s"), _cases(), ids=[c[0] for c in _cases()])
def test_agrees_with_sklearn(name: str, y: list[int], p: list[int], s: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        assert m.precision(y, p) == pytest.approx(precision_score(y, p, zero_division=0), abs=1e-12)
        assert m.recall(y, p) == pytest.approx(recall_score(y, p, zero_division=0), abs=1e-12)
        assert m.f1(y, p) == pytest.approx(f1_score(y, p, zero_division=0), abs=1e-12)
    assert m.confusion_matrix(y, p) == confusion_matrix(y, p, labels=[0, 1]).tolist()
    if len(set(y)) == 2:
        assert m.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    else:
        assert m.roc_auc(y, s) is None  # undefined with one class: scikit-learn warns and gives nan (older: raises)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            with contextlib.suppress(ValueError):
                assert math.isnan(roc_auc_score(y, s))


def test_ece_and_reliability_by_hand() -> None:
    conf = [0.95, 0.95, 0.55, 0.55, 0.55, 0.55, 1.0, 0.0]
    correct = [True, False, True, True, True, False, True, False]
    bins = m.reliability(conf, correct)
    assert len(bins) == 10
    assert bins[9].n == 3 and bins[9].accuracy == pytest.approx(2 / 3) and bins[9].mean_confidence == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert bins[5].n == 4 and bins[5].accuracy == 0.75
    assert bins[0].n == 1 and bins[0].accuracy == 0.0
    expected = 3 / 8 * abs(2 / 3 - 2.9 / 3) + 4 / 8 * abs(0.75 - 0.55) + 1 / 8 * 0.0
    assert m.ece(conf, correct) == pytest.approx(expected, abs=1e-12)
    assert m.ece([], []) is None


def test_tier_table_lift() -> None:
    rows = m.tier_table(["A", "A", "B", "D", "D", "D"], [1, 1, 1, 0, 0, 1], ["A", "B", "C", "D"])
    base = 4 / 6
    a, _b, c, d = rows
    assert (a.n, a.qualified, a.rate) == (2, 2, 1.0) and a.lift == pytest.approx(1 / base)
    assert c.n == 0 and c.rate is None and c.lift is None
    assert d.rate == pytest.approx(1 / 3) and d.lift == pytest.approx((1 / 3) / base)


def test_threshold_advice() -> None:
    y = [1, 1, 0, 1, 0, 0, 0, 1]
    s = [90, 80, 75, 70, 60, 40, 30, 20]
    pts = m.score_cut_sweep(y, s)
    best, why = m.pick(pts, 0.75)
    assert best is not None and best.threshold == 70 and best.precision == 0.75 and best.recall == 0.75
    assert "precision" in why
    none, why = m.pick(pts, 1.01)
    assert none is None and "no setting" in why
    by_f1, _ = m.pick(pts, None)
    assert by_f1.f1 == max(p.f1 for p in pts)
    rv = m.review_sweep([1, 0, 1, 0], [1, 1, 1, 0], [0.9, 0.4, 0.8, 0.9])
    top = m.pick(rv, 1.0, prefer_low_flagging=True)[0]
    assert top is not None and top.threshold == pytest.approx(0.8) and top.flagged == 0.25


def test_evaluate_excludes_unscored_and_checks_targets() -> None:
    items = [
        m.Item("a", 1, True, score=85, tier="A", confidence=0.9),
        m.Item("b", 0, True, score=65, tier="B", confidence=0.6, needs_review=True),
        m.Item("c", 1, True, score=30, tier="D", confidence=0.9, escalated=True),
        m.Item("d", 0, True, score=10, tier="D", confidence=0.95, cost_usd=0.002),
        m.Item("e", 1, False, status="failed", fell_back=True),
        m.Item("f", 0, False, status="unscorable"),
    ]
    ev = m.evaluate(items, ["A", "B"], ["A", "B", "C", "D"], {"precision": 0.5, "recall": 0.9, "max_ece": 0.5})
    assert ev.n_labeled == 6 and ev.n_scored == 4 and ev.unscored == {"failed": 1, "unscorable": 1}
    assert (ev.precision, ev.recall) == (0.5, 0.5)
    assert ev.unflagged_precision == 1.0 and ev.unflagged_recall == 0.5
    assert ev.flagged_share == 0.25 and ev.escalation_rate == 0.25 and ev.fallback_rate == pytest.approx(1 / 6)
    assert ev.cost_per_lead == pytest.approx(0.002 / 6)
    assert [(n, ok) for n, _, _, ok in ev.checks] == [("precision", True), ("recall", False), ("max_ece", True)]
    assert not ev.passed
    assert m.stability([["A", "B", None], ["A", "C", None]]) == pytest.approx(1 / 3)
    assert m.stability([["A"]]) is None
