"""The eval report: a rich terminal summary, JSON, and (report_html.py, a template) a self-contained HTML page."""

from __future__ import annotations

import dataclasses
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
    return rows + list(ev.extra)


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
        out.append(
            f"score cut: call 'qualified' at score >= {cut.threshold:g} -> precision {cut.precision:.3f}, "
            f"recall {cut.recall:.3f}, F1 {cut.f1:.3f} ({why})"
        )
    else:
        out.append(f"score cut: {why}")
    rv, why = ev.review_advice
    if rv:
        out.append(
            f"review threshold: flag confidence < {rv.threshold:.2f} -> {_pct(rv.flagged)} flagged; "
            f"unflagged precision {rv.precision:.3f}, recall {rv.recall:.3f} ({why})"
        )
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
            ct.add_row(
                ch["id"],
                str(ch["company"]),
                ch["outcome"],
                f"{ch['before']} -> {ch['after']}",
                f"{ch['score_before']} -> {ch['score_after']}",
            )
        console.print(ct)


def html_report(title: str, evs: dict[str, Evaluation], meta: dict[str, str], changes: list[dict[str, Any]] | None = None) -> str:
    """The self-contained HTML page (templates/report.html.j2, rendered by report_html.py)."""
    from .report_html import render

    return (
        render(title, evs, meta, changes, {n: summary_rows(e) for n, e in evs.items()}, {n: advice_lines(e) for n, e in evs.items()}) + "\n"
    )
