"""Scratch space per worker process, and the sweep that removes what killed workers left behind.

The pipeline removes each job's scratch directory in every outcome it sees, cancellation
included; a worker killed with SIGKILL (out of memory, a forced stop) sees nothing and leaves its
files. Each worker process therefore owns one root, ``{scratch_dir}/{worker_id}/``, and holds an
exclusive ``flock`` on ``{scratch_dir}/{worker_id}.lock`` for its whole life. The kernel drops the
lock when the process dies, however it dies, so any worker starting on the same host can tell a
dead owner's root from a live one and remove it. On Fargate a task's disk dies with the task; the
sweep matters where the scratch directory outlives processes (a host volume, a restarted process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from pathlib import Path

from transcoder.logs import get_logger

log = get_logger(__name__)
LOCK_SUFFIX = ".lock"


def safe_name(owner: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", owner)[:128] or "worker"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path`` (created if missing), or None when held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _still_linked(path: Path, fd: int) -> bool:
    """False when a sweeper unlinked the lock file between our open and our flock."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class ScratchSpace:
    """This process's scratch root, locked for the life of the process."""

    def __init__(self, base: Path, root: Path, lock_path: Path, fd: int) -> None:
        self.base = base
        self.root = root
        self._lock_path = lock_path
        self._fd: int | None = fd

    @classmethod
    def claim(cls, base: Path, owner: str) -> ScratchSpace:
        """Lock ``{base}/{owner}`` (or ``{owner}-2``, ... when a live worker holds that name)."""
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 11):
            name = safe_name(owner if n == 1 else f"{owner}-{n}")
            lock_path = base / f"{name}{LOCK_SUFFIX}"
            fd = _try_lock(lock_path)
            if fd is None:
                continue
            if not _still_linked(lock_path, fd):  # lost a race with a sweeper: try again
                os.close(fd)
                continue
            root = base / name
            root.mkdir(exist_ok=True)
            return cls(base, root, lock_path, fd)
        raise RuntimeError(f"could not lock a scratch root for {owner} under {base}")

    def sweep(self) -> list[Path]:
        """Remove every sibling root whose owner is gone; returns what was removed."""
        removed = []
        for lock_path in sorted(self.base.glob(f"*{LOCK_SUFFIX}")):
            if lock_path == self._lock_path:
                continue
            with contextlib.suppress(FileNotFoundError):
                if self._remove_if_orphaned(lock_path):
                    removed.append(lock_path.with_suffix(""))
        if removed:
            log.info("scratch.swept", roots=[str(p) for p in removed])
        return removed

    @staticmethod
    def _remove_if_orphaned(lock_path: Path) -> bool:
        fd = _try_lock(lock_path)
        if fd is None:
            return False  # its owner is alive
        try:
            if not _still_linked(lock_path, fd):
                return False
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            lock_path.unlink()
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove our root and release the lock (a clean exit leaves nothing behind)."""
        if self._fd is None:
            return
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self._lock_path.unlink()
        os.close(self._fd)
        self._fd = None
