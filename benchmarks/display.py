"""Live progress on stderr: one line rewritten in place on a terminal, plain lines otherwise.

``begin(step)`` names what runs now; a ticker thread refreshes the elapsed time twice a second on
a terminal. ``note(text)`` prints a line that stays (a finished run's headline). Without a
terminal (CI, a pipe) only ``begin`` and ``note`` print, one line each, so logs stay readable.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO


class Display:
    def __init__(self, stream: TextIO | None = None, *, total: int = 0) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._lock = threading.Lock()
        self._step = ""
        self._step_started = time.monotonic()
        self._started = time.monotonic()
        self._done = 0
        self.total = total
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Display:
        if self._tty:
            self._ticker = threading.Thread(target=self._tick, name="bench-display", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self._tty:
            self._write("\r\033[K")

    def begin(self, step: str) -> None:
        with self._lock:
            self._step = step
            self._step_started = time.monotonic()
        if self._tty:
            self._render()
        else:
            self._write(f"[bench {self._progress()}] {step}\n")

    def finished(self, headline: str) -> None:
        """One unit of work done (counts towards ``total``); print its headline."""
        with self._lock:
            self._done += 1
        self.note(headline)

    def note(self, text: str) -> None:
        if self._tty:
            self._write(f"\r\033[K{text}\n")
            self._render()
        else:
            self._write(f"{text}\n")

    def _progress(self) -> str:
        total = f"/{self.total}" if self.total else ""
        return f"{self._done}{total}, {time.monotonic() - self._started:.0f}s"

    def _render(self) -> None:
        with self._lock:
            elapsed = time.monotonic() - self._step_started
            line = f"[bench {self._progress()}] {self._step} ({elapsed:.1f}s)"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._write(f"\r\033[K{line[:width]}")

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._render()

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()
