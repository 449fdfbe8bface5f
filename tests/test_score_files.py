"""`crmsync score` with the files people really have: Excel exports, damaged files, a full run killed half-way.

Every test runs the CLI as a subprocess against the OpenAI emulator, which counts requests: a refused file or
output path costs 0 calls, and a rerun after a crash pays only for the leads not yet in the output.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crmsync.config import ScoringConfig
from tests.daemon_helpers import COLUMNS, crmsync, env, lead, write_setup
from tests.emulators import OpenAIEmulator, default_rule, delay, error, extract_lead, rule


@dataclass
class Rig:
    emu: OpenAIEmulator
    cfg: Path
    tmp: Path

    def score(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`crmsync score --config … ARGS`, run in the config's folder, so relative paths are what a user types."""
        return crmsync(self.cfg, "score", *args, key=self.emu.api_key)

    def companies_asked(self) -> Counter[str | None]:
        """How often each lead (by company) was sent to the model, over every run so far."""
        return Counter(extract_lead(self.emu._last_user_text(r.body)).get("company") for r in self.emu.requests)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with OpenAIEmulator() as emu:
        yield Rig(emu, write_setup(tmp_path, emu.base_url, []), tmp_path)
        assert not emu.errors


def said(r: subprocess.CompletedProcess[str]) -> str:
    """What the person saw, with the terminal's line wrapping undone."""
    return " ".join((r.stdout + r.stderr).split())


def write_leads(path: Path, n: int) -> list[str]:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(lead(i) for i in range(1, n + 1))
    return [f"E{i:03d}" for i in range(1, n + 1)]


def out_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- the output path, before any call


def _unwritable(tmp: Path) -> Path:
    """A path crmsync may not write. Root ignores file modes, so as root: sysfs, which is read-only for everyone."""
    if os.geteuid() == 0:
        return Path("/sys/crmsync-scores.csv")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "scores.csv"


@pytest.mark.parametrize("case", ["missing folder", "a folder", "not writable", "the input itself"])
def test_a_bad_output_path_is_refused_before_any_paid_call(rig: Rig, case: str) -> None:
    write_leads(rig.tmp / "export.csv", 3)
    (rig.tmp / "results").mkdir()
    output, expected = {
        "missing folder": (
            "missing/out.csv",
            ("error: --output missing/out.csv: the folder missing does not exist; create it (mkdir -p missing) or choose another path."),
        ),
        "a folder": ("results", "error: --output results is a folder; give a file name, e.g. results/scores.csv."),
        "not writable": (
            str(p := _unwritable(rig.tmp)),
            (f"error: --output {p}: cannot write there (Permission denied); choose a file in a folder you can write to."),
        ),
        "the input itself": (
            "export.csv",
            ("error: --output export.csv is the input file; choose another file (results are appended to the output)."),
        ),
    }[case]
    r = rig.score("--input", "export.csv", "--output", output)
    assert said(r) == expected
    assert r.returncode == 2 and rig.emu.request_count() == 0
    assert sorted(p.name for p in rig.tmp.iterdir()) == ["crmsync.toml", "export.csv", "leads.csv", "results"] + (
        ["locked"] if case == "not writable" and os.geteuid() != 0 else []
    )


def test_an_existing_file_that_is_not_a_score_output_is_not_appended_to(rig: Rig) -> None:
    write_leads(rig.tmp / "export.csv", 2)
    (rig.tmp / "out.csv").write_text("name,phone\nx,1\n")
    r = rig.score("--input", "export.csv", "--output", "out.csv")
    assert said(r) == (
        "error: out.csv exists and is not a crmsync score output (its first line is not the header crmsync "
        "writes); choose another --output, or delete the file to start over."
    )
    assert r.returncode == 2 and rig.emu.request_count() == 0
    assert (rig.tmp / "out.csv").read_text() == "name,phone\nx,1\n"


# --------------------------------------------------------------------------- written as they come; resume


def _start_score(rig: Rig, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "crmsync", "score", "--config", str(rig.cfg), *args]
    return subprocess.Popen(cmd, cwd=rig.tmp, env=env(rig.emu.api_key), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_requests(rig: Rig, n: int) -> None:
    deadline = time.monotonic() + 60
    while rig.emu.request_count() < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rig.emu.request_count() == n


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_killed_run_keeps_its_paid_rows_and_the_rerun_pays_only_for_the_rest(rig: Rig, suffix: str) -> None:
    ids = write_leads(rig.tmp / "export.csv", 6)
    out = rig.tmp / f"out{suffix}"
    # Three answers, then the model hangs: the 4th lead is in flight when the process is killed.
    rig.emu.script("emu-fast", rule(default_rule), rule(default_rule), rule(default_rule), delay(60))
    proc = _start_score(rig, "-i", "export.csv", "-o", out.name, "--concurrency", "1")
    _wait_for_requests(rig, 4)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: only what was flushed survives
    proc.communicate()
    assert [row["id"] for row in out_rows(out)] == ids[:3]  # the three answers paid for are on disk

    rig.emu.script("emu-fast", rule(default_rule))
    r = rig.score("-i", "export.csv", "-o", out.name, "--concurrency", "1")
    assert r.returncode == 0, said(r)
    assert f"resuming: 3 of 6 leads already in {out.name}" in said(r)
    assert "3 of 3 leads scored with rubric" in said(r)
    assert f"3 more lead(s) were already in {out.name} and not scored again" in said(r)
    rows = out_rows(out)
    assert [row["id"] for row in rows] == ids and all(row["status"] == "scored" for row in rows)  # rows in = rows out
    asked = rig.companies_asked()
    assert rig.emu.request_count() == 7  # 3 + the unanswered one + 3
    assert [asked[f"Brand {i}"] for i in range(1, 7)] == [1, 1, 1, 2, 1, 1]  # lead 4's first request never answered


def test_ctrl_c_lets_the_lead_in_flight_finish_and_keeps_it(rig: Rig) -> None:
    ids = write_leads(rig.tmp / "export.csv", 6)
    rig.emu.script("emu-fast", rule(default_rule), rule(default_rule), delay(1.5, rule(default_rule)), rule(default_rule))
    proc = _start_score(rig, "-i", "export.csv", "-o", "out.csv", "--concurrency", "1")
    _wait_for_requests(rig, 3)
    proc.send_signal(signal.SIGINT)  # while the 3rd lead is with the model
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert " ".join(stderr.split()) == (
        "stopping: no new lead starts; the ones in flight finish and are written (Ctrl+C again to quit now) "
        "stopped: 3 of 6 leads done and written to out.csv; run the same command again to resume"
    )
    assert [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ids[:3]  # the one in flight was paid and kept
    assert rig.emu.request_count() == 3  # and no lead started after Ctrl+C

    r = rig.score("-i", "export.csv", "-o", "out.csv")
    assert r.returncode == 0 and "resuming: 3 of 6 leads already in out.csv" in said(r)
    assert rig.emu.request_count() == 6 and [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ids


def test_a_second_ctrl_c_quits_at_once_keeping_what_was_written(rig: Rig) -> None:
    ids = write_leads(rig.tmp / "export.csv", 4)
    rig.emu.script("emu-fast", rule(default_rule), rule(default_rule), delay(60))
    proc = _start_score(rig, "-i", "export.csv", "-o", "out.csv", "--concurrency", "1")
    _wait_for_requests(rig, 3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 5  # not held by the request in flight (timeout 10 s)
    assert (
        "interrupted: 2 result(s) of this run are in out.csv; run the same command again to resume "
        "(leads that were in flight are scored again)"
    ) in " ".join(stderr.split())
    assert [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ids[:2]


def test_rows_end_in_input_order_and_rows_already_there_are_not_paid_twice(rig: Rig) -> None:
    with open(rig.tmp / "first.csv", "w", newline="") as fh:  # an earlier run over part of the leads, in another order
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows([lead(3), lead(1)])
    assert rig.score("-i", "first.csv", "-o", "out.csv").returncode == 0
    ids = write_leads(rig.tmp / "export.csv", 4)
    r = rig.score("-i", "export.csv", "-o", "out.csv", "--concurrency", "4")
    assert r.returncode == 0 and "resuming: 2 of 4 leads already in out.csv" in said(r)
    assert [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ids
    assert rig.emu.request_count() == 4


def test_failed_rows_are_retried_by_the_rerun_and_the_title_never_claims_a_score(rig: Rig) -> None:
    ids = write_leads(rig.tmp / "export.csv", 3)
    rig.emu.script("emu-fast", error(500))
    r = rig.score("-i", "export.csv", "-o", "out.csv", "--concurrency", "1")
    assert r.returncode == 1
    assert "no lead scored: no provider answered (3 failed)" in said(r)
    assert "leads scored" not in said(r)
    cause = next(line for line in r.stdout.splitlines() if line.startswith("no provider answered"))
    assert cause.startswith("no provider answered: fast: HTTP 500")  # the cause, from the chain
    assert "the failed leads are tried again when you run the same command again" in said(r)
    assert [row["status"] for row in out_rows(rig.tmp / "out.csv")] == ["failed"] * 3

    rig.emu.script("emu-fast", rule(default_rule))
    r = rig.score("-i", "export.csv", "-o", "out.csv")
    assert r.returncode == 0
    assert "resuming: 0 of 3 leads already in out.csv; 3 that failed before are tried again" in said(r)
    rows = out_rows(rig.tmp / "out.csv")
    assert [row["id"] for row in rows] == ids and {row["status"] for row in rows} == {"scored"}


def test_a_row_cut_off_by_a_crash_is_dropped_and_its_lead_scored_again(rig: Rig) -> None:
    ids = write_leads(rig.tmp / "export.csv", 3)
    assert rig.score("-i", "export.csv", "-o", "out.csv").returncode == 0
    out = rig.tmp / "out.csv"
    out.write_bytes(out.read_bytes()[:-25])  # the process died in the middle of writing the last row
    r = rig.score("-i", "export.csv", "-o", "out.csv")
    assert r.returncode == 0
    assert ("resuming: 2 of 3 leads already in out.csv; a last row cut off mid-write was dropped; that lead is scored again") in said(r)
    rows = out_rows(out)
    assert [row["id"] for row in rows] == ids and all(row["hops"] for row in rows)
    assert rig.emu.request_count() == 4


# --------------------------------------------------------------------------- files as export tools write them


def test_an_excel_cp1252_semicolon_export_is_refused_as_utf8_and_read_with_encoding(rig: Rig) -> None:
    # Excel on a German Windows: cp1252, ';' separated, CRLF, a multi-line note in quotes, a euro sign.
    text = (
        "Id;company;title;monthly_orders;description\r\n"
        '00Q1;Müller Versand GmbH;Geschäftsführer;6000;"Zeile eins\r\nZeile zwei: 5 €"\r\n'
        "00Q2;Café Olé;Inhaber;300;klein\r\n"
    )
    (rig.tmp / "export.csv").write_bytes(text.encode("cp1252"))
    r = rig.score("-i", "export.csv")
    assert said(r).startswith(
        "error: export.csv line 2: not valid UTF-8 (byte 0xfc); save it as UTF-8, "
        "or pass --encoding cp1252 (Excel on Windows) or --encoding latin-1."
    )
    assert r.returncode == 2 and rig.emu.request_count() == 0

    r = rig.score("-i", "export.csv", "--encoding", "cp1252", "-o", "out.csv")
    assert r.returncode == 0, said(r)
    assert [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ["00Q1", "00Q2"]
    sent = [extract_lead(rig.emu._last_user_text(q.body)) for q in rig.emu.requests]
    assert sent[0]["company"] == "Müller Versand GmbH" and sent[0]["description"] == "Zeile eins\r\nZeile zwei: 5 €"
    assert sent[1]["company"] == "Café Olé"


def test_utf8_with_bom_and_crlf_keeps_the_id_column(rig: Rig) -> None:
    # Excel's "CSV UTF-8": a BOM before the first column name, which would otherwise turn "id" into "\ufeffid".
    text = "id,company,monthly_orders\r\nL-1,Ærø Shop,4000\r\nL-2,Zoë's,20\r\n"
    (rig.tmp / "export.csv").write_bytes(text.encode("utf-8-sig"))
    r = rig.score("-i", "export.csv", "-o", "out.csv")
    assert r.returncode == 0, said(r)
    assert [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ["L-1", "L-2"]


def test_utf16_tab_separated_unicode_text_needs_and_takes_its_encoding(rig: Rig) -> None:
    text = "id\tcompany\tmonthly_orders\r\nU1\tSørensen A/S\t7000\r\n"
    (rig.tmp / "export.csv").write_bytes(text.encode("utf-16"))
    r = rig.score("-i", "export.csv")
    assert said(r) == "error: export.csv is UTF-16 text (Excel's 'Unicode Text'); pass --encoding utf-16."
    assert r.returncode == 2 and rig.emu.request_count() == 0
    r = rig.score("-i", "export.csv", "--encoding", "utf-16", "-o", "out.csv")
    assert r.returncode == 0, said(r)
    assert out_rows(rig.tmp / "out.csv")[0]["id"] == "U1"
    assert extract_lead(rig.emu._last_user_text(rig.emu.requests[0].body))["company"] == "Sørensen A/S"


def _gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(b"id,company\nA,Acme\n"))


def _xlsx(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")


def _nul(path: Path) -> None:
    path.write_bytes(b"id,company\nA,Ac\x00me\n")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_gzip, "error: export.csv is gzip-compressed, not CSV or JSON Lines text; unpack it first (gunzip -k export.csv)."),
        (
            _xlsx,
            (
                "error: export.csv is a ZIP archive (an Excel .xlsx workbook?), not CSV text; "
                "in Excel use File > Save As > 'CSV UTF-8 (Comma delimited)'."
            ),
        ),
        (_nul, "error: export.csv contains NUL bytes: it is a binary file, not CSV or JSON Lines text."),
    ],
    ids=["gzip", "xlsx", "binary"],
)
def test_a_file_that_is_not_text_is_named_as_such(rig: Rig, make, expected: str) -> None:
    make(rig.tmp / "export.csv")
    r = rig.score("-i", "export.csv")
    assert said(r) == expected
    assert r.returncode == 2 and rig.emu.request_count() == 0


def test_a_value_far_over_the_csv_default_limit_is_read(rig: Rig) -> None:
    # 200,000 characters: over Python's default 131,072 and over a Salesforce long text area; in quotes, with commas.
    note = ("Long call notes, pasted from the CRM. " * 5300)[:200_000]
    (rig.tmp / "export.csv").write_text(f'id,company,description\nA,Acme,"{note}"\nB,Beta,short\n', encoding="utf-8")
    r = rig.score("-i", "export.csv", "-o", "out.csv")
    assert r.returncode == 0, said(r)
    assert [row["id"] for row in out_rows(rig.tmp / "out.csv")] == ["A", "B"]
    assert rig.emu.request_count() == 2


def test_a_value_over_16_mib_is_refused_with_its_line(rig: Rig) -> None:
    (rig.tmp / "export.csv").write_text("id,company,description\nA,Acme,ok\nB,Beta," + "x" * (16 * 2**20 + 1) + "\n")
    r = rig.score("-i", "export.csv")
    assert said(r) == (
        "error: export.csv line 3: a value is longer than 16 MiB, more than any CRM field holds (not a CSV export, or a quote left open?)."
    )
    assert r.returncode == 2 and rig.emu.request_count() == 0


def test_an_unclosed_quote_is_named_instead_of_swallowing_the_rest_of_the_file(rig: Rig) -> None:
    (rig.tmp / "export.csv").write_text('id,company,description\nA,Acme,fine\nB,Beta,"never closed\nC,Gamma,ok\n')
    r = rig.score("-i", "export.csv")
    assert said(r) == 'error: export.csv line 3: a quoted value that starts here is never closed (a stray " ?).'
    assert r.returncode == 2 and rig.emu.request_count() == 0


def test_bad_json_lines_are_each_named(rig: Rig) -> None:
    (rig.tmp / "export.jsonl").write_text(
        '{"id": "A", "company": "Acme"}\n[1, 2]\n{"id": "B", company: "Beta"}\n"just text"\n\n{"id": "C", "company": "Co"}\n'
    )
    r = rig.score("-i", "export.jsonl")
    assert r.stderr.splitlines() == [
        "error: export.jsonl line 2: an array, not a JSON object",
        "export.jsonl line 3: not valid JSON (Expecting property name enclosed in double quotes, column 13)",
        "export.jsonl line 4: a string, not a JSON object",
        'Each line must be one JSON object, like {"id": "L1", "company": "Acme"}.',
    ]
    assert r.returncode == 2 and rig.emu.request_count() == 0


def test_mapped_columns_missing_from_the_header_are_named(rig: Rig) -> None:
    (rig.tmp / "export.csv").write_text("id,company,Title,monthly_orders\nA,Acme,VP Operations,9000\n")
    r = rig.score("-i", "export.csv")
    assert r.returncode == 0
    assert (
        "warning: export.csv has no column for these mapped inputs: title (the file has 'Title'), industry, "
        "employees, source, description; they stay empty for every lead. "
        "Fix [fields] inputs in the config or the file's header."
    ) in said(r)


def test_repeated_lead_ids_are_refused_before_any_call(rig: Rig) -> None:
    (rig.tmp / "export.csv").write_text("id,company\nA,Acme\nB,Beta\nA,Acme again\n")
    r = rig.score("-i", "export.csv", "-o", "out.csv")
    assert said(r) == (
        "error: export.csv: lead ids must be unique (the output and resuming match rows by id); repeated: 'A' (lines 2 and 4)."
    )
    assert r.returncode == 2 and rig.emu.request_count() == 0
    assert not (rig.tmp / "out.csv").exists()


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["-1", "0", "65"])
def test_concurrency_outside_1_to_64_is_a_usage_error(rig: Rig, value: str) -> None:
    write_leads(rig.tmp / "export.csv", 1)
    r = rig.score("-i", "export.csv", "--concurrency", value)
    assert r.stderr.splitlines()[-1] == f"Error: Invalid value for '--concurrency': {value} is not in the range 1<=x<=64."
    assert r.returncode == 2 and rig.emu.request_count() == 0


def test_the_concurrency_option_and_the_config_share_one_cap() -> None:
    assert [m.le for m in ScoringConfig.model_fields["concurrency"].metadata if getattr(m, "le", None)] == [64]


def test_an_unknown_encoding_is_a_usage_error(rig: Rig) -> None:
    write_leads(rig.tmp / "export.csv", 1)
    r = rig.score("-i", "export.csv", "--encoding", "excel")
    assert r.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--encoding': unknown encoding 'excel' (try utf-8, cp1252, latin-1 or utf-16)"
    )
    assert r.returncode == 2 and rig.emu.request_count() == 0


@pytest.mark.parametrize("command", ["run", "score"])
def test_log_level_is_a_documented_choice(rig: Rig, command: str) -> None:
    write_leads(rig.tmp / "export.csv", 1)
    extra = ["--once"] if command == "run" else ["-i", "export.csv"]
    r = crmsync(rig.cfg, command, *extra, "--log-level", "verbose", key=rig.emu.api_key)
    assert r.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--log-level': 'verbose' is not one of 'debug', 'info', 'warning', 'error'."
    )
    assert r.returncode == 2 and rig.emu.request_count() == 0
    help_text = " ".join(crmsync(None, command, "--help", key="").stdout.split())
    assert (
        "--log-level [debug|info|warning|error] How much crmsync logs on stderr (any case): DEBUG shows every provider call and decision."
    ) in help_text


def test_log_level_in_any_case_is_accepted(rig: Rig) -> None:
    write_leads(rig.tmp / "export.csv", 1)
    r = rig.score("-i", "export.csv", "--log-level", "debug")
    assert r.returncode == 0, said(r)
    assert "DEBUG " in r.stderr  # debug lines are on
