"""`crmsync score`: score a CSV or JSON Lines file with no CRM at all.

Reading checks the whole file before the first paid call (encoding, binary files, CSV quoting, JSON Lines,
duplicate ids), so a damaged file costs nothing. Writing appends and flushes one row per finished lead, so a crash
keeps what was paid for, and a rerun with the same output file skips the leads already in it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .cycle import result_values
from .errors import CrmsyncError
from .leadfile import JSONL_SUFFIXES, FileProblem, LeadFile, read_lead_file, read_leads, text_encoding
from .models import Lead, ScoreResult, ScoreStatus
from .support import redact

__all__ = [
    "FileProblem",
    "LeadFile",
    "ResultsFile",
    "Resumed",
    "Tally",
    "check_output_path",
    "read_lead_file",
    "read_leads",
    "result_row",
    "text_encoding",
]


OUT_COLUMNS = [
    "id",
    "status",
    "score",
    "tier",
    "confidence",
    "probability",
    "needs_review",
    "review_reasons",
    "reasons",
    "missing_or_contradictory",
    "provider",
    "model",
    "escalated",
    "fell_back",
    "cost_usd",
    "rubric_version",
    "hops",
]


def result_row(lead: Lead, r: ScoreResult) -> dict[str, Any]:
    return {
        "id": lead.id,
        "status": r.status.value,
        "score": r.score,
        "tier": r.tier,
        "confidence": None if r.confidence is None else round(r.confidence, 3),
        "probability": None if r.probability is None else round(r.probability, 4),  # P(qualified), once calibrated
        "needs_review": r.needs_review,
        "review_reasons": ";".join(x.value for x in r.review_reasons),
        "reasons": result_values(r)["reasons"],
        "missing_or_contradictory": ";".join(r.missing_or_contradictory),
        "provider": r.provider,
        "model": r.model,
        "escalated": r.escalated,
        "fell_back": r.fell_back,
        "cost_usd": round(r.cost_usd, 8),
        "rubric_version": r.rubric_version,
        "hops": " > ".join(
            f"{h.provider}{'[batch]' if h.mode == 'batch' else ''}:{h.outcome.value}"
            + (f"({h.confidence:.2f})" if h.confidence is not None else "")
            for h in r.hops
        ),
    }


def check_output_path(path: Path, input_path: Path) -> None:
    """Before the first paid call: everything that would make writing the results fail later."""
    where = f"--output {path}"
    if path.is_dir():
        raise FileProblem(f"{where} is a folder; give a file name, e.g. {path / 'scores.csv'}.")
    if path.parent.exists() and not path.parent.is_dir():
        raise FileProblem(f"{where}: {path.parent} is a file, not a folder; choose another path.")
    if not path.parent.is_dir():
        raise FileProblem(f"{where}: the folder {path.parent} does not exist; create it (mkdir -p {path.parent}) or choose another path.")
    if path.exists() and path.samefile(input_path):
        raise FileProblem(f"{where} is the input file; choose another file (results are appended to the output).")
    existed = path.exists()
    try:
        open(path, "a").close()  # the real test (permissions, read-only disks): os.access lies to root
    except OSError as exc:
        raise FileProblem(f"{where}: cannot write there ({exc.strerror}); choose a file in a folder you can write to.") from None
    if not existed:
        path.unlink()  # created only to test; the input may still be refused


def _replace(path: Path, chunks: Iterable[bytes]) -> None:
    """Atomically: a crash leaves the old file or the new one, never a half-written mix. Keeps the file's mode."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(chunks)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class Resumed:
    """What an earlier run left in the output file."""

    done: set[str] = field(default_factory=set)  # lead ids with a row: skipped, not paid again
    retried: int = 0  # rows that had failed (every provider down, nothing paid): dropped, their leads scored again
    cut_off: bool = False  # the last row was cut off mid-write (a crash): dropped, that lead scored again
    rubrics: Counter[str] = field(default_factory=Counter)  # rubric version → rows


class ResultsFile:
    """The output of `crmsync score`: one row appended and flushed per finished lead, so a crash keeps every result
    paid for; ``open`` resumes a file an earlier run left. CSV rows are kept on one physical line each (line breaks in
    values become spaces), which makes a row cut off by a crash easy to spot and drop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jsonl = path.suffix.lower() in JSONL_SUFFIXES
        self.written = 0  # rows written by this run
        self._header: list[str] = []
        self._fh: IO[str] | None = None
        self._csv: Any = None

    def _lines(self) -> tuple[list[bytes], bool]:
        # A pipe or device (`-o /dev/stdout`) is a stream: nothing to resume, nothing to sort.
        data = self.path.read_bytes() if self.path.is_file() else b""
        cut_off = bool(data) and not data.endswith(b"\n")
        data = data[: data.rfind(b"\n") + 1]
        return [line + b"\n" for line in data.split(b"\n")[:-1]], cut_off

    def _record(self, line: bytes, n: int) -> dict[str, Any]:
        rec: Any = None
        with contextlib.suppress(ValueError, csv.Error):
            text = line.decode("utf-8")
            if self.jsonl:
                rec = json.loads(text)
            else:
                cells = next(csv.reader([text]), [])
                rec = dict(zip(self._header, cells, strict=True)) if len(cells) == len(self._header) else None
        if not isinstance(rec, dict) or "id" not in rec or "status" not in rec:
            raise FileProblem(f"{self.path} line {n} is not a row crmsync wrote; choose another --output, or fix or delete the file.")
        return rec

    def open(self) -> Resumed:
        """Open for appending; read back what an earlier run wrote. Before any paid call: a file that is not
        crmsync's output is refused, not appended to."""
        lines, cut_off = self._lines()
        resumed = Resumed(cut_off=cut_off)
        if not self.jsonl and lines:
            self._header = next(csv.reader([lines[0].decode("utf-8", "replace")]), [])
            if not {"id", "status"} <= set(self._header):
                raise FileProblem(
                    f"{self.path} exists and is not a crmsync score output (its first line is not the "
                    "header crmsync writes); choose another --output, or delete the file to start over."
                )
        first = 1 if self._header else 0
        keep = lines[:first]
        for n, line in enumerate(lines[first:], first + 1):
            if not line.strip():
                continue
            rec = self._record(line, n)
            if rec["status"] == ScoreStatus.failed.value:
                resumed.retried += 1
                continue
            keep.append(line)
            resumed.done.add(str(rec["id"]))
            resumed.rubrics[str(rec.get("rubric_version") or "?")] += 1
        try:
            if resumed.retried or cut_off:
                _replace(self.path, keep)
            self._fh = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - open until close()
        except OSError as exc:
            raise FileProblem(f"--output {self.path}: cannot write there ({exc.strerror}).") from None
        if not self.jsonl:
            self._header = self._header or OUT_COLUMNS  # an existing file keeps its own columns
            self._csv = csv.DictWriter(self._fh, fieldnames=self._header, extrasaction="ignore")
            if not keep:
                self._csv.writeheader()
                self._fh.flush()
        return resumed

    def write(self, row: Mapping[str, Any]) -> None:
        assert self._fh is not None, "open() first"
        row = {k: redact(v) if isinstance(v, str) else v for k, v in row.items()}  # no secret in a results file
        try:
            if self.jsonl:
                self._fh.write(json.dumps(row, default=str) + "\n")
            else:
                self._csv.writerow({k: " ".join(v.splitlines()) if isinstance(v, str) else v for k, v in row.items()})
            self._fh.flush()  # to the OS at once: a crash of crmsync (kill -9 included) keeps every row written
        except OSError as exc:
            raise CrmsyncError(
                f"cannot write {self.path} ({exc.strerror}); {self.written} result(s) of this run are in it. "
                "Fix that and run the same command again: it resumes where the file ends."
            ) from None
        self.written += 1

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):  # a full disk was already reported by write()
                self._fh.flush()
                os.fsync(self._fh.fileno())  # and to the disk, once, at the end
                self._fh.close()
            self._fh = None

    def sort(self, order: Mapping[str, int]) -> str | None:
        """Rows are written as leads finish; put them back into input order (ids not in the input last). Atomic,
        so a crash here loses nothing. Returns a note when the file had to stay in completion order."""
        try:
            lines, _ = self._lines()
            first = 0 if self.jsonl else 1
            body = [
                (order.get(str(self._record(line, n)["id"]), len(order)), line)
                for n, line in enumerate(lines[first:], first + 1)
                if line.strip()
            ]
            ranks = [rank for rank, _ in body]
            if ranks != sorted(ranks) and self.path.is_file():
                body.sort(key=lambda rl: rl[0])
                _replace(self.path, [*lines[:first], *(line for _, line in body)])
        except OSError as exc:
            return f"{self.path}: rows stay in the order they finished ({exc.strerror} while sorting them)."
        return None


@dataclass
class Tally:
    """The summary's counts, kept as leads finish (no result is held until the end)."""

    leads: int = 0
    scored: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    flagged: int = 0
    escalations: int = 0
    fallbacks: int = 0
    unscorable: int = 0
    failures: int = 0
    cost_total: float = 0.0

    def add(self, r: ScoreResult) -> None:
        self.leads += 1
        if r.status == ScoreStatus.scored:
            self.scored += 1
            self.tiers[r.tier or "?"] += 1
        self.unscorable += r.status == ScoreStatus.unscorable
        self.failures += r.status == ScoreStatus.failed
        self.flagged += r.needs_review
        self.escalations += r.escalated
        self.fallbacks += r.fell_back
        self.cost_total += r.cost_usd

    @property
    def cost_per_lead(self) -> float:
        return self.cost_total / self.leads if self.leads else 0.0

    def headline(self, rubric_version: str, planned: int | None = None) -> str:
        """Counts what was scored, never what was merely attempted (``planned``: leads this run set out to score)."""
        total = self.leads if planned is None else planned
        if self.scored:
            return f"{self.scored} of {total} {'lead' if total == 1 else 'leads'} scored with rubric {rubric_version}"
        if self.leads and self.failures == self.leads:
            return f"no lead scored: no provider answered ({self.failures} failed)"
        return f"no lead scored: {self.unscorable} unscorable, {self.failures} failed (rubric {rubric_version})"
