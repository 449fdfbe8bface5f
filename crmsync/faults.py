"""What each way the state directory or the ledger can be unusable means: one LedgerError naming the file, what
happened and what to do. Kept apart from state.py (which meets the errors) so every message a person may see about
the ledger is in one place; no sqlite3 here, only the error names it reports."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import LedgerError

RESTORE = "restore your last backup, or rebuild it from the CRM with `crmsync ledger rebuild` (README, Operations: Recovery)"


def size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _free(directory: Path) -> str:
    try:
        return size(shutil.disk_usage(directory).free)
    except OSError:
        return "unknown"


def detail(exc: BaseException) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


def state_dir_fault(directory: Path, exc: BaseException) -> LedgerError:
    return LedgerError(
        f"cannot write in the state directory {directory} ({detail(exc)}): crmsync keeps its ledger and its lock there, "
        f"and SQLite creates files beside the ledger. Fix: make the directory writable for the user crmsync runs as "
        f"(e.g. `chown -R crmsync {directory}`), or set [daemon] state_dir to a writable directory."
    )


def damaged(path: Path, what: str) -> LedgerError:
    return LedgerError(
        f"the ledger {path} {what}. crmsync left it as is and will not replace it on its own (that would score and "
        f"pay for every lead again). Fix: stop crmsync, move the file aside (keep it), then {RESTORE}."
    )


def empty(path: Path) -> LedgerError:
    return LedgerError(
        f"the ledger {path} is empty (0 bytes): the record of which leads were scored, written and paid for is gone. "
        f"crmsync will not start a new ledger over it, because that would score and pay for every lead again. "
        f"Fix: {RESTORE}; on a new install with nothing scored yet, delete the file. The file was left as is."
    )


def fault(path: Path, exc: BaseException) -> LedgerError:
    """Which fault ``exc`` (from sqlite3 or the OS) means for the ledger at ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    directory = path.parent
    if isinstance(exc, PermissionError) or name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
        if name == "SQLITE_READONLY_DIRECTORY" or not os.access(directory, os.W_OK | os.X_OK):
            return state_dir_fault(directory, exc)
        for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if f.exists() and not os.access(f, os.R_OK | os.W_OK):
                return LedgerError(
                    f"the ledger file {f} is read-only for this user ({detail(exc)}): crmsync could not record a score, "
                    f"so it stops rather than pay for scores it cannot keep. Fix: make the ledger's files writable for the "
                    f"user crmsync runs as (e.g. `chown crmsync {path}*` and `chmod 600 {path}*`), then start again."
                )
    if name == "SQLITE_FULL" or getattr(exc, "errno", None) == errno.ENOSPC:
        return LedgerError(
            f"the disk holding the ledger {path} is full ({detail(exc)}; {_free(directory)} free there now): crmsync "
            f"could not record a score, so it stops rather than pay for scores it cannot keep. Fix: free space on that "
            f"disk, then start again. The ledger was left as is."
        )
    if name.startswith("SQLITE_IOERR"):
        return LedgerError(
            f"cannot read or write the ledger {path} ({detail(exc)}; {_free(directory)} free on its disk): the disk or "
            f"this user's quota may be full, or the disk is failing. crmsync stops rather than pay for scores it cannot "
            f"keep. Fix: free space (`df -h {directory}`), check the disk (`dmesg`), then start again. The ledger was "
            f"left as is."
        )
    if name == "SQLITE_NOTADB":
        return damaged(path, f"is not a SQLite database ({exc}): it was overwritten, or is another file")
    if name == "SQLITE_CORRUPT":
        return damaged(path, f"is damaged ({exc})")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return LedgerError(
            f"the ledger {path} is locked by another program ({exc}). Fix: close what holds it (an open `sqlite3` "
            f"shell, a copy or backup tool), then start again."
        )
    return LedgerError(f"cannot use the ledger {path} ({detail(exc)}). The file was left as is. Fix: {RESTORE}.")
