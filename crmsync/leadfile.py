"""Reading the input file of `crmsync score` (CSV or JSON Lines) into leads. The whole file is checked before the
first paid call (encoding, binary files, CSV quoting, JSON Lines, duplicate ids), so a damaged file costs nothing."""

from __future__ import annotations

import codecs
import csv
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError
from .models import Lead

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
        for n, raw in enumerate(raw_lines, 1):  # noqa: B007 - n names the line in the decode error below
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
            why = (
                f"a value is longer than {CSV_FIELD_LIMIT // 2**20} MiB, more than any CRM field holds "
                "(not a CSV export, or a quote left open?)"
            )
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
        raise FileProblem(
            "\n".join([*problems[:MAX_LISTED], *more, 'Each line must be one JSON object, like {"id": "L1", "company": "Acme"}.'])
        )
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
        warnings.append(
            f"{path} has no column for these mapped inputs: {named}; they stay empty for every lead. "
            "Fix [fields] inputs in the config or the file's header."
        )
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
        raise FileProblem(
            f"{path}: lead ids must be unique (the output and resuming match rows by id); "
            f"repeated: {', '.join(repeated[:MAX_LISTED])}{more}."
        )
    return LeadFile(leads, warnings)


def read_leads(path: Path, config: Config, encoding: str = "utf-8") -> list[Lead]:
    """The leads of ``read_lead_file``, without its warnings."""
    return read_lead_file(path, config, encoding).leads
