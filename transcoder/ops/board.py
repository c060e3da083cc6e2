"""The demo's terminal view: one row per file with its stage and a progress bar, then the results.

The pure half (``stage_of``, ``row_for``, ``bar``, ``live_table``, ``result_table``) turns job
records into rich tables and is tested as such. ``Board`` shows them with ``rich.live.Live`` while
the demo runs; ``Lines`` is the view for pipes, logs and ``--json``: the one-line summaries on
stderr and the results on stdout, exactly as before the board existed.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from transcoder.domain.job import Status

# The worker writes a record's progress as 0-90 while encoding, 90 while verifying and 95 while
# uploading the renditions (transcoder.media.progress.Progress.percent); 0 while it probes.
VERIFY_PERCENT = 90
UPLOAD_PERCENT = 95
STAGE_STYLES = {
    "upload": "blue",
    "queued": "yellow",
    "probe": "cyan",
    "transcode": "cyan",
    "verify": "magenta",
    "completed": "green",
    "failed": "red",
}
BAR_WIDTH = 24


@dataclass(frozen=True, slots=True)
class Tracked:
    """One file the demo follows: its video id once enqueued, and its job record's latest state."""

    file: str
    video_id: str | None = None
    record: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """What the board shows for one file."""

    file: str
    stage: str
    percent: int
    note: str = ""


def stage_of(record: Mapping[str, Any]) -> tuple[str, int]:
    """The stage and percent a job record shows."""
    status = record.get("status")
    progress = int(record.get("progress") or 0)
    if status == Status.COMPLETED:
        return "completed", 100
    if status == Status.FAILED:
        return "failed", progress
    if status != Status.PROCESSING:
        return "queued", 0
    if progress >= UPLOAD_PERCENT:
        return "upload", progress
    if progress >= VERIFY_PERCENT:
        return "verify", progress
    return ("transcode", progress) if progress > 0 else ("probe", 0)


def row_for(tracked: Tracked) -> Row:
    """One file's row: its stage, its progress, and the attempt or failure worth a note."""
    name = Path(tracked.file).name
    if tracked.video_id is None:
        return Row(name, "upload", 0)  # the source is on its way to raw/, not enqueued yet
    record = tracked.record or {"status": Status.QUEUED}
    stage, percent = stage_of(record)
    attempts = int(record.get("attempts") or 0)
    if stage == "failed":
        note = str((record.get("error") or {}).get("code", ""))
    else:
        note = f"attempt {attempts}" if attempts > 1 else ""
    return Row(name, stage, percent, note)


def bar(percent: int, width: int = BAR_WIDTH) -> str:
    """A text progress bar, readable without colour: ``█████░░░░░``."""
    filled = round(width * max(0, min(100, percent)) / 100)
    return "█" * filled + "░" * (width - filled)


def live_table(rows: Sequence[Row]) -> Table:
    """The board while the demo runs: file, stage, bar and percent, and a note."""
    table = Table(title="transcoder demo", title_justify="left", expand=False)
    table.add_column("file", overflow="fold")
    table.add_column("stage")
    table.add_column("progress", no_wrap=True)
    table.add_column("note", style="dim")
    for row in rows:
        style = STAGE_STYLES.get(row.stage, "")
        progress = Text(bar(row.percent), style=style)
        progress.append(f" {row.percent:>3}%", style="bold" if row.percent == 100 else "")
        table.add_row(row.file, Text(row.stage, style=style), progress, row.note)
    return table


def result_table(results: Sequence[Mapping[str, Any]]) -> Table:
    """The final table: each file's status, attempts, and its renditions or its error."""
    table = Table(title="results", title_justify="left")
    for name in ("file", "status", "tries", "renditions / error"):
        table.add_column(name, justify="right" if name == "tries" else "left")
    for result in results:
        style = STAGE_STYLES.get(str(result["status"]).lower(), "")
        status = Text(str(result["status"]), style=style)
        table.add_row(
            Path(result["file"]).name, status, str(result["attempts"]), outcome_of(result)
        )
    return table


def outcome_of(result: Mapping[str, Any]) -> str:
    """``720p 1280x720 1341 KiB, 1080p skipped; HLS, poster, 6 thumbnails``, or the error."""
    if result["error"]:
        return f"{result['error']['code']}: {result['error']['message'][:80]}"
    made = ", ".join(
        f"{name} {r['width']}x{r['height']} {r['bytes'] // 1024} KiB"
        if r.get("status") == "COMPLETED"
        else f"{name} skipped"
        for name, r in result["renditions"].items()
    )
    extras = [
        *(["HLS"] if result.get("hls") else []),
        *(["poster"] if result.get("poster") else []),
        *([f"{result['thumbnails']} thumbnails"] if result.get("thumbnails") else []),
    ]
    return f"{made}; {', '.join(extras)}" if extras else made


def plain_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The results as fixed-width text lines (pipes and logs)."""
    lines = [f"{'file':<40} {'status':<10} {'tries':>5}  renditions / error"]
    for r in results:
        name = Path(r["file"]).name
        lines.append(f"{name:<40} {r['status']:<10} {r['attempts']:>5}  {outcome_of(r)}")
    return "\n".join(lines)


class View(Protocol):
    """How the demo shows its progress: ``update`` on every change or poll, ``finish`` once."""

    def update(self, tracked: Sequence[Tracked]) -> None:
        """The latest state of every file."""

    def finish(self, results: Sequence[Mapping[str, Any]]) -> None:
        """The job summaries, once every job is terminal (or the demo gave up)."""


class Lines:
    """Pipes, logs and ``--json``: a summary line on stderr when a job changes, then the results."""

    def __init__(self, *, as_json: bool) -> None:
        self._as_json = as_json
        self._last = ""

    def update(self, tracked: Sequence[Tracked]) -> None:
        if any(t.video_id is None or t.record is None for t in tracked):
            return  # the lines start once every file is enqueued and its record read
        line = "  ".join(summary_line(str(t.video_id), t.record) for t in tracked)
        if line != self._last:
            print(f"[demo] {line}", file=sys.stderr, flush=True)
            self._last = line

    def finish(self, results: Sequence[Mapping[str, Any]]) -> None:
        if self._as_json:
            for result in results:
                print(json.dumps(result, sort_keys=True), flush=True)
        else:
            print(plain_table(results), flush=True)


def summary_line(video_id: str, record: Mapping[str, Any] | None) -> str:
    """``bikes: PROCESSING 42%`` or ``bikes: COMPLETED``."""
    status = (record or {}).get("status", "?")
    if status == "PROCESSING":
        return f"{video_id}: {status} {(record or {}).get('progress', 0)}%"
    return f"{video_id}: {status}"


class Board:
    """A terminal: the live table on stdout, redrawn in place, then the result table."""

    def __init__(self, console: Console, files: Sequence[str], log_path: Path | None) -> None:
        self._console = console
        self._log_path = log_path
        self._live = Live(
            live_table([row_for(Tracked(f)) for f in files]),
            console=console,
            refresh_per_second=4,
            redirect_stderr=True,
        )

    def __enter__(self) -> Board:
        if self._log_path is not None:
            self._console.print(f"worker logs: {self._log_path}", style="dim")
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def update(self, tracked: Sequence[Tracked]) -> None:
        self._live.update(live_table([row_for(t) for t in tracked]), refresh=True)

    def finish(self, results: Sequence[Mapping[str, Any]]) -> None:
        self._live.stop()
        self._console.print(result_table(results))
        if self._log_path is not None:
            self._console.print(f"worker logs: {self._log_path}", style="dim")


@contextlib.contextmanager
def logs_to(path: Path | None) -> Iterator[None]:
    """Send the structlog lines to ``path`` for a while (None: to whatever ``sys.stderr`` is now,
    which inside a ``Board`` is its proxy: the lines print above the live table)."""
    with contextlib.ExitStack() as stack:
        target = sys.stderr if path is None else stack.enter_context(path.open("a"))
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=target))
        try:
            yield
        finally:
            structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
