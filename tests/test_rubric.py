"""The rubric file: parsing, version, tiers in code, and errors that name the file, the line and the fix."""

from __future__ import annotations

import logging
import os

import pytest

from crmsync.errors import RubricError
from crmsync.rubric import RubricStore, bundled_rubric_path, load_rubric, parse_rubric

BODY = "# How to score\n\n" + "Score leads by monthly order volume, category, role and source. " * 5
FRONT = '+++\nname = "Test rubric"\n[tiers]\nA = 80\nB = 60\nC = 40\nD = 0\n+++\n'


def rubric_error(text: str, path: str = "rules.md") -> str:
    with pytest.raises(RubricError) as info:
        parse_rubric(text, path)
    msg = str(info.value)
    assert path in msg
    return msg


def test_bundled_rubric_loads(rubric):
    assert rubric.front.name.startswith("Inbound B2B")
    assert list(rubric.tiers) == ["A", "B", "C", "D"]
    assert len(rubric.version) == 12 and rubric.path == str(bundled_rubric_path())


@pytest.mark.parametrize("score, tier", [(100, "A"), (80, "A"), (79, "B"), (60, "B"), (59, "C"), (40, "C"), (39, "D"), (0, "D")])
def test_tier_from_cutoffs(rubric, score, tier):
    assert rubric.tier_for(score) == tier


def test_tiers_sorted_whatever_the_file_order():
    r = parse_rubric('+++\nname = "x"\n[tiers]\ncold = 0\nhot = 70\nwarm = 30\n+++\n' + BODY, "r.md")
    assert list(r.tiers) == ["hot", "warm", "cold"] and r.tier_for(69) == "warm"


def test_version_is_hash_of_content():
    a = parse_rubric(FRONT + BODY, "a.md")
    assert parse_rubric(FRONT + BODY, "elsewhere.md").version == a.version  # content, not path
    assert parse_rubric(FRONT + BODY + " More.", "a.md").version != a.version
    assert parse_rubric(FRONT.replace("B = 60", "B = 65") + BODY, "a.md").version != a.version


def test_no_front_matter():
    msg = rubric_error(BODY)
    assert "rules.md:1" in msg and "+++" in msg


def test_unclosed_front_matter():
    msg = rubric_error('+++\nname = "x"\n[tiers]\nD = 0\n' + BODY)
    assert "never closed" in msg and "Add a line `+++`" in msg


def test_bad_toml_gives_file_line():
    msg = rubric_error('+++\nname = "x"\n[tiers]\nA = eighty\nD = 0\n+++\n' + BODY)
    assert "rules.md:4:" in msg and "not valid TOML" in msg


def test_unknown_key_named_with_line_and_fix():
    msg = rubric_error('+++\nname = "x"\nmodel = "gpt"\n[tiers]\nD = 0\n+++\n' + BODY)
    assert "rules.md:3: unknown setting `model`" in msg and "Remove it" in msg


def test_missing_parts():
    msg = rubric_error('+++\nname = "x"\n+++\n' + BODY)
    assert "missing setting `tiers`" in msg
    msg = rubric_error("+++\n[tiers]\nD = 0\n+++\n" + BODY)
    assert "missing setting `name`" in msg
    msg = rubric_error(FRONT + "Too short.")
    assert "rules.md:9:" in msg and "too short" in msg  # the first line after the closing +++


@pytest.mark.parametrize(
    "tiers, words",
    [
        ("A = 80\nB = 60", "start at 0"),
        ("A = 80\nB = 80\nD = 0", "same cut-off"),
        ("A = 120\nD = 0", "outside 0–100"),
        ("", "at least one tier"),
    ],
)
def test_bad_tiers(tiers, words):
    msg = rubric_error(f'+++\nname = "x"\n[tiers]\n{tiers}\n+++\n' + BODY)
    assert words in msg and "rules.md:3" in msg  # the [tiers] line


def test_missing_file(tmp_path):
    with pytest.raises(RubricError, match="not found"):
        load_rubric(tmp_path / "nope.md")


def test_store_reloads_and_keeps_last_good_on_broken_edit(tmp_path, caplog):
    path = tmp_path / "rules.md"
    path.write_text(FRONT + BODY, encoding="utf-8")
    store = RubricStore(path)
    v1 = store.current().version

    def edit(text: str, bump: int) -> None:
        path.write_text(text, encoding="utf-8")
        st = path.stat()
        os.utime(path, (st.st_atime, st.st_mtime + bump))  # mtime resolution: make the change visible

    edit(FRONT.replace("A = 80", "A = 85") + BODY, 10)
    r2 = store.current()
    assert r2.version != v1 and r2.tier_for(82) == "B"

    with caplog.at_level(logging.ERROR, logger="crmsync.rubric"):
        edit("broken, no front matter\n" + BODY, 20)
        assert store.current().version == r2.version  # still scoring with the last good one
        assert store.last_error and str(path) in store.last_error
        edit("broken, no front matter\n" + BODY + " ", 30)
        store.current()
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1  # the same error, told once

    edit(FRONT + BODY, 40)
    assert store.current().version == v1 and store.last_error is None


def test_store_first_load_must_succeed(tmp_path):
    path = tmp_path / "rules.md"
    path.write_text(BODY, encoding="utf-8")
    with pytest.raises(RubricError):
        RubricStore(path)
