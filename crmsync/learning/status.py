"""The serving learned model's drift, for `crmsync status` and /metrics: the window the provider keeps next to the
model, compared with the training window in its card."""

from __future__ import annotations

import json
from pathlib import Path

from .artefact import ArtefactError, Version, store
from .drift import WINDOW_FILE, DriftReport, compare


def serving_drift(state_dir: Path, alarm_at: float) -> tuple[Version, DriftReport] | None:
    """(serving version, its drift), or None when no learned model serves. Raises ArtefactError when unreadable."""
    cur = store(state_dir, "model").current()
    if cur is None:
        return None
    try:
        card = cur.card()
        path = cur.path / WINDOW_FILE
        window = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"n": 0, "inputs": {}, "scores": []}
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{cur.path}: cannot read the model card or its drift window ({exc})") from None
    return cur, compare(card["drift_baseline"], window, alarm_at)


def drift_lines(state_dir: Path, alarm_at: float) -> list[str]:
    """One line for `crmsync status` (none when no learned model serves)."""
    try:
        found = serving_drift(state_dir, alarm_at)
    except ArtefactError as exc:
        return [f"learned model: {exc}"]
    if found is None:
        return []
    version, report = found
    return [f"learned model {version.name}: {report.line()}"]
