"""Measuring processes: exact CPU and peak RSS from ``os.wait4``, sampled trees with psutil.

* A process we start and reap ourselves (B0, B1, the naive worker) is measured exactly:
  :func:`run_measured` waits with ``os.wait4``, whose ``rusage`` holds the CPU time and the peak
  RSS (``ru_maxrss``) of the process and of every descendant it reaped.
* A long-lived process (the worker under test) is measured by difference: psutil's
  ``cpu_times()`` splits its own CPU from that of its reaped children (ffmpeg, ffprobe).
* :class:`Sampler` polls a process tree and scratch directories every ``interval_s``: peak RSS of
  Python and of ffmpeg separately (ffmpeg's ``VmHWM`` from ``/proc`` when readable, so a peak
  between two samples is not missed), peak scratch disk usage, every file seen (with its
  largest size), and when the first output (a file named like a rendition) held encoded frames.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# An MP4 header (ftyp + free + mdat header) is under 100 bytes and ffmpeg's I/O buffer is 32 KiB,
# so an output past this size holds encoded frames.
FIRST_FRAME_BYTES = 4096
_FFMPEG_NAMES = ("ffmpeg", "ffprobe")


@dataclass(frozen=True, slots=True)
class Finished:
    """A process we reaped with ``os.wait4``."""

    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_bytes: int
    stderr_tail: str


def run_measured(
    args: Sequence[str],
    *,
    sampler: Sampler | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
) -> Finished:
    """Run ``args`` to completion; exact CPU (user + system) and peak RSS of its whole tree."""
    started = time.monotonic()
    with subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
    ) as process:
        if sampler is not None:
            sampler.watch(process.pid)
        assert process.stderr is not None
        stderr = process.stderr.read()  # ffmpeg runs with -loglevel error: this stays small
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        returncode=process.returncode,
        wall_s=time.monotonic() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        stderr_tail=stderr.decode(errors="replace")[-2000:],
    )


@dataclass(frozen=True, slots=True)
class TreeCpu:
    """CPU seconds of one process and of the children it has reaped."""

    own_s: float
    children_s: float

    def __sub__(self, other: TreeCpu) -> TreeCpu:
        return TreeCpu(self.own_s - other.own_s, self.children_s - other.children_s)


def tree_cpu(pid: int) -> TreeCpu:
    times = psutil.Process(pid).cpu_times()
    return TreeCpu(times.user + times.system, times.children_user + times.children_system)


def _peak_rss_bytes(process: psutil.Process) -> int:
    """``VmHWM`` (the kernel's high-water mark) when readable, else the current RSS."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return int(process.memory_info().rss)


@dataclass
class Sampled:
    """What a :class:`Sampler` saw between ``start`` and ``stop``."""

    started_at: float = 0.0  # epoch seconds
    peak_python_rss_bytes: int = 0
    peak_ffmpeg_rss_bytes: int = 0  # the largest single ffmpeg process
    peak_ffmpeg_total_rss_bytes: int = 0  # all ffmpeg processes alive at the same instant
    peak_disk_bytes: int = 0
    first_output_at: float | None = None  # epoch seconds

    def first_output_after(self, started_at: float) -> float | None:
        """Seconds from ``started_at`` (epoch) until the first output held encoded frames."""
        if self.first_output_at is None:
            return None
        return round(max(0.0, self.first_output_at - started_at), 3)

    files_seen: dict[str, int] = field(default_factory=dict)  # name -> largest size seen
    samples: int = 0


class Sampler:
    """Polls watched process trees and directories from a background thread."""

    def __init__(
        self,
        directories: Iterable[Path] = (),
        output_names: Iterable[str] = (),
        interval_s: float = 0.05,
    ) -> None:
        self._directories = tuple(directories)
        self._outputs = frozenset(output_names)
        self._interval_s = interval_s
        self._roots: list[psutil.Process] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result = Sampled()

    def watch(self, pid: int) -> None:
        """Add a process (and, from then on, its descendants) to the sampled tree."""
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._roots.append(process)

    def start(self) -> Sampler:
        self.result = Sampled(started_at=time.time())
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Sampled:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sample()  # one last look: short runs may end between two ticks
        return self.result

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def _sample(self) -> None:
        with self._lock:
            roots = list(self._roots)
        self._sample_processes(roots)
        self._sample_disk()
        self.result.samples += 1

    def _sample_processes(self, roots: list[psutil.Process]) -> None:
        total_ffmpeg = 0
        for process in _tree(roots):
            try:
                name = process.name()
                if name in _FFMPEG_NAMES:
                    peak = _peak_rss_bytes(process)
                    total_ffmpeg += int(process.memory_info().rss)
                    self.result.peak_ffmpeg_rss_bytes = max(self.result.peak_ffmpeg_rss_bytes, peak)
                elif name.startswith("python"):
                    rss = int(process.memory_info().rss)
                    self.result.peak_python_rss_bytes = max(self.result.peak_python_rss_bytes, rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.result.peak_ffmpeg_total_rss_bytes = max(
            self.result.peak_ffmpeg_total_rss_bytes, total_ffmpeg
        )

    def _sample_disk(self) -> None:
        used = 0
        for directory in self._directories:
            for path, size in _files(directory):
                used += size
                seen = self.result.files_seen
                seen[path.name] = max(size, seen.get(path.name, 0))
                first = self.result.first_output_at is None and path.name in self._outputs
                if first and size > FIRST_FRAME_BYTES:
                    self.result.first_output_at = time.time()
        self.result.peak_disk_bytes = max(self.result.peak_disk_bytes, used)


def _tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            if not root.is_running():
                continue
            seen[root.pid] = root
            for child in root.children(recursive=True):
                seen[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return list(seen.values())


def _files(directory: Path) -> list[tuple[Path, int]]:
    found: list[tuple[Path, int]] = []
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            try:
                found.append((path, path.stat().st_size))
            except OSError:
                continue  # removed between the listing and the stat
    return found
