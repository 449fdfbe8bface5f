"""The eval report as one self-contained HTML page with inline SVG plots, rendered from templates/report.html.j2.

Python computes what to draw (numbers and labels, in SVG coordinates); the template says how it looks. Jinja2 is
used for its autoescaping: lead fields (a company name in the changed-tier table) are written by strangers, and an
HTML page must not let them add markup or script to the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .metrics import Evaluation

W, H, PAD = 360, 260, 40  # one plot: width, height, left/bottom margin for the axes


def _xy(x: float, y: float, ymax: float = 1.0) -> tuple[float, float]:
    return round(PAD + (W - 10 - PAD) * x, 1), round((H - PAD) - (H - PAD - 10) * (y / ymax if ymax else 0), 1)


def axes(xlabel: str, ylabel: str, ymax: float = 1.0) -> dict[str, Any]:
    x0, y0, x1, y1 = PAD, H - PAD, W - 10, 10
    digits = 0 if ymax > 5 else 1
    return {
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "mid_x": (x0 + x1) / 2,
        "mid_y": (y0 + y1) / 2,
        "ticks": [
            (round(x0 + (x1 - x0) * k / 5, 1), f"{k / 5:g}", round(y0 - (y0 - y1) * k / 5 + 3, 1), f"{ymax * k / 5:.{digits}f}")
            for k in range(6)
        ],
    }


def reliability_plot(ev: Evaluation) -> dict[str, Any]:
    bars = []
    for b in ev.reliability:
        if b.n:
            (bx0, by0), (bx1, by1) = _xy(b.lo, 0), _xy(b.hi, b.accuracy or 0)
            cx, cy = _xy(b.mean_confidence or 0, b.accuracy or 0)
            bars.append(
                {
                    "x": round(bx0 + 1, 1),
                    "y": by1,
                    "w": round(bx1 - bx0 - 2, 1),
                    "h": round(by0 - by1, 1),
                    "cx": cx,
                    "cy": cy,
                    "tip": f"{b.lo:.1f}-{b.hi:.1f}: n={b.n}, accuracy {b.accuracy:.2f}",
                }
            )
    return {
        "title": "Reliability diagram",
        "axes": axes("stated confidence", "observed accuracy"),
        "diagonal": (*_xy(0, 0), *_xy(1, 1)),
        "bars": bars,
    }


def pr_plot(ev: Evaluation) -> dict[str, Any]:
    pts = sorted(((p.recall, p.precision, p.threshold) for p in ev.pr_curve), key=lambda t: (t[0], -t[1]))
    points = [{"xy": _xy(r, p), "tip": f"score >= {t:g}: precision {p:.2f}, recall {r:.2f}"} for r, p, t in pts]
    base = None if ev.base_rate is None else (*_xy(0, ev.base_rate), _xy(1, ev.base_rate)[0])
    return {
        "title": "Precision-recall curve (score cut sweep)",
        "axes": axes("recall", "precision"),
        "points": points,
        "line": " ".join(f"{x},{y}" for x, y in (p["xy"] for p in points)),
        "base": base,
    }


def histogram_plot(ev: Evaluation, bins: int = 10) -> dict[str, Any]:
    counts = {k: [0] * bins for k in (0, 1)}
    for k, vals in ev.scores_by_outcome.items():
        for v in vals:
            counts[k][min(int(v / (100 / bins)), bins - 1)] += 1
    ymax = max([1, *counts[0], *counts[1]])
    bars = []
    for k, label, color in ((0, "unqualified", "#c0392b"), (1, "qualified", "#27ae60")):
        for i, n in enumerate(counts[k]):
            if n:
                x0, y0 = _xy(i / bins + (0.5 / bins if k else 0), 0, ymax)
                x1, y1 = _xy(i / bins + (1 / bins if k else 0.5 / bins), n, ymax)
                bars.append(
                    {
                        "x": round(x0 + 0.5, 1),
                        "y": y1,
                        "w": round(x1 - x0 - 1, 1),
                        "h": round(y0 - y1, 1),
                        "color": color,
                        "tip": f"{label}, scores {i * 100 // bins}-{(i + 1) * 100 // bins}: {n}",
                    }
                )
    return {"title": "Score histogram per outcome", "axes": axes("score / 100", "leads", ymax), "bars": bars, "legend_x": W - 12}


def render(
    title: str,
    evs: dict[str, Evaluation],
    meta: dict[str, str],
    changes: Sequence[dict[str, Any]] | None,
    summary: dict[str, list[tuple[str, str]]],
    advice: dict[str, list[str]],
) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("crmsync.evaluation", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    names = list(evs)
    keys = list(dict.fromkeys(k for n in names for k, _ in summary[n]))
    per = {n: dict(summary[n]) for n in names}
    runs = [
        {"name": n, "ev": evs[n], "advice": advice[n], "plots": [reliability_plot(evs[n]), pr_plot(evs[n]), histogram_plot(evs[n])]}
        for n in names
    ]
    return env.get_template("report.html.j2").render(
        title=title,
        meta=[*meta.items(), ("generated", datetime.now(UTC).isoformat(timespec="seconds"))],
        names=names,
        rows=[(k, [per[n].get(k, "-") for n in names]) for k in keys],
        runs=runs,
        changes=changes,
        W=W,
        H=H,
    )
