"""A ledger crmsync cannot use: one clear message naming the file and the fix, a non-zero exit (4), not one LLM
call paid, and the file left exactly as it was. Each fault is made for real (file modes, a file-size limit,
damaged bytes) and seen through the CLI, as an operator would.

Every case first scores 3 leads, then adds 2 new ones to the CRM, so a run that ignored the fault would pay for 2.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crmsync.errors import LedgerError
from crmsync.state import Ledger
from tests.daemon_helpers import env
from tests.emulators import OpenAIEmulator
from tests.ops_helpers import PLAIN_USER, add_leads, cli, crm_db, digest, said, setup

RESTORE = "restore your last backup, or rebuild it from the CRM with `crmsync ledger rebuild` (README, Operations: Recovery)"


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as e:
        yield e


@pytest.fixture
def scored(tmp_path: Path, emu: OpenAIEmulator) -> Iterator[Path]:
    """3 leads scored and written; 2 new leads waiting in the CRM. Modes are restored for pytest's clean-up."""
    cfg = setup(tmp_path, emu.base_url, 3)
    r = cli(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert emu.request_count() == 3
    add_leads(tmp_path, ["N1", "N2"])
    yield cfg
    for p in [tmp_path / "state", *(tmp_path / "state").glob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _refused(cfg: Path, emu: OpenAIEmulator, *, wrap: list[str] | None = None, args: tuple[str, ...] = ("run", "--once")) -> str:
    r = cli(cfg, *args, key=emu.api_key, wrap=wrap)
    assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert emu.request_count() == 3, "an LLM call was paid although the ledger could not record it"
    return said(r.stderr)


def _unscored_in_crm(tmp: Path) -> int:
    db = crm_db(tmp)
    try:
        return db.execute("SELECT COUNT(*) FROM leads WHERE ai_score IS NULL").fetchone()[0]
    finally:
        db.close()


def test_read_only_ledger_file(tmp_path: Path, scored: Path, emu: OpenAIEmulator) -> None:
    ledger = tmp_path / "state" / "ledger.sqlite"
    ledger.chmod(0o444)
    before = digest(ledger)
    msg = _refused(scored, emu, wrap=PLAIN_USER)
    assert msg == (
        f"error: the ledger file {ledger} is read-only for this user (attempt to write a readonly database): crmsync could "
        f"not record a score, so it stops rather than pay for scores it cannot keep. Fix: make the ledger's files writable "
        f"for the user crmsync runs as (e.g. `chown crmsync {ledger}*` and `chmod 600 {ledger}*`), then start again."
    )
    assert digest(ledger) == before
    # Fixed as the message says (SQLite gave the -shm file it made beside the ledger the ledger's mode): the two
    # waiting leads are scored, nothing else is paid again.
    for f in ledger.parent.glob("ledger.sqlite*"):
        f.chmod(0o600)
    r = cli(scored, "run", "--once", key=emu.api_key, wrap=PLAIN_USER)
    assert r.returncode == 0, r.stderr
    assert emu.request_count() == 5 and _unscored_in_crm(tmp_path) == 0


def test_read_only_ledger_file_stops_the_daemon_at_start(tmp_path: Path, scored: Path, emu: OpenAIEmulator) -> None:
    ledger = tmp_path / "state" / "ledger.sqlite"
    ledger.chmod(0o444)
    msg = _refused(scored, emu, wrap=PLAIN_USER, args=("run",))
    assert msg.startswith(f"error: the ledger file {ledger} is read-only for this user")


def test_read_only_state_dir_with_a_ledger(tmp_path: Path, scored: Path, emu: OpenAIEmulator) -> None:
    state = tmp_path / "state"
    before = digest(state / "ledger.sqlite")
    state.chmod(0o555)
    msg = _refused(scored, emu, wrap=PLAIN_USER)
    assert msg == (
        f"error: cannot write in the state directory {state} (attempt to write a readonly database): crmsync keeps its "
        f"ledger and its lock there, and SQLite creates files beside the ledger. Fix: make the directory writable for "
        f"the user crmsync runs as (e.g. `chown -R crmsync {state}`), or set [daemon] state_dir to a writable directory."
    )
    assert digest(state / "ledger.sqlite") == before


def test_read_only_state_dir_on_first_start(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = setup(tmp_path, emu.base_url, 3)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    try:
        r = cli(cfg, "run", "--once", key=emu.api_key, wrap=PLAIN_USER)
    finally:
        state.chmod(0o755)
    assert r.returncode == 4, r.stderr
    assert said(r.stderr) == (
        f"error: cannot write in the state directory {state} (Permission denied): crmsync keeps its ledger and its lock "
        f"there, and SQLite creates files beside the ledger. Fix: make the directory writable for the user crmsync runs "
        f"as (e.g. `chown -R crmsync {state}`), or set [daemon] state_dir to a writable directory."
    )
    assert emu.request_count() == 0
    assert list(state.iterdir()) == []


def test_full_disk(tmp_path: Path, scored: Path, emu: OpenAIEmulator) -> None:
    """``prlimit --fsize``: the kernel refuses to grow any file past 40,000 bytes, as a full disk refuses any write."""
    ledger = tmp_path / "state" / "ledger.sqlite"
    assert ledger.stat().st_size > 40_000  # so every new page of the ledger lands past the limit
    before = digest(ledger)
    msg = _refused(scored, emu, wrap=["prlimit", "--fsize=40000:40000", "--"])
    assert re.fullmatch(
        re.escape(f"error: cannot read or write the ledger {ledger} (disk I/O error; ")
        + r"[0-9.]+ [KMGT]iB"
        + re.escape(
            f" free on its disk): the disk or this user's quota may be full, or the disk is failing. crmsync stops "
            f"rather than pay for scores it cannot keep. Fix: free space (`df -h {ledger.parent}`), check the disk "
            f"(`dmesg`), then start again. The ledger was left as is."
        ),
        msg,
    ), msg
    assert digest(ledger) == before


def _damage_message(ledger: Path, what: str) -> str:
    return (
        f"error: the ledger {ledger} {what}. crmsync left it as is and will not replace it on its own (that would score "
        f"and pay for every lead again). Fix: stop crmsync, move the file aside (keep it), then {RESTORE}."
    )


def _cut_short(p: Path) -> str:
    os.truncate(p, p.stat().st_size - 1000)
    return f"is cut short ({p.stat().st_size} bytes is not a whole number of 4096-byte pages)"


def _cut_at_a_page(p: Path) -> str:
    os.truncate(p, 4 * 4096)
    return "is damaged (database disk image is malformed)"


def _garbage(p: Path) -> str:
    p.write_bytes(bytes(range(256)) * (p.stat().st_size // 256))
    return "is not a SQLite database (file is not a database): it was overwritten, or is another file"


@pytest.mark.parametrize("damage", [_cut_short, _cut_at_a_page, _garbage], ids=["truncated", "truncated-at-a-page", "garbage"])
def test_damaged_ledger_is_refused_and_kept(tmp_path: Path, scored: Path, emu: OpenAIEmulator, damage: Callable[[Path], str]) -> None:
    ledger = tmp_path / "state" / "ledger.sqlite"
    what = damage(ledger)
    before = digest(ledger)
    assert _refused(scored, emu) == _damage_message(ledger, what)
    assert digest(ledger) == before
    assert sorted(p.name for p in ledger.parent.iterdir()) == ["crmsync.lock", "ledger.sqlite"]  # nothing new beside it


def test_empty_ledger_is_an_error_not_a_fresh_start(tmp_path: Path, scored: Path, emu: OpenAIEmulator) -> None:
    ledger = tmp_path / "state" / "ledger.sqlite"
    ledger.write_bytes(b"")
    assert _refused(scored, emu) == (
        f"error: the ledger {ledger} is empty (0 bytes): the record of which leads were scored, written and paid for is "
        f"gone. crmsync will not start a new ledger over it, because that would score and pay for every lead again. "
        f"Fix: {RESTORE}; on a new install with nothing scored yet, delete the file. The file was left as is."
    )
    assert ledger.stat().st_size == 0
    # `status` (read-only) says the same, and exits the same way.
    r = cli(scored, "status", key=emu.api_key)
    assert r.returncode == 4 and said(r.stderr).startswith(f"error: the ledger {ledger} is empty (0 bytes)")


def test_missing_ledger_is_a_fresh_start_made_whole_before_it_gets_its_name(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite"
    Ledger(path, "sqlite").close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ledger.sqlite"]  # no ledger.sqlite.new left behind
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1 and db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_probe_reports_sqlite_full(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full" (SQLITE_FULL), made real by capping the file's pages."""
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, "sqlite")
    pages = ledger.db.execute("PRAGMA page_count").fetchone()[0]
    ledger.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(LedgerError) as exc:
        ledger.probe_writable()
    assert re.fullmatch(
        re.escape(f"the disk holding the ledger {path} is full (database or disk is full; ")
        + r"[0-9.]+ [KMGT]iB"
        + re.escape(
            " free there now): crmsync could not record a score, so it stops rather than pay for scores it "
            "cannot keep. Fix: free space on that disk, then start again. The ledger was left as is."
        ),
        str(exc.value),
    ), str(exc.value)
    ledger.db.execute(f"PRAGMA max_page_count = {pages + 100}")
    ledger.probe_writable()  # room again: the probe passes, and left no transaction open
    assert not ledger.db.in_transaction
    ledger.close()


def test_probe_keeps_a_reserve_of_free_space(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "sqlite")
    with pytest.raises(LedgerError) as exc:
        ledger.probe_writable(min_free_bytes=1 << 60)  # more than any disk here has
    assert re.search(r"is full \(only [0-9.]+ [KMG]iB free, below the 1048576.0 TiB crmsync keeps in reserve; ", str(exc.value)), str(
        exc.value
    )
    ledger.close()


def test_probe_notices_a_deleted_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, "sqlite")
    path.unlink()
    with pytest.raises(LedgerError) as exc:
        ledger.probe_writable()
    assert str(exc.value) == (
        f"the ledger {path} was deleted or replaced while crmsync was running: results would go to a file no one can "
        f"see. Fix: stop crmsync; {RESTORE}; then start it again."
    )
    ledger.close()


def test_daemon_reports_a_ledger_lost_mid_life_each_cycle_and_pays_nothing(tmp_path: Path, emu: OpenAIEmulator) -> None:
    """The ledger is moved away while the daemon runs: the next cycle's probe says so (no traceback), pays nothing,
    and the daemon keeps trying each interval until stopped."""
    cfg = setup(tmp_path, emu.base_url, 3)
    log = tmp_path / "daemon.log"
    with open(log, "w") as fh:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "crmsync", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            text=True,
            env=env(emu.api_key),
            cwd=tmp_path,
        )
    try:
        deadline = time.time() + 30
        while emu.request_count() < 3 and time.time() < deadline:
            time.sleep(0.1)
        while _unscored_in_crm(tmp_path) and time.time() < deadline:  # the first cycle wrote its 3 scores
            time.sleep(0.1)
        assert emu.request_count() == 3
        ledger = tmp_path / "state" / "ledger.sqlite"
        ledger.rename(tmp_path / "state" / "ledger.sqlite.moved")
        add_leads(tmp_path, ["N1", "N2"])
        deadline = time.time() + 30  # the next cycle starts [daemon] interval_s = 10 s after the first
        while "was deleted or replaced" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    text = log.read_text()
    assert daemon.returncode == 0, text
    assert (
        f"ERROR crmsync.daemon: the ledger {ledger} was deleted or replaced while crmsync was running: results would go "
        f"to a file no one can see. Fix: stop crmsync; {RESTORE}; then start it again. (next try in 10s)"
    ) in text
    assert "Traceback" not in text
    assert emu.request_count() == 3
