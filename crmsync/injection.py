"""crmsync's own check for instructions hidden in lead text. It never asks a model, so it holds when the scoring
model obeys the lead.

Text is normalised before matching, because an attacker's first move is to make the words look different to a
program but not to a model: Unicode NFKC; invisible characters removed (format characters, zero-width and bidi
controls, variation selectors, tag characters); case-folded; accents dropped from Latin letters; look-alike letters
folded to ASCII with Unicode's confusables table (Cyrillic "о" → "o"); and, as extra views of the same text,
punctuation removed, leetspeak undone ("1gn0r3" → "ignore"), spaced-out letters joined ("i g n o r e"), reversed
text, and base64 / hex / percent-encoded / HTML-escaped / ROT13 payloads decoded. Every view of every field, and of
all fields joined (an instruction split across fields), is matched against the patterns.

Patterns are data: ``crmsync/defaults/injection_patterns.txt`` (bundled, many languages), plus an optional
``[guard] patterns_file`` that adds to it and is re-read when it changes. A broken line there is logged with its
line number and skipped: a typo in an ops edit never stops scoring.
"""

from __future__ import annotations

import logging
import re
import re._constants as sre_constants
import re._parser as sre_parse
import threading
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .text_views import MAX_FIELD_CHARS, MAX_SCAN_CHARS, strip_latin_marks, views, visible

__all__ = ["Match", "Pattern", "PatternSet", "bundled_patterns", "parse_patterns", "views", "visible"]

log = logging.getLogger("crmsync.guard")

BUNDLED = "injection_patterns.txt"
# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Pattern:
    group: str  # the "[xx]" heading it is under: a language code, or a name
    regex: re.Pattern[str]
    where: str  # "file:line"
    # Texts of which a match must start with one (from the pattern's own parse tree), or None: a view holding none
    # of them cannot match, found with fast substring tests instead of a regex scan (most patterns, most views).
    needles: tuple[str, ...] | None = None


def _needles(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    try:
        found = _leading_literals(sre_parse.parse(regex.pattern, regex.flags).data)
    except Exception:
        return None
    return tuple(sorted(found)) if found else None


def _leading_literals(items: list[Any]) -> set[str] | None:
    """The literal text every match begins with, per alternative (after anchors such as \\b); None if any
    alternative does not begin with a literal character."""
    i = 0
    while i < len(items) and items[i][0] is sre_constants.AT:
        i += 1
    if i >= len(items):
        return None
    op, av = items[i]
    if op is sre_constants.LITERAL:
        run = ""
        while i < len(items) and items[i][0] is sre_constants.LITERAL:
            run += chr(items[i][1])
            i += 1
        return {run.casefold()}  # views are case-folded; the pattern is matched ignoring case
    if op is sre_constants.SUBPATTERN:
        return _leading_literals(av[3].data)
    if op is sre_constants.BRANCH:
        out: set[str] = set()
        for branch in av[1]:
            got = _leading_literals(branch.data)
            if got is None:
                return None
            out |= got
        return out
    return None


@dataclass(frozen=True)
class Match:
    field: str  # an input name, or "(fields joined)"
    pattern: Pattern
    text: str  # the normalised words that matched, shortened

    def describe(self) -> str:
        return f"{self.field} matches pattern [{self.pattern.group}] {self.pattern.where} “{self.text}”"


def parse_patterns(text: str, source: str) -> tuple[list[Pattern], list[str]]:
    """One regular expression per line; ``[xx]`` starts a group; ``#`` starts a comment line. Returns the patterns
    and one message per broken line (the line is skipped)."""
    patterns: list[Pattern] = []
    problems: list[str] = []
    group = "any"
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        head = re.fullmatch(r"\[([\w.-]+)\]", s)
        if head:
            group = head.group(1)
            continue
        try:
            # patterns get the same normalisation as text (accents off, NFKC), so "règles" works as written
            regex = re.compile(strip_latin_marks(unicodedata.normalize("NFKC", s)), re.IGNORECASE | re.MULTILINE)
        except re.error as exc:
            problems.append(f"{source}:{n}: not a valid pattern ({exc}); this line is skipped until it is fixed")
            continue
        if regex.search(""):
            problems.append(
                f"{source}:{n}: this pattern matches empty text, so it would flag every lead; this line is skipped until it is fixed"
            )
            continue
        patterns.append(Pattern(group, regex, f"{Path(source).name}:{n}", _needles(regex)))
    return patterns, problems


def bundled_patterns() -> list[Pattern]:
    text = resources.files("crmsync.defaults").joinpath(BUNDLED).read_text(encoding="utf-8")
    patterns, problems = parse_patterns(text, BUNDLED)
    assert not problems, problems  # the bundled file is tested; a broken one must never ship
    return patterns


@dataclass
class PatternSet:
    """The bundled patterns plus an optional ops file, re-read when it changes (one stat per lead)."""

    extra_path: Path | None = None
    _bundled: list[Pattern] = field(default_factory=bundled_patterns)
    _extra: list[Pattern] = field(default_factory=list)
    _stamp: tuple[float, int] | None = None
    _loaded: bool = False
    problems: list[str] = field(default_factory=list)
    _told: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        if self.extra_path is None:
            return
        try:
            st = self.extra_path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if self._loaded and stamp == self._stamp:
            return
        self._loaded, self._stamp = True, stamp
        keep_going = "scoring goes on with the bundled patterns only"
        if stamp is None:
            self._extra, self.problems = [], [f"{self.extra_path}: patterns file not found ([guard] patterns_file); {keep_going}"]
        else:
            try:
                text = self.extra_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self._extra, self.problems = [], [f"{self.extra_path}: cannot read the patterns file ({exc}); {keep_going}"]
            else:
                self._extra, self.problems = parse_patterns(text, str(self.extra_path))
        for p in self.problems:
            if p not in self._told:  # once per distinct problem: an ops typo must be seen, not spammed
                self._told.add(p)
                log.error("%s", p)

    @property
    def patterns(self) -> list[Pattern]:
        with self._lock:  # leads are scored on several threads; one of them re-reads the file
            self._refresh()
            return self._bundled + self._extra

    def find(self, inputs: dict[str, Any]) -> Match | None:
        """The first pattern that matches any view of the text inputs joined (which also catches an instruction
        split across fields), named after the field that holds it when one field alone does."""
        texts = {k: v for k, v in inputs.items() if isinstance(v, str) and v.strip()}
        if not texts:
            return None
        patterns = self.patterns
        joined = "(fields joined)" if len(texts) > 1 else next(iter(texts))
        share = max(MAX_FIELD_CHARS, MAX_SCAN_CHARS // len(texts))  # what the model sees of each, and more
        hit = _first(patterns, "\n".join(v[:share] for v in texts.values()))  # one scan: the common, clean case
        if hit is None:
            return None
        if len(texts) > 1:
            for name, value in texts.items():  # rare: say which field, if one field alone holds it
                alone = _first(patterns, value)
                if alone is not None:
                    return Match(name, *alone)
        return Match(joined, *hit)


def _first(patterns: list[Pattern], text: str) -> tuple[Pattern, str] | None:
    for view in views(text):
        for p in patterns:
            if p.needles is not None and not any(n in view for n in p.needles):
                continue
            m = p.regex.search(view)
            if m:  # a zero-width match (lookaheads) shows the text that follows it
                return p, _short(m.group(0).strip(" .!?;:\n。！？；") or view[m.start() : m.start() + 80])
    return None


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
