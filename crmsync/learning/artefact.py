"""Versioned artefacts: one folder per trained model (or calibration) with its model card, a ``CURRENT`` pointer to
the serving one, and a history, so a promotion never loses the version it replaced.

    <state_dir>/models/model/
        v0003-1f2e3d4c5b6a/   model.joblib  card.json  card.md
        CURRENT               "v0003-1f2e3d4c5b6a"
        history.jsonl         one line per promote / rollback

The model file holds scikit-learn objects and plain data only (no crmsync class), so a crmsync upgrade that moves
code around still loads it. Its sha256 (first 12 hex digits) is the version's hash: it names the folder and is the
``model`` a learned score carries, so every score says exactly which model made it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import CrmsyncError

MODEL_FILE, CARD_JSON, CARD_MD, CURRENT, HISTORY = "model.joblib", "card.json", "card.md", "CURRENT", "history.jsonl"
_NAME = re.compile(r"^v(\d{4,})-([0-9a-f]{12})$")


class ArtefactError(CrmsyncError):
    """A model folder is missing, unreadable or refused; the message says which and what to do."""


@dataclass(frozen=True)
class Version:
    name: str
    path: Path

    @property
    def hash(self) -> str:
        return self.name.split("-", 1)[1]

    def card(self) -> dict[str, Any]:
        card: dict[str, Any] = json.loads((self.path / CARD_JSON).read_text(encoding="utf-8"))
        return card


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """The versions of one kind of artefact ("model" or "calibration") under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[Version]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / MODEL_FILE).is_file()]
        return [Version(p.name, p) for p in sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))]  # type: ignore[union-attr]

    def save(self, obj: Any, card: dict[str, Any], card_md: str) -> Version:
        """Write a new version (not serving yet). ``card`` gains ``version`` and ``hash``."""
        import joblib

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".new-"))
        joblib.dump(obj, tmp / MODEL_FILE)
        digest = hashlib.sha256((tmp / MODEL_FILE).read_bytes()).hexdigest()[:12]
        n = max((int(_NAME.match(v.name).group(1)) for v in self.versions()), default=0) + 1  # type: ignore[union-attr]
        name = f"v{n:04d}-{digest}"
        card = {**card, "version": name, "hash": digest}
        (tmp / CARD_JSON).write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
        (tmp / CARD_MD).write_text(f"# Model card {name}\n\n{card_md}", encoding="utf-8")
        os.replace(tmp, self.root / name)  # whole or not at all
        return Version(name, self.root / name)

    def current(self) -> Version | None:
        p = self.root / CURRENT
        if not p.is_file():
            return None
        name = p.read_text(encoding="utf-8").strip()
        if not (self.root / name / MODEL_FILE).is_file():
            raise ArtefactError(
                f"{p} names {name!r}, but {self.root / name / MODEL_FILE} does not exist. "
                f"Run `crmsync train rollback`, or train and promote a model again."
            )
        return Version(name, self.root / name)

    def pointer_mtime(self) -> float | None:
        try:
            return (self.root / CURRENT).stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def get(self, name: str) -> Version:
        for v in self.versions():
            if v.name == name or v.hash == name:
                return v
        raise ArtefactError(f"no version {name!r} under {self.root} (have: {', '.join(v.name for v in self.versions()) or 'none'})")

    def load(self, version: Version) -> Any:
        import joblib

        try:
            return joblib.load(version.path / MODEL_FILE)
        except ModuleNotFoundError as exc:
            raise ArtefactError(f"{version.path / MODEL_FILE}: needs {exc.name}; install it with pip install 'crmsync[learn]'") from None

    def promote(self, version: Version, why: str) -> Version | None:
        """Make ``version`` the serving one; returns the one it replaced (kept on disk for rollback)."""
        previous = self.current()
        _atomic_write(self.root / CURRENT, version.name + "\n")
        self._log({"at": _now(), "action": "promote", "version": version.name, "previous": previous.name if previous else None, "why": why})
        return previous

    def history(self) -> list[dict[str, Any]]:
        p = self.root / HISTORY
        if not p.is_file():
            return []
        return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]

    def rollback(self) -> tuple[Version, Version]:
        """Serve the version that served before the current one; returns (from, to)."""
        cur = self.current()
        if cur is None:
            raise ArtefactError(f"nothing to roll back: no model is serving under {self.root}")
        prev = next(
            (h.get("previous") for h in reversed(self.history()) if h.get("version") == cur.name and h["action"] == "promote"), None
        )
        if not prev:
            raise ArtefactError(f"nothing to roll back to: {cur.name} is the first version that served under {self.root}")
        to = self.get(prev)
        _atomic_write(self.root / CURRENT, to.name + "\n")
        self._log({"at": _now(), "action": "rollback", "version": to.name, "previous": cur.name})
        return cur, to

    def _log(self, entry: dict[str, Any]) -> None:
        with open(self.root / HISTORY, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")


def store(state_dir: Path, kind: str) -> Store:
    """The store of one kind ("model" or "calibration") under a state dir."""
    return Store(state_dir / "models" / kind)
