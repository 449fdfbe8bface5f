"""Drift: the population stability index (PSI) of each input and of the score, now against the training window.

PSI = Σ (now − then) · ln(now / then) over bins. A common reading: under 0.1 stable, 0.1–0.25 moving, over 0.25 a
different population (the ``[learn] drift_psi_alarm`` default). Numeric inputs are binned at the training deciles
(plus a "missing" bin), categorical ones by the training categories (plus "other"), scores in tens.

The serving window lives next to the model (``window.json``), fed by the learned provider as it scores, so
`crmsync status` (another process) and /metrics read the same numbers. Counts decay by half once they reach
``WINDOW`` leads, so the window follows the recent population rather than everything since promotion.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .features import FeatureSpec, as_category, as_number

WINDOW = 2000  # leads: counts halve when the window reaches this many
MIN_LEADS = 100  # fewer leads than this in the window: no verdict
EPS = 1e-4
SCORE_EDGES = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
WINDOW_FILE = "window.json"


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI between two histograms (counts or shares, same bins)."""
    te, ta = sum(expected) or 1.0, sum(actual) or 1.0
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / te, EPS), max(a / ta, EPS)
        total += (pa - pe) * math.log(pa / pe)
    return total


def _edges(values: Sequence[float]) -> list[float]:
    vals = sorted(values)
    if not vals:
        return []
    qs = {vals[min(len(vals) - 1, int(len(vals) * k / 10))] for k in range(1, 10)}
    return sorted(qs)


def _bin(baseline: Mapping[str, Any], name: str, value: Any) -> int:
    b = baseline["inputs"][name]
    if b["kind"] == "numeric":
        v = as_number(value)
        return len(b["edges"]) + 1 if v is None else bisect_right(b["edges"], v)
    cats = b["categories"]
    c = as_category(value)
    return cats.index(c) if c in cats else len(cats)


def baseline(spec: FeatureSpec, rows: Sequence[Mapping[str, Any]], scores: Sequence[float], max_categories: int = 30) -> dict[str, Any]:
    """The training window's histograms (stored in the model card)."""
    out: dict[str, Any] = {"n": len(rows), "inputs": {}}
    for name in spec.numeric:
        edges = _edges([v for r in rows if (v := as_number(r.get(name))) is not None])
        out["inputs"][name] = {"kind": "numeric", "edges": edges, "counts": [0] * (len(edges) + 2)}
    for name in spec.categorical:
        freq: dict[str, int] = {}
        for r in rows:
            c = as_category(r.get(name))
            freq[c] = freq.get(c, 0) + 1
        cats = [c for c, _ in sorted(freq.items(), key=lambda kv: -kv[1])[:max_categories]]
        out["inputs"][name] = {"kind": "categorical", "categories": cats, "counts": [0] * (len(cats) + 1)}
    for r in rows:
        for name in out["inputs"]:
            out["inputs"][name]["counts"][_bin(out, name, r.get(name))] += 1
    out["scores"] = score_hist(scores)
    return out


def score_hist(scores: Sequence[float]) -> list[int]:
    h = [0] * (len(SCORE_EDGES) + 1)
    for s in scores:
        h[bisect_right(SCORE_EDGES, float(s))] += 1
    return h


@dataclass(frozen=True)
class DriftReport:
    n: int  # leads in the window
    inputs: dict[str, float]  # input → PSI
    scores: float | None
    alarm_at: float

    @property
    def worst(self) -> tuple[str, float] | None:
        items = [*self.inputs.items(), *([("score", self.scores)] if self.scores is not None else [])]
        return max(items, key=lambda kv: kv[1]) if items else None

    @property
    def enough(self) -> bool:
        return self.n >= MIN_LEADS

    @property
    def alarm(self) -> bool:
        w = self.worst
        return self.enough and w is not None and w[1] > self.alarm_at

    def line(self) -> str:
        if not self.enough:
            return f"{self.n} lead(s) scored since training; drift is judged from {MIN_LEADS}"
        name, value = self.worst or ("-", 0.0)
        verdict = "DRIFT: the leads no longer look like the training window; retrain" if self.alarm else "stable"
        score = f"score PSI {self.scores:.3f}, " if self.scores is not None else ""
        return f"{verdict} ({score}largest {name} PSI {value:.3f}, alarm above {self.alarm_at:g}; {self.n} recent leads)"


def compare(base: Mapping[str, Any], window: Mapping[str, Any], alarm_at: float) -> DriftReport:
    inputs = {name: psi(b["counts"], window["inputs"][name]) for name, b in base["inputs"].items() if name in window.get("inputs", {})}
    scores = psi(base["scores"], window["scores"]) if window.get("scores") and sum(window["scores"]) else None
    return DriftReport(int(window.get("n", 0)), inputs, scores, alarm_at)


def window_of(base: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], scores: Sequence[float]) -> dict[str, Any]:
    """A window built at once from rows (bench, eval): the same bins as ``base``."""
    w = Window(base)
    for r, s in zip(rows, scores, strict=True):
        w.add(r, s)
    return w.snapshot()


class Window:
    """The serving window: bin counts of what the model sees, thread safe, decaying at ``WINDOW`` leads."""

    def __init__(self, base: Mapping[str, Any], path: Path | None = None, flush_every: int = 200) -> None:
        self.base = base
        self.path = path
        self.flush_every = flush_every
        self._lock = threading.Lock()
        self._since_flush = 0
        self.n = 0.0
        self.inputs = {name: [0.0] * len(b["counts"]) for name, b in base["inputs"].items()}
        self.scores = [0.0] * (len(SCORE_EDGES) + 1)
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                self.n, self.scores = float(saved["n"]), list(saved["scores"])
                self.inputs.update({k: list(v) for k, v in saved["inputs"].items() if k in self.inputs})
            except (ValueError, KeyError, OSError):
                pass  # a damaged window only costs its history

    def add(self, row: Mapping[str, Any], score: float) -> None:
        with self._lock:
            if self.n >= WINDOW:
                self.n /= 2
                self.scores = [c / 2 for c in self.scores]
                self.inputs = {k: [c / 2 for c in v] for k, v in self.inputs.items()}
            self.n += 1
            for name in self.inputs:
                self.inputs[name][_bin(self.base, name, row.get(name))] += 1
            self.scores[bisect_right(SCORE_EDGES, float(score))] += 1
            self._since_flush += 1
            due = self.path is not None and self._since_flush >= self.flush_every
        if due:
            self.flush()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"n": round(self.n), "inputs": {k: list(v) for k, v in self.inputs.items()}, "scores": list(self.scores)}

    def flush(self) -> None:
        if self.path is None:
            return
        snap = self.snapshot()
        with self._lock:
            self._since_flush = 0
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".window.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(snap, fh)
        os.replace(tmp, self.path)
