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

import base64
import binascii
import codecs
import html
import json
import logging
import re
import re._constants as sre_constants
import re._parser as sre_parse
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("crmsync.guard")

BUNDLED = "injection_patterns.txt"
_MAX_SCAN_CHARS = 20_000  # per field and view: the prompt's cap is 2,000 per value; this bounds the regex work
_MAX_FIELD_CHARS = 2_200  # of each field in the joined text at least: more than [scoring] max_input_chars' default

# Invisible or layout-only code points that are not category Cf (those are all dropped): the combining grapheme
# joiner, Hangul fillers, Mongolian variation selectors, Khmer inherent vowels, variation selectors, braille blank.
_INVISIBLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164, 0xFFA0}
_INVISIBLE_RANGES = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))


def _invisible(ch: str) -> bool:
    o = ord(ch)
    if o in _INVISIBLE or any(a <= o <= b for a, b in _INVISIBLE_RANGES):
        return True
    cat = unicodedata.category(ch)
    return cat == "Cf" or (cat == "Cc" and ch not in "\n\t")


@lru_cache(maxsize=1)
def _fold_table() -> dict[int, str]:
    """Non-ASCII character → its ASCII look-alike, from the confusables data (Unicode's confusables.txt) that the
    confusable-homoglyphs package ships. Letters are preferred over digits; chains (κ → ĸ → k) are followed."""
    raw = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8"))
    direct: dict[str, list[str]] = {
        ch: [h["c"] for h in glyphs if len(h["c"]) == 1] for ch, glyphs in raw.items() if len(ch) == 1 and not ch.isascii()
    }

    def ascii_of(ch: str, depth: int = 0) -> str | None:
        cands = direct.get(ch, [])
        for want in (str.isalpha, str.isdigit):
            for c in cands:
                if c.isascii() and want(c):
                    return c.lower()
        if depth < 2:
            for c in cands:
                if not c.isascii():
                    found = ascii_of(c, depth + 1)
                    if found:
                        return found
        return None

    table: dict[int, str] = {}
    for ch in direct:
        target = ascii_of(ch)
        if target:
            table[ord(ch)] = target
    return table


def _strip_latin_marks(text: str) -> str:
    """Drop accents from Latin letters only ("règles" → "regles"); Japanese voicing marks and Cyrillic й stay."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch) and out and out[-1] < "\u0250":
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def visible(text: str, sep: str = "") -> str:
    """NFKC with invisible characters removed (or, with ``sep=" "``, turned into spaces: a zero-width character
    can stand between words too): what a person (and a model) reads. Also used for datamarking."""
    text = unicodedata.normalize("NFKC", html.unescape(text))
    return "".join(sep if _invisible(ch) else ch for ch in text)


def normalise(text: str, sep: str = "") -> str:
    """The plain view: visible, case-folded, Latin accents dropped, runs of spaces collapsed (newlines kept)."""
    text = _strip_latin_marks(visible(text, sep).casefold())
    return re.sub(r"[^\S\n]+", " ", text).strip()


def skeleton(text: str) -> str:
    """Look-alike letters folded to ASCII (an already normalised text in, lower case out)."""
    return text.translate(_fold_table()).casefold()


_LEET_I = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "|": "l", "!": "i", "+": "t"})
_LEET_L = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "|": "l", "!": "i", "+": "t"})
_LEET_TOKEN = re.compile(r"\S*[a-z]\S*")
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?:[ .\-_*·/|~]{1,2}[^\W_]){2,}(?![^\W_])")  # "i g n o r e", "i.g.n.o.r.e"


def _join_spaced(m: re.Match[str]) -> str:
    """"s.c.o.r.e t.h.i.s" → "score this": the separator used most inside the run goes, any other one is a space."""
    run = m.group(0)
    seps = re.findall(r"[ .\-_*·/|~]", run)
    main = max(set(seps), key=seps.count)
    return "".join("" if ch == main else (" " if ch in " .-_*·/|~" else ch) for ch in run)


def _deleet(text: str, table: dict[int, str] | None) -> str:
    """Undo leetspeak in tokens that mix letters with digits or symbols. ``table=None``: "1" is "l" after a vowel
    or another "l" ("ru1es", "a11"), "i" elsewhere ("1gn0re", "pr3v10us")."""
    def fix(m: re.Match[str]) -> str:
        tok = m.group(0)
        if not re.search(r"[0-9@$|!+]", tok):
            return tok
        if table is not None:
            return tok.translate(table)
        tok = re.sub(r"(?<=[aeiouy0134l])1|(?<=1)1", "l", tok)
        return tok.translate(_LEET_I)

    return _LEET_TOKEN.sub(fix, text)


def _words(text: str) -> str:
    """Punctuation removed; sentence ends kept as line breaks, so a one-sentence pattern stays in its sentence."""
    text = re.sub(r"[.!?;。！？；]+(?=\s|$)|[。！？；\n]+", "\n", text)
    return re.sub(r"[^\w\n]+", " ", text).strip()


_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){10,}")


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(ch.isprintable() or ch.isspace() for ch in text) < 0.9 * len(text):
        return None
    return text if sum(ch.isalpha() for ch in text) >= 0.5 * len(text.replace(" ", "")) else None


def decoded(text: str) -> list[str]:
    """Hidden payloads in ``text``: base64 (also line-wrapped), hex, percent-encoding, ROT13."""
    out: list[str] = []
    compact = re.sub(r"\s+", "", text)
    for source in (text, compact) if compact != text else (text,):
        for m in _B64.finditer(source):
            chunk = m.group(0)
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    got = _printable(decode(chunk + "=" * (-len(chunk) % 4)))
                except (binascii.Error, ValueError):
                    continue
                if got:
                    out.append(got)
                    break
        for m in _HEX.finditer(source):
            got = _printable(bytes.fromhex(m.group(0)))
            if got:
                out.append(got)
    if "%" in text:
        unq = unquote(text)
        if unq != text:
            out.append(unq)
    return out


def views(text: str, depth: int = 0) -> list[str]:
    """Every view of one text that the patterns are matched against."""
    text = text[:_MAX_SCAN_CHARS]
    plain = normalise(text)
    skel = skeleton(plain)
    spaced = _SPACED.sub(_join_spaced, skeleton(_strip_latin_marks(visible(text).casefold())))
    found = [plain, skel, _words(skel), _words(_deleet(skel, _LEET_I)), _words(_deleet(skel, _LEET_L)), _words(_deleet(skel, None)), _words(spaced), _words(skel)[::-1]]
    if any(_invisible(ch) for ch in text):
        found.append(_words(skeleton(normalise(text, " "))))
    if depth == 0:
        for payload in decoded(visible(text)):
            found.extend(views(payload, depth + 1)[:3])
        found.append(_words(codecs.encode(skel, "rot13")))  # ROT13: one view is enough (it is its own inverse)
    return list(dict.fromkeys(v for v in found if v))


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
    except Exception:  # noqa: BLE001 - an unusual pattern simply goes without the shortcut
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
            regex = re.compile(_strip_latin_marks(unicodedata.normalize("NFKC", s)), re.IGNORECASE | re.MULTILINE)
        except re.error as exc:
            problems.append(f"{source}:{n}: not a valid pattern ({exc}); this line is skipped until it is fixed")
            continue
        if regex.search(""):
            problems.append(f"{source}:{n}: this pattern matches empty text, so it would flag every lead; this line is skipped until it is fixed")
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
        share = max(_MAX_FIELD_CHARS, _MAX_SCAN_CHARS // len(texts))  # what the model sees of each, and more
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
                return p, _short(m.group(0).strip(" .!?;:\n。！？；") or view[m.start():m.start() + 80])
    return None


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
