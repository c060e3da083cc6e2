"""Can this worker run jobs at all? Its scratch, its ffmpeg, and a streak of failures its
environment caused. A worker that cannot is *unfit*: it stops receiving and retires.

* Before each receive, ``check`` looks at the environment: ffmpeg and ffprobe on ``PATH``, the
  scratch root writable, and at least ``reserve_bytes`` free there. The message has no size, so
  nothing finer can be checked before a job is claimed.
* After the claim, once ffprobe has read the source, ``make_room`` compares the job's worst case
  (every rung at its ``maxrate`` for the source's duration, audio included, times the copies of
  each rendition scratch holds (two with HLS: the MP4 and its segments), plus ``margin_ratio``)
  with the free space. The source's own size does not matter: its bytes never land in scratch
  (ffmpeg reads it over HTTP). A job that needs more than the whole filesystem holds is the job's
  problem (``scratch_too_small``, retried and dead-lettered like any retryable error); one that
  needs more than is free now is the worker's (``scratch_full``: unfit).
* After a job fails, ``blames`` says whether the environment is to blame: the failure looks
  environmental (an ``OSError`` such as ``EACCES``/``ENOSPC``/a missing binary, ffmpeg's "No
  space left on device", or a ``WorkerEnvironmentError``) and either the environment check now
  fails or ``max_environment_failures`` such failures came in a row. A full disk that the job's
  own outputs filled is freed when its scratch is removed: the check then passes, and the job's
  receive counts, so a job that fills any disk still reaches the DLQ.

Unfit is final for the process: a fresh task (ECS, compose ``restart``) gets a fresh disk.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from transcoder.domain.errors import RetryableError, TranscoderError, WorkerEnvironmentError
from transcoder.domain.job import Reason, SourceFacts

BINARIES = ("ffmpeg", "ffprobe")
# Scratch full or read-only, permissions, a binary gone (ENOENT from exec).
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT}
)


class Usage(NamedTuple):
    total: int
    used: int
    free: int


DiskUsage = Callable[[Path], Usage]
Which = Callable[[str], str | None]


def disk_usage(path: Path) -> Usage:
    total, used, free = shutil.disk_usage(path)
    return Usage(total, used, free)


@dataclass(frozen=True, slots=True)
class FitnessConfig:
    reserve_bytes: int  # free space needed in scratch before receiving
    margin_ratio: float  # on top of a job's worst-case output size
    max_environment_failures: int  # in a row, even while the checks pass
    ladder_kbps: int  # every rung's maxrate plus its audio: the worst case per second of source
    output_copies: int = 1  # each rendition is in scratch this many times (2: MP4 and HLS)


@dataclass(frozen=True, slots=True)
class Unfit:
    """Why the worker cannot run jobs; ``reason`` is a ``Reason`` code."""

    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


class Fitness:
    """The worker's own health; once unfit, unfit for good."""

    def __init__(
        self,
        config: FitnessConfig,
        scratch: Path,
        *,
        usage: DiskUsage = disk_usage,
        which: Which = shutil.which,
    ) -> None:
        self._config = config
        self._scratch = scratch
        self._usage = usage
        self._which = which
        self._streak = 0
        self.unfit: Unfit | None = None

    def check(self) -> Unfit | None:
        """Look at the environment now; the first problem found makes the worker unfit."""
        if self.unfit is None:
            self.unfit = self._binaries() or self._writable() or self._room()
        return self.unfit

    def need_bytes(self, duration_s: float) -> int:
        """A job's worst-case scratch use: every rung at its maxrate, plus the margin."""
        per_copy = self._config.ladder_kbps * 1000 / 8 * max(duration_s, 1.0)
        worst = per_copy * self._config.output_copies
        return int(worst * (1 + self._config.margin_ratio))

    def make_room(self, source: SourceFacts) -> None:
        """Raise unless scratch has room for this job's renditions (see the module docstring)."""
        need = self.need_bytes(source.duration_s)
        usage = self._usage(self._scratch)
        if need > usage.total:
            raise RetryableError(
                f"the job needs up to {need} bytes of scratch, the disk holds {usage.total}",
                reason=Reason.SCRATCH_TOO_SMALL,
            )
        if need > usage.free:
            self.unfit = Unfit(
                Reason.SCRATCH_FULL, f"a job needs up to {need} bytes, {usage.free} free"
            )
            raise WorkerEnvironmentError(str(self.unfit), reason=Reason.SCRATCH_FULL)

    def blames(self, exc: BaseException) -> bool:
        """After a failed job: is it this worker's environment's fault (it is unfit now)?"""
        if not environmental(exc):
            self._streak = 0
            return False
        self._streak += 1
        if self.check() is None and self._streak >= self._config.max_environment_failures:
            self.unfit = Unfit(
                Reason.ENVIRONMENT_FAILURES,
                f"{self._streak} jobs in a row failed in this worker's environment; last: {exc}",
            )
        return self.unfit is not None

    def succeeded(self) -> None:
        self._streak = 0

    def _binaries(self) -> Unfit | None:
        missing = [name for name in BINARIES if self._which(name) is None]
        if missing:
            return Unfit(Reason.FFMPEG_MISSING, f"not on PATH: {', '.join(missing)}")
        return None

    def _writable(self) -> Unfit | None:
        try:
            self._scratch.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self._scratch, prefix=".fitness-"):
                pass
        except OSError as exc:
            return Unfit(Reason.SCRATCH_UNWRITABLE, f"{self._scratch}: {exc}")
        return None

    def _room(self) -> Unfit | None:
        free = self._usage(self._scratch).free
        if free < self._config.reserve_bytes:
            return Unfit(
                Reason.SCRATCH_FULL,
                f"{free} bytes free in {self._scratch}, under the "
                f"{self._config.reserve_bytes}-byte reserve",
            )
        return None


def environmental(exc: BaseException) -> bool:
    """A failure that points at the worker rather than at the job."""
    if isinstance(exc, WorkerEnvironmentError):
        return True
    if isinstance(exc, OSError):  # not TimeoutError or ConnectionError: those are the network
        return exc.errno in ENVIRONMENT_ERRNOS
    return isinstance(exc, TranscoderError) and exc.reason is Reason.SCRATCH_FULL
