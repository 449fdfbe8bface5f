"""Opening, checking, probing and backing up the ledger file; the one transaction helper every write uses.
The only module that opens the ledger with ``sqlite3`` (crmsync/state.py holds its queries). The one other
SQLite file, ``crmsync eval``'s result cache (crmsync/evaluation/run.py), is disposable and has no migrations."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import CrmsyncError, LedgerError
from .faults import RESTORE, damaged, detail, empty, fault, size
from .ledger_schema import MIGRATIONS, _now

# -- opening and probing (messages: crmsync/faults.py). The file is never replaced or "repaired" here: a ledger
# crmsync cannot trust is a person's decision.
PROBE_BYTES = 64 * 1024  # the probe commits this much: a disk that cannot take it cannot take a cycle's results
MIN_FREE_BYTES = 8 * 1024 * 1024  # below this on the ledger's disk, refuse to start paying for scores


def _check_intact(db: sqlite3.Connection, path: Path) -> None:
    """A cut-short or damaged file is refused at open, not discovered halfway through a paid cycle."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    nbytes = path.stat().st_size
    if nbytes % page:
        raise damaged(path, f"is cut short ({nbytes} bytes is not a whole number of {page}-byte pages)")
    verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if verdict != "ok":
        raise damaged(path, f"is damaged (integrity check: {verdict})")


class LedgerFile:
    """The ledger file itself: opening, migrating, probing, backing up, and the one transaction helper.
    Thread-safe: scoring threads record results as they finish."""

    def __init__(self, path: Path, crm: str) -> None:
        """Open the ledger; a missing file is a fresh start. Raises LedgerError (the file left as is) when it is
        empty, damaged, not a database, or cannot be opened."""
        self.path = path
        self.crm = crm
        self._lock = threading.Lock()
        try:
            if not path.exists():
                self._create(path)
            elif path.stat().st_size == 0:  # never taken as new: that would rescore and repay every lead
                raise empty(path)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._inode = path.stat().st_ino
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a recorded score survives a power cut
            _check_intact(self.db, path)
            self._migrate()
        except BaseException as exc:
            if hasattr(self, "db"):
                with contextlib.suppress(sqlite3.Error):
                    self.db.close()  # leaves no -wal/-shm beside a file it refused
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise fault(path, exc) from None
            raise

    def _create(self, path: Path) -> None:
        """A new ledger is built under a temporary name and renamed when whole: a crash during the first start
        never leaves an empty or half-made file where the ledger belongs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)  # left by a crash during an earlier first start: it never held a score
        self.db = sqlite3.connect(tmp, isolation_level=None)
        try:
            self._migrate()
        finally:
            self.db.close()
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)

    def probe_writable(self, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        """Raise LedgerError unless this cycle's results can be recorded. Call it before the first LLM call of a
        cycle: a read-only ledger, a full disk or a deleted file then costs nothing. It commits a real write of
        PROBE_BYTES to a scratch table (not ledger data, so not a migration)."""
        try:
            if not self.path.exists() or self.path.stat().st_ino != self._inode:
                raise LedgerError(
                    f"the ledger {self.path} was deleted or replaced while crmsync was running: results would go to a "
                    f"file no one can see. Fix: stop crmsync; {RESTORE}; then start it again."
                )
            free = shutil.disk_usage(self.path.parent).free
            if free < min_free_bytes:
                raise fault(
                    self.path, OSError(errno.ENOSPC, f"only {size(free)} free, below the {size(min_free_bytes)} crmsync keeps in reserve")
                )
            with self._lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL, pad BLOB NOT NULL)")
                    self.db.execute("INSERT OR REPLACE INTO probe VALUES (1, ?, zeroblob(?))", (_now(), PROBE_BYTES))
                    self.db.execute("COMMIT")
                except BaseException:
                    if self.db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self.db.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as exc:
            raise fault(self.path, exc) from None

    def fault(self, exc: BaseException) -> LedgerError:
        """The one clear message for a sqlite3/OS error met while using this ledger (for callers outside state.py)."""
        return fault(self.path, exc)

    def backup(self, dest: Path) -> int:
        """Copy the ledger with SQLite's online backup (consistent while crmsync runs); returns the bytes written.
        Written under a temporary name and renamed when checked: a half-written backup never has the real name."""
        if dest.exists():
            raise CrmsyncError(f"{dest} already exists: a backup never overwrites a file. Fix: choose a new name.")
        tmp = dest.with_name(dest.name + ".partial")
        try:
            target = sqlite3.connect(tmp)
            try:
                self.db.backup(target)
                verdict = target.execute("PRAGMA quick_check(1)").fetchone()[0]
            finally:
                target.close()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"the copy failed its integrity check: {verdict}")
            os.replace(tmp, dest)
        except (sqlite3.Error, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise CrmsyncError(
                f"cannot write the backup {dest} ({detail(exc)}). Fix: choose a directory this user can write, on a disk "
                f"with space. The ledger {self.path} was not changed."
            ) from None
        return dest.stat().st_size

    def _migrate(self) -> None:
        with self._lock:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for n, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                self.db.executescript(f"BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {n}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The one transaction helper, for ledger tables kept by other modules (crmsync/batch_store.py)."""
        return self._tx()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """Every change to the ledger goes through here: one transaction (one fsync) for many statements, since a
        per-row autocommit costs milliseconds each; and a disk or file fault becomes one clear LedgerError."""
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise self.fault(exc) from None
