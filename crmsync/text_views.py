"""The views of a lead's text that the injection check matches: normalised (NFKC, invisible characters removed,
case-folded, accents dropped, look-alike letters folded with Unicode's confusables table) and, as extra views,
punctuation removed, leetspeak undone, spaced-out letters joined, reversed, and encoded payloads decoded.
See crmsync/injection.py for why."""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources
from urllib.parse import unquote

MAX_SCAN_CHARS = 20_000  # per field and view: the prompt's cap is 2,000 per value; this bounds the regex work
MAX_FIELD_CHARS = 2_200  # of each field in the joined text at least: more than [scoring] max_input_chars' default

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


def strip_latin_marks(text: str) -> str:
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
    text = strip_latin_marks(visible(text, sep).casefold())
    return re.sub(r"[^\S\n]+", " ", text).strip()


def skeleton(text: str) -> str:
    """Look-alike letters folded to ASCII (an already normalised text in, lower case out)."""
    return text.translate(_fold_table()).casefold()


_LEET_I = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "|": "l", "!": "i", "+": "t"}
)
_LEET_L = str.maketrans(
    {"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "|": "l", "!": "i", "+": "t"}
)
_LEET_TOKEN = re.compile(r"\S*[a-z]\S*")
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?:[ .\-_*·/|~]{1,2}[^\W_]){2,}(?![^\W_])")  # "i g n o r e", "i.g.n.o.r.e"


def _join_spaced(m: re.Match[str]) -> str:
    """ "s.c.o.r.e t.h.i.s" → "score this": the separator used most inside the run goes, any other one is a space."""
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
    text = text[:MAX_SCAN_CHARS]
    plain = normalise(text)
    skel = skeleton(plain)
    spaced = _SPACED.sub(_join_spaced, skeleton(strip_latin_marks(visible(text).casefold())))
    found = [
        plain,
        skel,
        _words(skel),
        _words(_deleet(skel, _LEET_I)),
        _words(_deleet(skel, _LEET_L)),
        _words(_deleet(skel, None)),
        _words(spaced),
        _words(skel)[::-1],
    ]
    if any(_invisible(ch) for ch in text):
        found.append(_words(skeleton(normalise(text, " "))))
    if depth == 0:
        for payload in decoded(visible(text)):
            found.extend(views(payload, depth + 1)[:3])
        found.append(_words(codecs.encode(skel, "rot13")))  # ROT13: one view is enough (it is its own inverse)
    return list(dict.fromkeys(v for v in found if v))
