"""From a lead's mapped inputs to a model matrix: numeric inputs scaled, categorical inputs one-hot, free text and
identifiers skipped. And the leak guard, which refuses what the model must never see:

- a field whose name says it is set after the outcome (status, stage, owner, converted ...): the CRM fills it
  because the lead qualified, so a model trained on it learns nothing it could use on a new lead;
- any field that on its own separates the outcome almost perfectly (the label under another name).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CrmsyncError

MISSING = "(missing)"
# Set after (or because of) the outcome. Matched as a word part: lead_status, LeadStatus, OwnerId, IsConverted.
LEAK_PARTS = ("status", "stage", "owner", "convert", "disqualif", "qualified", "closed", "lifecycle")
LEAK_WORDS = {"won", "lost", "label", "y", "target"}
NUMERIC_SHARE = 0.95  # a field is numeric when this share of its non-empty values parse as numbers


class LeakRefused(CrmsyncError):
    """A feature the model must not learn from. The message names the field and why."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which inputs the model reads, and how. Stored in the model card and with the model."""

    numeric: list[str]
    categorical: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # input → why it is not a feature

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        return cls(list(d["numeric"]), list(d["categorical"]), dict(d.get("skipped", {})))


def name_parts(name: str) -> list[str]:
    """lead_status → [lead, status]; LeadStatus → [lead, status]; hs_lifecyclestage → [hs, lifecyclestage]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [p for p in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if p]


def leaky_name(name: str) -> str | None:
    """The word that makes ``name`` look like a field set after the outcome, or None."""
    for part in name_parts(name):
        if part in LEAK_WORDS:
            return part
        for word in LEAK_PARTS:
            if word in part:
                return word
    return None


def as_number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    s = str(v).strip().replace(",", "").replace("_", "")
    if not s:
        return None
    try:
        f = float(s)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def as_category(v: Any) -> str:
    if v is None or (isinstance(v, str) and not v.strip()):
        return MISSING
    return str(v).strip().lower()


def infer_spec(rows: Sequence[Mapping[str, Any]], names: Sequence[str], *, allow: Sequence[str] = ()) -> FeatureSpec:
    """Numeric, categorical or skipped, per input, from the training rows. Refuses leaky names (LeakRefused)."""
    leaks = [(n, w) for n in names if n not in allow and (w := leaky_name(n))]
    if leaks:
        what = ", ".join(f"`{n}` (looks like {'an' if w[0] in 'aeiou' else 'a'} {w} field)" for n, w in leaks)
        raise LeakRefused(
            f"refused: {what} is set after the outcome is known, so a model trained on it would look good and predict nothing "
            f"for a new lead. Remove it from [fields] inputs, or, if it really is known when the lead arrives, "
            f"list it in [learn] allow_fields."
        )
    numeric, categorical, skipped = [], [], {}
    n = len(rows)
    for name in names:
        values = [r.get(name) for r in rows]
        present = [v for v in values if v not in (None, "")]
        if not present:
            skipped[name] = "always empty"
            continue
        if sum(as_number(v) is not None for v in present) >= NUMERIC_SHARE * len(present):
            numeric.append(name)
            continue
        distinct = len({as_category(v) for v in present})
        if distinct > max(50, n // 2):  # company names, descriptions, websites, ids: nothing to one-hot
            skipped[name] = f"free text or an identifier: {distinct} distinct values in {n} leads"
        elif distinct < 2:
            skipped[name] = "one value only"
        else:
            categorical.append(name)
    if not numeric and not categorical:
        raise CrmsyncError("no usable feature: every mapped input is empty, constant or free text")
    return FeatureSpec(numeric, categorical, skipped)


def to_matrix(spec: FeatureSpec, rows: Sequence[Mapping[str, Any]]) -> Any:
    """An object array, one column per feature in ``spec.columns`` order: floats (nan when missing), then strings."""
    import numpy as np

    out = np.empty((len(rows), len(spec.columns)), dtype=object)
    for i, r in enumerate(rows):
        for j, name in enumerate(spec.numeric):
            v = as_number(r.get(name))
            out[i, j] = np.nan if v is None else v
        for j, name in enumerate(spec.categorical, len(spec.numeric)):
            out[i, j] = as_category(r.get(name))
    return out


def _to_float(x: Any) -> Any:  # module level: it is pickled with the pipeline
    return x.astype(float)


def build_pipeline(spec: FeatureSpec, algorithm: str, max_categories: int = 30, seed: int = 0) -> Any:
    """One sklearn Pipeline: impute + scale numbers (with a missing flag), one-hot categories, then the classifier.
    Class imbalance: ``class_weight="balanced"`` for both algorithms."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    k = len(spec.numeric)
    parts = []
    if spec.numeric:
        parts.append(
            (
                "num",
                Pipeline(
                    [
                        ("float", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
                        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                list(range(k)),
            )
        )
    if spec.categorical:
        parts.append(
            (
                "cat",
                OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_categories, sparse_output=False),
                list(range(k, k + len(spec.categorical))),
            )
        )
    if algorithm == "gbt":
        clf: Any = HistGradientBoostingClassifier(
            class_weight="balanced", max_iter=300, learning_rate=0.05, early_stopping=True, random_state=seed
        )
    elif algorithm == "logistic":
        clf = LogisticRegression(class_weight="balanced", max_iter=2000)
    else:
        raise CrmsyncError(f"unknown algorithm {algorithm!r}: use logistic or gbt")
    return Pipeline([("features", ColumnTransformer(parts)), ("model", clf)])


def separation_check(spec: FeatureSpec, rows: Sequence[Mapping[str, Any]], y: Sequence[int], max_auc: float, seed: int = 0) -> None:
    """Refuse (LeakRefused) a single feature that separates the outcome almost perfectly on its own. Categories are
    target-encoded out of fold, so an identifier unique per lead does not look perfect by memorising."""
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import KFold

    yy = np.asarray(y, dtype=float)
    if yy.min() == yy.max():
        return
    worst: list[tuple[float, str]] = []
    for name in spec.numeric:
        vals = np.array([np.nan if (v := as_number(r.get(name))) is None else v for r in rows], dtype=float)
        fill = (np.nanmin(vals) - 1.0) if np.isfinite(vals).any() else 0.0  # "missing" is a value of its own
        auc = roc_auc_score(yy, np.where(np.isnan(vals), fill, vals))
        worst.append((max(auc, 1 - auc), name))
    prior = yy.mean()
    for name in spec.categorical:
        cats = np.array([as_category(r.get(name)) for r in rows], dtype=object)
        enc = np.full(len(rows), prior)
        for fit_idx, val_idx in KFold(5, shuffle=True, random_state=seed).split(cats):
            sums: dict[str, list[float]] = {}
            for c, t in zip(cats[fit_idx], yy[fit_idx], strict=True):
                s = sums.setdefault(c, [0.0, 0.0])
                s[0] += t
                s[1] += 1
            enc[val_idx] = [(sums[c][0] + prior) / (sums[c][1] + 1) if c in sums else prior for c in cats[val_idx]]
        auc = roc_auc_score(yy, enc)
        worst.append((max(auc, 1 - auc), name))
    bad = sorted((w for w in worst if w[0] >= max_auc), reverse=True)
    if bad:
        what = ", ".join(f"`{n}` (AUC {a:.3f} on its own)" for a, n in bad)
        raise LeakRefused(
            f"refused: {what} separates qualified from unqualified leads almost perfectly by itself; that is the label under "
            f"another name (a field filled when the outcome is known), not a signal a new lead carries. Remove it from "
            f"[fields] inputs ([learn] leak_auc = {max_auc:g})."
        )
