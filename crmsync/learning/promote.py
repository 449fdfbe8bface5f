"""The promotion rule: never replace the serving model silently. A new version serves only when its held-out
metrics meet ``[eval.targets]`` and it beats the serving one on the same held-out leads, ones neither model was
trained on. Otherwise it is kept on disk, not serving, and the message says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .artefact import Store, Version
from .train import LabeledRow, Trained, predict_raw

MIN_COMPARE = 30  # held-out leads both models never saw, below which "beats" cannot be judged


@dataclass(frozen=True)
class Decision:
    promote: bool
    why: str


def target_misses(held: Mapping[str, Any], targets: Mapping[str, float | None]) -> list[str]:
    """Each ``[eval.targets]`` the held-out metrics miss, as "precision 0.210 < 0.25"."""
    out = []
    for name in ("precision", "recall", "f1"):
        t = targets.get(name)
        if t is not None and (held.get(name) is None or held[name] < t):
            out.append(f"{name} {held.get(name)} < {t:g}")
    t = targets.get("max_ece")
    if t is not None and (held.get("ece") is None or held["ece"] > t):
        out.append(f"ECE {held.get('ece')} > {t:g}")
    return out


def _auc(y: Sequence[int], s: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < sum(y) < len(y) else None


def decide(new: Trained, store: Store, targets: Mapping[str, float | None]) -> Decision:
    """Whether ``new`` may replace what serves in ``store`` (nothing serving: it only has to meet the targets)."""
    held = new.card["metrics"].get("held_out", {})
    misses = target_misses(held, targets)
    if misses:
        return Decision(False, f"held-out metrics miss [eval.targets]: {'; '.join(misses)}")
    current = store.current()
    if current is None:
        return Decision(True, f"first model; held-out ROC AUC {held.get('auc')}, meets [eval.targets]")
    return beats(new.test_rows, new.test_raw, current, store)


def beats(rows: Sequence[LabeledRow], new_scores: Sequence[float], current: Version, store: Store) -> Decision:
    """Compare on the held-out leads the serving model did not train on, by ROC AUC."""
    seen = set(current.card().get("train_ids", []))
    keep = [i for i, r in enumerate(rows) if r.lead_id not in seen]
    y = [rows[i].outcome for i in keep]
    if len(keep) < MIN_COMPARE or not 0 < sum(y) < len(y):
        return Decision(
            False,
            f"cannot tell whether it beats the serving {current.name}: only {len(keep)} held-out lead(s) "
            f"({sum(y)} qualified) were not in its training data; label more leads and train again",
        )
    old = predict_raw(store.load(current), [rows[i].inputs for i in keep])
    a_new, a_old = _auc(y, [new_scores[i] for i in keep]), _auc(y, old)
    assert a_new is not None and a_old is not None
    if a_new <= a_old:
        return Decision(
            False,
            f"it does not beat the serving {current.name}: ROC AUC {a_new:.4f} against {a_old:.4f} on the same "
            f"{len(keep)} held-out leads; the serving model stays",
        )
    return Decision(True, f"ROC AUC {a_new:.4f} against {a_old:.4f} for {current.name} on the same {len(keep)} held-out leads")
