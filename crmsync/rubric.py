"""The rubric: a Markdown prompt file owned by sales ops, with a small TOML front-matter block.

    +++
    name = "Inbound B2B leads"
    [tiers]            # the lowest score of each tier
    A = 80
    B = 60
    C = 40
    D = 0
    +++
    (Markdown: how to score a lead)

Lead data is never spliced into this text: it goes to the model as a separate JSON block after it, so lead
text cannot rewrite the rules and the rubric stays a stable, cacheable prefix.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RubricError

log = logging.getLogger("crmsync.rubric")

FENCE = "+++"
MIN_BODY_CHARS = 200  # a rubric shorter than this is almost surely a broken edit


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    owner: str = ""
    tiers: dict[str, int]

    @field_validator("tiers")
    @classmethod
    def _tiers_cover_range(cls, tiers: dict[str, int]) -> dict[str, int]:
        if not tiers:
            raise ValueError("needs at least one tier")
        for name, cut in tiers.items():
            if not 0 <= cut <= 100:
                raise ValueError(f"tier {name} = {cut} is outside 0–100")
        if 0 not in tiers.values():
            raise ValueError("the lowest tier must start at 0 so every score has a tier (for example D = 0)")
        if len(set(tiers.values())) != len(tiers):
            raise ValueError("two tiers have the same cut-off; each tier needs its own lowest score")
        return dict(sorted(tiers.items(), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class Rubric:
    path: str
    front: FrontMatter
    body: str
    version: str  # sha256 of the file's bytes (12 hex digits): every score records it

    def tier_for(self, score: int) -> str:
        """Tier from the score by the rubric's cut-offs. Never taken from the model."""
        for name, cut in self.front.tiers.items():  # highest cut-off first
            if score >= cut:
                return name
        raise AssertionError("unreachable: a tier starts at 0")

    @property
    def tiers(self) -> dict[str, int]:
        return self.front.tiers


def bundled_rubric_path() -> Path:
    return Path(str(resources.files("crmsync.prompts").joinpath("lead_score.md")))


def parse_rubric(text: str, path: str) -> Rubric:
    lines = text.splitlines()
    if not lines or lines[0].strip() != FENCE:
        raise RubricError(
            f"{path}:1: the file must start with a front-matter block: a line `+++`, the settings "
            f"(name, [tiers]), and another `+++`. Copy the top of prompts/lead_score.md."
        )
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FENCE)
    except StopIteration:
        raise RubricError(
            f"{path}:1: the front-matter block opened with `+++` is never closed. Add a line `+++` after the settings."
        ) from None
    try:
        data = tomllib.loads("\n".join(lines[1:end]))
    except tomllib.TOMLDecodeError as exc:
        # tomllib reports "(at line N, column M)" relative to the block; shift it to the file.
        msg = str(exc)
        import re

        m = re.search(r"at line (\d+)", msg)
        line = int(m.group(1)) + 1 if m else 2
        raise RubricError(f"{path}:{line}: the front matter is not valid TOML ({msg}). Fix that line.") from None
    try:
        front = FrontMatter.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(x) for x in err["loc"])
            where = _front_line(lines[1:end], str(err["loc"][0]))
            at = f":{where}" if where else ""
            if err["type"] == "extra_forbidden":
                problems.append(f"{path}{at}: unknown setting `{key}`; allowed: name, description, owner, [tiers]. Remove it.")
            elif err["type"] == "missing":
                problems.append(f"{path}{at}: missing setting `{key}`. Add it to the front matter (see prompts/README.md).")
            else:
                problems.append(f"{path}{at}: `{key}`: {err['msg']}.")
        raise RubricError("\n".join(problems)) from None
    body = "\n".join(lines[end + 1 :]).strip()
    if len(body) < MIN_BODY_CHARS:
        raise RubricError(
            f"{path}:{end + 2}: the rubric text below the front matter is missing or too short "
            f"({len(body)} characters; at least {MIN_BODY_CHARS}). Write how leads are to be scored."
        )
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return Rubric(path=path, front=front, body=body, version=version)


def _front_line(front_lines: list[str], key: str) -> int | None:
    for i, line in enumerate(front_lines):
        s = line.strip()
        if s.startswith((f"{key} ", f"{key}=")) or s == f"[{key}]":
            return i + 2  # +1 for 1-based, +1 for the opening fence
    return None


def load_rubric(path: str | os.PathLike[str]) -> Rubric:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RubricError(f"{p}: rubric file not found. Check [rubric] path in the config.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RubricError(f"{p}: cannot read the rubric file ({exc}).") from None
    return parse_rubric(text, str(p))


@dataclass
class RubricStore:
    """Holds the live rubric; re-reads the file when it changes, and keeps the last good one on a broken edit."""

    path: Path
    _current: Rubric | None = None
    _stamp: tuple[float, int] | None = None
    last_error: str | None = None
    _reported: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._current = load_rubric(self.path)  # the first load must succeed: nothing good to fall back to
        self._stamp = self._stat()

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def current(self) -> Rubric:
        """The rubric to score with now. Cheap when nothing changed (one stat)."""
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                new = load_rubric(self.path)
            except RubricError as exc:
                self.last_error = str(exc)
                if self.last_error not in self._reported:
                    self._reported.add(self.last_error)
                    log.error(
                        "rubric edit rejected, still scoring with the last good version %s: %s",
                        self._current.version if self._current else "?",
                        exc,
                    )
            else:
                if self._current is None or new.version != self._current.version:
                    log.warning("rubric reloaded: %s → %s (%s)", self._current.version if self._current else "-", new.version, self.path)
                self._current = new
                self.last_error = None
        assert self._current is not None
        return self._current
