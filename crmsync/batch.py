"""`crmsync score`: score a CSV or JSON Lines file with no CRM at all.

Reading checks the whole file before the first paid call (encoding, binary files, CSV quoting, JSON Lines,
duplicate ids), so a damaged file costs nothing. Writing appends and flushes one row per finished lead, so a crash
keeps what was paid for, and a rerun with the same output file skips the leads already in it.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import itertools
import json
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import Config
from .cycle import result_values
from .errors import ConfigError, CrmsyncError
from .masking import redact
from .models import Lead, ScoreResult, ScoreStatus

JSONL_SUFFIXES = (".jsonl", ".ndjson")
ID_COLUMNS = ("id", "Id", "ID", "Record ID", "Lead ID")  # crmsync's own, then the CRMs' export headers
# Python's csv refuses a field over 131,072 characters by default: exactly a Salesforce long text area's maximum,
# with no margin (a rich text area adds HTML markup on top). 16 MiB is far above any value a CRM stores, and still
# bounds what one "field" of a misnamed binary file with no line breaks can take in memory.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
MAX_LISTED = 10  # problems listed one per line before "… and N more"


class FileProblem(ConfigError):
    """An input or output file of `crmsync score` cannot be used; the message names the file (and line) and the fix."""


def text_encoding(name: str) -> str:
    """The codec to read with (LookupError if unknown). Plain UTF-8 also takes a BOM, which Excel's "CSV UTF-8" writes."""
    codec = codecs.lookup(name).name
    return "utf-8-sig" if codec == "utf-8" else codec


def _refuse_non_text(path: Path, head: bytes, codec: str) -> None:
    """Name the format of a file that is not text at all: clearer than a decoding error on line 1."""
    save_as = "in Excel use File > Save As > 'CSV UTF-8 (Comma delimited)'"
    if head.startswith(b"\x1f\x8b"):
        raise FileProblem(f"{path} is gzip-compressed, not CSV or JSON Lines text; unpack it first (gunzip -k {path}).")
    if head.startswith(b"PK\x03\x04"):
        raise FileProblem(f"{path} is a ZIP archive (an Excel .xlsx workbook?), not CSV text; {save_as}.")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileProblem(f"{path} is an Excel .xls workbook (or another Office file), not CSV text; {save_as}.")
    wide = codec.startswith(("utf-16", "utf-32"))
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) and not wide:
        raise FileProblem(f"{path} is UTF-16 text (Excel's 'Unicode Text'); pass --encoding utf-16.")
    if b"\x00" in head and not wide:
        raise FileProblem(f"{path} contains NUL bytes: it is a binary file, not CSV or JSON Lines text.")


def _text_lines(raw_lines: Iterable[bytes], path: Path, encoding: str, codec: str) -> Iterator[str]:
    """Decode line by line, so an undecodable byte is reported with its line number (a whole-file decode only knows
    the offset). Lines keep their endings: csv needs them inside quoted multi-line fields."""
    decoder = codecs.getincrementaldecoder(codec)()
    buf, n = "", 1
    try:
        for n, raw in enumerate(raw_lines, 1):
            buf += decoder.decode(raw)
            while cut := buf.find("\n") + 1:
                yield buf[:cut]
                buf = buf[cut:]
        buf += decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        if codec == "utf-8-sig":
            what, fix = "UTF-8", "save it as UTF-8, or pass --encoding cp1252 (Excel on Windows) or --encoding latin-1"
        else:
            what, fix = encoding, "pass the encoding it was saved in (--encoding utf-8, cp1252, latin-1, utf-16)"
        raise FileProblem(f"{path} line {n}: not valid {what} (byte 0x{exc.object[exc.start]:02x}); {fix}.") from None
    if buf:
        yield buf


def _delimiter(header: str) -> str:
    """Excel writes ';' where the decimal mark is a comma (most of Europe) and tabs for 'Text'; the header tells."""
    counts = {d: header.count(d) for d in ",;\t"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(lines: Iterator[str], path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Header and (first line, row) pairs. strict: an unclosed quote is an error, not the rest of the file in one value."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    first = next(lines, "")
    reader = csv.DictReader(itertools.chain([first], lines), delimiter=_delimiter(first), strict=True)
    rows: list[tuple[int, dict[str, Any]]] = []
    start = 1
    try:
        header = list(reader.fieldnames or [])
        start = reader.line_num + 1
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        msg = str(exc)
        if "field limit" in msg:
            why = f"a value is longer than {CSV_FIELD_LIMIT // 2**20} MiB, more than any CRM field holds (not a CSV export, or a quote left open?)"
        elif "unexpected end of data" in msg:
            why = 'a quoted value that starts here is never closed (a stray " ?)'
        elif "NUL" in msg:
            why = "a NUL byte: the file is damaged or binary, not CSV text"
        else:
            why = f'not valid CSV ({msg}); a value with quotes must be quoted whole, with inner quotes doubled ("")'
        line = start if "end of data" in msg else reader.reader.line_num  # DictReader's own line_num lags on errors
        raise FileProblem(f"{path} line {line}: {why}.") from None
    return header, rows


def _read_jsonl(lines: Iterator[str], path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Every key seen and (line, object) pairs; every line that is not one JSON object is listed, then refused."""
    rows: list[tuple[int, dict[str, Any]]] = []
    keys: dict[str, None] = {}
    problems: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path} line {n}: not valid JSON ({exc.msg}, column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            kind = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(obj), "a number")
            problems.append(f"{path} line {n}: {kind}, not a JSON object")
            continue
        rows.append((n, obj))
        keys.update(dict.fromkeys(obj))
    if problems:
        more = [f"… and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise FileProblem("\n".join([*problems[:MAX_LISTED], *more,
                                     'Each line must be one JSON object, like {"id": "L1", "company": "Acme"}.']))
    return list(keys), rows


@dataclass
class LeadFile:
    leads: list[Lead]
    warnings: list[str]


def read_lead_file(path: Path, config: Config, encoding: str = "utf-8") -> LeadFile:
    """Rows → leads with only the mapped inputs (columns named as the CRM fields in [fields] inputs). Every row
    becomes a lead, or the whole file is refused with the line named: rows in = rows out."""
    codec = text_encoding(encoding)
    try:
        with open(path, "rb") as fh:
            _refuse_non_text(path, fh.peek(8192)[:8192], codec)  # peek, not seek: `-i /dev/stdin` works too
            lines = _text_lines(fh, path, encoding, codec)
            header, rows = _read_jsonl(lines, path) if path.suffix.lower() in JSONL_SUFFIXES else _read_csv(lines, path)
    except OSError as exc:
        raise FileProblem(f"{path}: cannot read the input file ({exc.strerror}).") from None
    if not rows:
        raise FileProblem(f"{path}: no leads in the file.")
    mapped = config.fields.inputs
    if not set(header) & set(mapped.values()):
        raise ConfigError(
            f"{path}: none of the mapped input columns ({', '.join(sorted(mapped.values()))}) is in the file "
            f"(it has: {', '.join(sorted(header))}). Fix [fields] inputs in the config or the file's header."
        )
    warnings = []
    missing = [col for col in dict.fromkeys(mapped.values()) if col not in header]
    if missing:
        folded = {h.casefold(): h for h in header}
        named = ", ".join(col + (f" (the file has {folded[col.casefold()]!r})" if col.casefold() in folded else "") for col in missing)
        warnings.append(f"{path} has no column for these mapped inputs: {named}; they stay empty for every lead. "
                        "Fix [fields] inputs in the config or the file's header.")
    leads: list[Lead] = []
    first_line: dict[str, int] = {}
    repeated: list[str] = []
    for n, (line, row) in enumerate(rows, 1):
        lead_id = next((str(row[c]) for c in ID_COLUMNS if row.get(c) not in (None, "")), str(n))
        if lead_id in first_line:
            repeated.append(f"{lead_id!r} (lines {first_line[lead_id]} and {line})")
        first_line.setdefault(lead_id, line)
        leads.append(Lead(id=lead_id, inputs={name: row.get(col) for name, col in mapped.items() if row.get(col) not in (None, "")}))
    if repeated:
        more = f" and {len(repeated) - MAX_LISTED} more" if len(repeated) > MAX_LISTED else ""
        raise FileProblem(f"{path}: lead ids must be unique (the output and resuming match rows by id); "
                          f"repeated: {', '.join(repeated[:MAX_LISTED])}{more}.")
    return LeadFile(leads, warnings)


def read_leads(path: Path, config: Config, encoding: str = "utf-8") -> list[Lead]:
    """The leads of ``read_lead_file``, without its warnings."""
    return read_lead_file(path, config, encoding).leads


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
                rec = dict(zip(self._header, cells)) if len(cells) == len(self._header) else None
        if not isinstance(rec, dict) or "id" not in rec or "status" not in rec:
            raise FileProblem(f"{self.path} line {n} is not a row crmsync wrote; choose another --output, "
                              "or fix or delete the file.")
        return rec

    def open(self) -> Resumed:
        """Open for appending; read back what an earlier run wrote. Before any paid call: a file that is not
        crmsync's output is refused, not appended to."""
        lines, cut_off = self._lines()
        resumed = Resumed(cut_off=cut_off)
        if not self.jsonl and lines:
            self._header = next(csv.reader([lines[0].decode("utf-8", "replace")]), [])
            if not {"id", "status"} <= set(self._header):
                raise FileProblem(f"{self.path} exists and is not a crmsync score output (its first line is not the "
                                  "header crmsync writes); choose another --output, or delete the file to start over.")
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
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
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
            raise CrmsyncError(f"cannot write {self.path} ({exc.strerror}); {self.written} result(s) of this run are in it. "
                               "Fix that and run the same command again: it resumes where the file ends.") from None
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
            body = [(order.get(str(self._record(line, n)["id"]), len(order)), line)
                    for n, line in enumerate(lines[first:], first + 1) if line.strip()]
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
