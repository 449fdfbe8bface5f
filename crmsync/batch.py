"""`crmsync score`: score a CSV or JSON Lines file with no CRM at all."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from .config import Config
from .cycle import result_values
from .errors import ConfigError
from .models import Lead, ScoreResult, ScoreStatus


def read_leads(path: Path, config: Config) -> list[Lead]:
    """Rows → leads with only the mapped inputs (columns named as the CRM fields in [fields] inputs)."""
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            rows: list[dict[str, Any]] = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from None
        else:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the input file ({exc.strerror}).") from None
    if not rows:
        raise ConfigError(f"{path}: no leads in the file.")
    mapped = config.fields.inputs
    columns = set(rows[0])
    if not columns & set(mapped.values()):
        raise ConfigError(
            f"{path}: none of the mapped input columns ({', '.join(sorted(mapped.values()))}) is in the file "
            f"(it has: {', '.join(sorted(columns))}). Fix [fields] inputs in the config or the file's header."
        )
    leads = []
    for n, row in enumerate(rows, 1):
        lead_id = str(row.get("id") or row.get("Id") or n)
        leads.append(Lead(id=lead_id, inputs={name: row.get(col) for name, col in mapped.items() if row.get(col) not in (None, "")}))
    return leads


OUT_COLUMNS = ["id", "status", "score", "tier", "confidence", "needs_review", "review_reasons", "reasons",
               "missing_or_contradictory", "provider", "model", "escalated", "fell_back", "cost_usd", "rubric_version", "hops"]


def result_row(lead: Lead, r: ScoreResult) -> dict[str, Any]:
    return {
        "id": lead.id, "status": r.status.value, "score": r.score, "tier": r.tier,
        "confidence": None if r.confidence is None else round(r.confidence, 3), "needs_review": r.needs_review,
        "review_reasons": ";".join(x.value for x in r.review_reasons), "reasons": result_values(r)["reasons"],
        "missing_or_contradictory": ";".join(r.missing_or_contradictory), "provider": r.provider, "model": r.model,
        "escalated": r.escalated, "fell_back": r.fell_back, "cost_usd": round(r.cost_usd, 8), "rubric_version": r.rubric_version,
        "hops": " > ".join(f"{h.provider}:{h.outcome.value}" + (f"({h.confidence:.2f})" if h.confidence is not None else "") for h in r.hops),
    }


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=OUT_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def summarize(results: list[tuple[Lead, ScoreResult]]) -> dict[str, Any]:
    tiers = Counter(r.tier for _, r in results if r.status == ScoreStatus.scored)
    total = sum(r.cost_usd for _, r in results)
    return {
        "leads": len(results),
        "tiers": dict(sorted(tiers.items())),
        "flagged": sum(r.needs_review for _, r in results),
        "escalations": sum(r.escalated for _, r in results),
        "fallbacks": sum(r.fell_back for _, r in results),
        "unscorable": sum(r.status == ScoreStatus.unscorable for _, r in results),
        "failures": sum(r.status == ScoreStatus.failed for _, r in results),
        "cost_total": total,
        "cost_per_lead": total / len(results) if results else 0.0,
    }
