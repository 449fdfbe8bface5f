"""One crmsync per state directory, and a clean stop on SIGTERM/SIGINT for commands that are not the daemon.

Two daemons on one state directory score and pay for every lead twice. So every command that changes the
ledger or the CRM (`run`, `rescore`, `labels pull`, `ledger rebuild`) first takes a kernel lock (flock, through
``filelock``) on ``state_dir/crmsync.lock``. The kernel drops it when the process ends, even on ``kill -9``:
a stale file never blocks. The holder writes who it is (pid, host, command, since when) into that same file,
so a second instance can name it. Read-only commands (`status`, `check`, `ledger backup`) take no lock.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import AlreadyRunningError
from .faults import state_dir_fault

LOCK_FILE = "crmsync.lock"
log = logging.getLogger("crmsync")


def hold_state_dir(state_dir: Path, command: str) -> FileLock:
    """Take ``state_dir`` (release the returned lock when done; the kernel does if the process dies), or raise
    AlreadyRunningError naming the holder."""
    path = state_dir / LOCK_FILE
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }

    def publish(fd: int) -> None:  # runs with the lock held; a contender never truncates (filelock opens without O_TRUNC)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)

    lock = FileLock(
        path,
        timeout=0,
        thread_local=False,
        preserve_lock_file=True,
        fallback_to_soft=False,  # a lock file without a kernel lock would outlive a kill -9
        on_acquired=publish,
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise AlreadyRunningError(_busy(state_dir, path)) from None
    except OSError as exc:
        raise state_dir_fault(state_dir, exc) from None
    return lock


def _busy(state_dir: Path, path: Path) -> str:
    who = "another crmsync (it has not yet written who it is)"
    for _ in range(5):  # the holder may be between truncating and writing its details
        try:
            h = json.loads(path.read_text(encoding="utf-8"))
            who = f"another crmsync (pid {h['pid']} on {h['host']}, `crmsync {h['command']}` since {h['since']})"
            break
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return (
        f"{who} is already using the state directory {state_dir}. Only one may run per state directory: two would "
        f"score and pay for every lead twice. Fix: stop the other one first (e.g. `systemctl stop crmsync`), or give "
        f"this one its own [daemon] state_dir."
    )


def stop_on_signals() -> Callable[[], bool]:
    """SIGTERM/SIGINT ask for a clean stop, as the daemon does: no new lead starts; those in flight finish and are
    recorded and written. Returns the ``stop`` callable for ``Cycle.run``."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.warning("%s received: finishing in-flight leads, then stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping.is_set
