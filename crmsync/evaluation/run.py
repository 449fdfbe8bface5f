"""Score labeled leads through the configured chain, with a result cache so a re-run report costs nothing.

The cache is ``eval-cache.sqlite`` in the state dir, keyed by (rubric version, chain signature, lead
fingerprint, rerun index). The chain signature is the providers' names and models, plus the settings
that change a result (escalation thresholds, review thresholds, repair attempts). Failed results (every
provider down) are never cached: the next run tries again. The cache is not state: it has no migrations,
and deleting the file costs only a re-run's LLM calls (a change to its table must rename ``CACHE_FILE``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..leadfile import read_leads
from ..models import Lead, ScoreResult, ScoreStatus
from ..rubric import Rubric
from ..scoring import Scorer
from ..state import fingerprint
from .metrics import Evaluation, Item, Targets, evaluate, stability

CACHE_FILE = "eval-cache.sqlite"
QUALIFIED = {"qualified", "yes", "1", "true", "converted", "won", "y"}
UNQUALIFIED = {"unqualified", "no", "0", "false", "lost", "n", "disqualified"}


@dataclass(frozen=True)
class LabeledLead:
    lead: Lead
    outcome: int  # 1 = qualified


def read_labels(path: Path, config: Config) -> list[LabeledLead]:
    """A CSV/JSONL of leads (columns named as the CRM fields in [fields] inputs) with an ``outcome`` column."""
    leads = read_leads(path, config)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    else:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    if len(rows) != len(leads):  # the two readers must agree row for row, or outcomes land on the wrong leads
        raise ConfigError(
            f"{path}: read as {len(leads)} leads but {len(rows)} outcome rows; save it as a comma-separated UTF-8 CSV "
            "(or JSON Lines) with one header line and no blank lines"
        )
    out = []
    for n, (lead, row) in enumerate(zip(leads, rows, strict=True), 2 if path.suffix.lower() == ".csv" else 1):
        raw = str(row.get("outcome", "") if row.get("outcome") is not None else "").strip().lower()
        if raw in QUALIFIED:
            y = 1
        elif raw in UNQUALIFIED:
            y = 0
        else:
            where = f"{path}:{n}"
            if "outcome" not in row:
                raise ConfigError(
                    f"{path}: no `outcome` column. Add one with qualified/unqualified per lead (see `crmsync labels export`)."
                )
            raise ConfigError(f"{where}: outcome {raw!r} is neither qualified nor unqualified (nor yes/no, 1/0).")
        out.append(LabeledLead(lead, y))
    ids = [x.lead.id for x in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: lead ids are not unique; give each row its own `id`.")
    return out


def chain_signature(config: Config) -> str:
    parts = []
    for step in config.chain:
        p = config.providers[step.provider]
        parts.append(f"{step.provider}={p.type}:{p.model}" + (f"<{step.escalate_below}" if step.escalate_below is not None else ""))
    extra = json.dumps([config.review.model_dump(), config.scoring.repair_attempts], sort_keys=True)
    return " > ".join(parts) + " #" + hashlib.sha256(extra.encode()).hexdigest()[:8]


class EvalCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (rubric_version TEXT NOT NULL, chain TEXT NOT NULL, fingerprint TEXT NOT NULL,"
            " rerun INTEGER NOT NULL, result_json TEXT NOT NULL, PRIMARY KEY (rubric_version, chain, fingerprint, rerun))"
        )

    def get(self, rubric: str, chain: str, fp: str, rerun: int) -> ScoreResult | None:
        r = self.db.execute(
            "SELECT result_json FROM results WHERE rubric_version=? AND chain=? AND fingerprint=? AND rerun=?", (rubric, chain, fp, rerun)
        ).fetchone()
        return ScoreResult.model_validate_json(r[0]) if r else None

    def put(self, rubric: str, chain: str, fp: str, rerun: int, result: ScoreResult) -> None:
        self.db.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?)", (rubric, chain, fp, rerun, result.model_dump_json()))

    def close(self) -> None:
        self.db.close()


@dataclass
class RunResult:
    rubric: Rubric
    labeled: list[LabeledLead]
    runs: list[list[ScoreResult]]  # runs[r][i]: lead i in rerun r
    called: int = 0  # leads actually sent to the chain
    cached: int = 0
    evaluation: Evaluation | None = None
    notes: list[str] = field(default_factory=list)

    def tiers(self, run: int = 0) -> dict[str, str | None]:
        return {x.lead.id: r.tier for x, r in zip(self.labeled, self.runs[run], strict=True)}


def score_labeled(
    scorer: Scorer,
    rubric: Rubric,
    labeled: Sequence[LabeledLead],
    cache: EvalCache,
    chain_sig: str,
    reruns: int = 1,
    concurrency: int = 2,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    res = RunResult(rubric, list(labeled), [])
    fps = [fingerprint(x.lead.inputs) for x in labeled]
    for r in range(reruns):
        results: list[ScoreResult | None] = [cache.get(rubric.version, chain_sig, fp, r) for fp in fps]
        todo = [i for i, v in enumerate(results) if v is None]
        res.cached += len(results) - len(todo)
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="eval") as pool:
            for i, result in zip(todo, pool.map(lambda i: scorer.score(labeled[i].lead, rubric), todo), strict=True):
                results[i] = result
                res.called += 1
                if result.status != ScoreStatus.failed:
                    cache.put(rubric.version, chain_sig, fps[i], r, result)
                if progress:
                    progress(1)
        if progress:
            progress(len(results) - len(todo))
        res.runs.append([x for x in results if x is not None])
    return res


def items_of(labeled: Sequence[LabeledLead], results: Sequence[ScoreResult]) -> list[Item]:
    return [
        Item(
            lead_id=x.lead.id,
            outcome=x.outcome,
            scored=r.status == ScoreStatus.scored,
            status=r.status.value,
            score=r.score,
            tier=r.tier,
            confidence=r.confidence,
            needs_review=r.needs_review,
            escalated=r.escalated,
            fell_back=r.fell_back,
            cost_usd=r.cost_usd,
        )
        for x, r in zip(labeled, results, strict=True)
    ]


def evaluate_run(res: RunResult, config: Config) -> Evaluation:
    stab = stability([[r.tier for r in run] for run in res.runs]) if len(res.runs) > 1 else None
    cost_items = items_of(res.labeled, res.runs[0])
    ev = evaluate(cost_items, config.eval.qualified_tiers, list(res.rubric.tiers), Targets(**config.eval.targets.model_dump()), stab)
    res.evaluation = ev
    return ev


def tier_changes(a: RunResult, b: RunResult) -> list[dict[str, Any]]:
    """Leads whose tier differs between two runs over the same labeled leads (first rerun of each)."""
    out = []
    for x, ra, rb in zip(a.labeled, a.runs[0], b.runs[0], strict=True):
        if ra.tier != rb.tier:
            out.append(
                {
                    "id": x.lead.id,
                    "company": x.lead.inputs.get("company", ""),
                    "outcome": "qualified" if x.outcome else "unqualified",
                    "before": ra.tier,
                    "after": rb.tier,
                    "score_before": ra.score,
                    "score_after": rb.score,
                }
            )
    return out
