"""The eval report: a rich terminal summary and a self-contained HTML page with inline SVG plots."""
from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from .metrics import Evaluation


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def summary_rows(ev: Evaluation) -> list[tuple[str, str]]:
    (tn, fp), (fn, tp) = ev.confusion
    un = ", ".join(f"{k} {v}" for k, v in sorted(ev.unscored.items())) or "none"
    rows = [
        ("labeled leads", str(ev.n_labeled)),
        ("scored (in metrics)", str(ev.n_scored)),
        ("not scored (excluded)", un),
        ("base rate (qualified)", _pct(ev.base_rate)),
        ("precision", _f(ev.precision)),
        ("recall", _f(ev.recall)),
        ("F1", _f(ev.f1)),
        ("confusion tn/fp/fn/tp", f"{tn}/{fp}/{fn}/{tp}"),
        ("ROC AUC (score)", _f(ev.auc)),
        ("ECE (10 bins)", _f(ev.ece)),
        ("flagged for review", _pct(ev.flagged_share)),
        ("precision, unflagged only", _f(ev.unflagged_precision)),
        ("recall, unflagged only", _f(ev.unflagged_recall)),
        ("escalation rate", _pct(ev.escalation_rate)),
        ("fallback rate", _pct(ev.fallback_rate)),
        ("cost per lead", f"${ev.cost_per_lead:.6f}"),
    ]
    if ev.stability is not None:
        rows.append(("rerun stability (same tier)", _pct(ev.stability)))
    return rows


def as_dict(ev: Evaluation) -> dict[str, Any]:
    """The evaluation as plain JSON-able data (curves left out)."""
    d = dataclasses.asdict(ev)
    for k in ("pr_curve", "scores_by_outcome"):
        d.pop(k)
    d["cut_advice"] = {"point": d["cut_advice"][0], "why": d["cut_advice"][1]}
    d["review_advice"] = {"point": d["review_advice"][0], "why": d["review_advice"][1]}
    d["checks"] = [{"name": n, "target": t, "value": v, "passed": ok} for n, t, v, ok in ev.checks]
    d["passed"] = ev.passed
    return d


def advice_lines(ev: Evaluation) -> list[str]:
    out = []
    cut, why = ev.cut_advice
    if cut:
        out.append(f"score cut: call 'qualified' at score >= {cut.threshold:g} -> precision {cut.precision:.3f}, recall {cut.recall:.3f}, F1 {cut.f1:.3f} ({why})")
    else:
        out.append(f"score cut: {why}")
    rv, why = ev.review_advice
    if rv:
        out.append(f"review threshold: flag confidence < {rv.threshold:.2f} -> {_pct(rv.flagged)} flagged; unflagged precision {rv.precision:.3f}, recall {rv.recall:.3f} ({why})")
    else:
        out.append(f"review threshold: {why}")
    return out


def print_report(console: Console, title: str, evs: dict[str, Evaluation], changes: list[dict[str, Any]] | None = None) -> None:
    names = list(evs)
    t = Table(title=title)
    t.add_column("metric")
    for n in names:
        t.add_column(n, justify="right")
    per = [dict(summary_rows(evs[n])) for n in names]
    for key in per[0]:
        t.add_row(key, *[p.get(key, "-") for p in per])
    console.print(t)
    for n in names:
        ev = evs[n]
        tt = Table(title=f"tiers ({n})")
        for c in ("tier", "leads", "qualified", "outcome rate", "lift"):
            tt.add_column(c, justify="right")
        for r in ev.tiers:
            tt.add_row(r.tier, str(r.n), str(r.qualified), _pct(r.rate), "-" if r.lift is None else f"{r.lift:.2f}x")
        console.print(tt)
        rt = Table(title=f"reliability ({n}): stated confidence vs accuracy of the qualified call")
        for c in ("bin", "leads", "mean confidence", "accuracy", "gap"):
            rt.add_column(c, justify="right")
        for b in ev.reliability:
            if b.n:
                rt.add_row(f"{b.lo:.1f}-{b.hi:.1f}", str(b.n), _f(b.mean_confidence), _f(b.accuracy), _f(b.gap))
        console.print(rt)
        for line in advice_lines(ev):
            console.print(f"[cyan]advice ({n})[/cyan] {line}", highlight=False)
        for name, target, value, ok in ev.checks:
            cmp = "<=" if name == "max_ece" else ">="
            tag = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
            console.print(f"{tag} {n}: {name} {_f(value)} (target {cmp} {target:g})", highlight=False)
    if changes is not None:
        ct = Table(title=f"{len(changes)} lead(s) changed tier")
        for c in ("id", "company", "outcome", "tier", "score"):
            ct.add_column(c)
        for ch in changes:
            ct.add_row(ch["id"], str(ch["company"]), ch["outcome"], f"{ch['before']} -> {ch['after']}", f"{ch['score_before']} -> {ch['score_after']}")
        console.print(ct)


# ---------------------------------------------------------------------------------------------- SVG
W, H, PAD = 360, 260, 40


def _axes(xlabel: str, ylabel: str, ymax: float = 1.0) -> list[str]:
    x0, y0, x1, y1 = PAD, H - PAD, W - 10, 10
    s = [f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>', f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>']
    for k in range(6):
        fx = x0 + (x1 - x0) * k / 5
        fy = y0 - (y0 - y1) * k / 5
        s.append(f'<text x="{fx:.1f}" y="{y0 + 14}" font-size="10" text-anchor="middle">{k / 5:g}</text>')
        s.append(f'<text x="{x0 - 4}" y="{fy + 3:.1f}" font-size="10" text-anchor="end">{ymax * k / 5:.{0 if ymax > 5 else 1}f}</text>')
    s.append(f'<text x="{(x0 + x1) / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    s.append(f'<text x="12" y="{(y0 + y1) / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {(y0 + y1) / 2})">{html.escape(ylabel)}</text>')
    return s


def _xy(x: float, y: float, ymax: float = 1.0) -> tuple[float, float]:
    return PAD + (W - 10 - PAD) * x, (H - PAD) - (H - PAD - 10) * (y / ymax if ymax else 0)


def _svg(body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">'
            f"<title>{html.escape(title)}</title>" + "".join(body) + "</svg>")


def reliability_svg(ev: Evaluation) -> str:
    s = _axes("stated confidence", "observed accuracy")
    (ax, ay), (bx, by) = _xy(0, 0), _xy(1, 1)
    s.append(f'<line x1="{ax}" y1="{ay}" x2="{bx}" y2="{by}" stroke="#999" stroke-dasharray="4 3"/>')
    for b in ev.reliability:
        if b.n:
            x0, y0 = _xy(b.lo, 0)
            x1, y1 = _xy(b.hi, b.accuracy or 0)
            s.append(f'<rect x="{x0 + 1:.1f}" y="{y1:.1f}" width="{x1 - x0 - 2:.1f}" height="{y0 - y1:.1f}" fill="#4a7fb5" opacity="0.75"><title>{b.lo:.1f}-{b.hi:.1f}: n={b.n}, accuracy {b.accuracy:.2f}</title></rect>')
            cx, cy = _xy(b.mean_confidence or 0, b.accuracy or 0)
            s.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#c0392b"/>')
    return _svg(s, "Reliability diagram")


def pr_svg(ev: Evaluation) -> str:
    s = _axes("recall", "precision")
    pts = sorted(((p.recall, p.precision, p.threshold) for p in ev.pr_curve), key=lambda t: (t[0], -t[1]))
    if pts:
        s.append('<polyline fill="none" stroke="#4a7fb5" stroke-width="2" points="' + " ".join("%.1f,%.1f" % _xy(r, p) for r, p, _ in pts) + '"/>')
        for r, p, t in pts:
            x, y = _xy(r, p)
            s.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#4a7fb5"><title>score >= {t:g}: precision {p:.2f}, recall {r:.2f}</title></circle>')
    if ev.base_rate is not None:
        (ax, ay), (bx, _) = _xy(0, ev.base_rate), _xy(1, ev.base_rate)
        s.append(f'<line x1="{ax}" y1="{ay:.1f}" x2="{bx}" y2="{ay:.1f}" stroke="#999" stroke-dasharray="4 3"><title>base rate</title></line>')
    return _svg(s, "Precision-recall curve (score cut sweep)")


def histogram_svg(ev: Evaluation, bins: int = 10) -> str:
    counts = {k: [0] * bins for k in (0, 1)}
    for k, vals in ev.scores_by_outcome.items():
        for v in vals:
            counts[k][min(int(v / (100 / bins)), bins - 1)] += 1
    ymax = max([1, *counts[0], *counts[1]])
    s = _axes("score / 100", "leads", ymax)
    colors = {1: "#27ae60", 0: "#c0392b"}
    for k in (0, 1):
        for i, n in enumerate(counts[k]):
            if n:
                x0, y0 = _xy(i / bins + (0.5 / bins if k else 0), 0, ymax)
                x1, y1 = _xy(i / bins + (1 / bins if k else 0.5 / bins), n, ymax)
                label = "qualified" if k else "unqualified"
                s.append(f'<rect x="{x0 + 0.5:.1f}" y="{y1:.1f}" width="{x1 - x0 - 1:.1f}" height="{y0 - y1:.1f}" fill="{colors[k]}"><title>{label}, scores {i * 100 // bins}-{(i + 1) * 100 // bins}: {n}</title></rect>')
    s.append(f'<text x="{W - 12}" y="22" font-size="10" text-anchor="end" fill="{colors[1]}">qualified</text>')
    s.append(f'<text x="{W - 12}" y="36" font-size="10" text-anchor="end" fill="{colors[0]}">unqualified</text>')
    return _svg(s, "Score histogram per outcome")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in headers)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def html_report(title: str, evs: dict[str, Evaluation], meta: dict[str, str], changes: list[dict[str, Any]] | None = None) -> str:
    names = list(evs)
    per = [dict(summary_rows(evs[n])) for n in names]
    parts = [f"<h1>{html.escape(title)}</h1>",
             _table(["", ""], [(k, v) for k, v in meta.items()] + [("generated", datetime.now(timezone.utc).isoformat(timespec="seconds"))]),
             "<h2>Summary</h2>", _table(["metric", *names], [(k, *[p.get(k, "-") for p in per]) for k in per[0]])]
    for n in names:
        ev = evs[n]
        parts.append(f"<h2>{html.escape(n)}</h2>")
        if ev.checks:
            parts.append(_table(["target", "goal", "value", "result"], [
                (name, ("<= " if name == "max_ece" else ">= ") + f"{t:g}", _f(v), "PASS" if ok else "FAIL") for name, t, v, ok in ev.checks]))
        parts.append('<div class="plots">' + reliability_svg(ev) + pr_svg(ev) + histogram_svg(ev) + "</div>")
        parts.append(_table(["tier", "leads", "qualified", "outcome rate", "lift"],
                            [(r.tier, r.n, r.qualified, _pct(r.rate), "-" if r.lift is None else f"{r.lift:.2f}x") for r in ev.tiers]))
        parts.append(_table(["confidence bin", "leads", "mean confidence", "accuracy", "gap"],
                            [(f"{b.lo:.1f}-{b.hi:.1f}", b.n, _f(b.mean_confidence), _f(b.accuracy), _f(b.gap)) for b in ev.reliability]))
        parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in advice_lines(ev)) + "</ul>")
    if changes is not None:
        parts.append(f"<h2>{len(changes)} lead(s) changed tier</h2>")
        parts.append(_table(["id", "company", "outcome", "tier", "score"],
                            [(c["id"], c["company"], c["outcome"], f"{c['before']} → {c['after']}", f"{c['score_before']} → {c['score_after']}") for c in changes]))
    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
           ".plots{display:flex;gap:1em;flex-wrap:wrap}svg{border:1px solid #eee;font-family:sans-serif}")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{css}</style></head>'
            f"<body>{''.join(parts)}</body></html>\n")
