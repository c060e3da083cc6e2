"""The pure side of ``python -m benchmarks fleet`` (``benchmarks/fleet.py``): one run's record,
the run order, the paired ratios and the table.

Kept apart from the processes and the emulator so that each figure the docs quote (the speed-up as
the median of per-pair ratios, the efficiency, where a run's wall went) is a function of recorded
values, tested by equality in ``tests/unit/test_benchmarks_fleet.py``.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.worker_runner import event_time

TARGET_SPEED_UP = 1.8  # issue 15: two workers with one ffmpeg thread each against one
PHASES = ("split", "parts", "stitch")


@dataclass
class Run:
    """One job from upload to a terminal status, on ``workers`` fresh worker processes."""

    kind: str  # "chunked" | "single"
    workers: int
    rep: int  # -1: the single-pass reference
    video_id: str = ""
    status: str = ""
    wall_s: float = 0.0
    parts: int = 0  # 0: not chunked
    chunks: int = 0
    cpu_s: float = 0.0  # every worker, with the ffmpeg/ffprobe it reaped
    worker_cpu_s: list[float] = field(default_factory=list)
    parts_by_worker: list[int] = field(default_factory=list)
    stitched_by: int | None = None  # index of the worker that stitched
    part_attempts: int = 0  # over every part: more than ``parts`` means a part was redone
    emulator_cpu_s: float = 0.0
    ffmpeg_s: list[float] = field(default_factory=list)  # per worker: wall with an ffmpeg running
    phases_s: dict[str, float] = field(default_factory=dict)  # see ``phases``
    published: list[str] = field(default_factory=list)  # what the record names: mp4s, hls, poster
    frames: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems and self.status == "COMPLETED"


def schedule(reps: int) -> list[tuple[int, int]]:
    """(repetition, workers) in run order: 1,2 then 2,1, alternating."""
    order = []
    for rep in range(reps):
        counts = (1, 2) if rep % 2 == 0 else (2, 1)
        order += [(rep, n) for n in counts]
    return order


def pair_ratios(runs: Sequence[Run]) -> list[float]:
    """1-worker wall / 2-worker wall within each repetition where both runs are valid."""
    walls = {(r.rep, r.workers): r.wall_s for r in runs if r.kind == "chunked" and r.valid}
    reps = sorted({rep for rep, _ in walls})
    return [walls[(k, 1)] / walls[(k, 2)] for k in reps if (k, 1) in walls and (k, 2) in walls]


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _of(runs: Sequence[Run], kind: str, workers: int, attr: str) -> list[float]:
    return [getattr(r, attr) for r in runs if r.kind == kind and r.workers == workers and r.valid]


def summarise(runs: Sequence[Run]) -> dict[str, Any]:
    """The speed-up (median of paired ratios), efficiency, and chunked-on-one vs single pass."""
    ratios = pair_ratios(runs)
    speed_up = _median(ratios)
    one_wall, two_wall = _of(runs, "chunked", 1, "wall_s"), _of(runs, "chunked", 2, "wall_s")
    one_cpu, two_cpu = _of(runs, "chunked", 1, "cpu_s"), _of(runs, "chunked", 2, "cpu_s")
    single_wall, single_cpu = _of(runs, "single", 1, "wall_s"), _of(runs, "single", 1, "cpu_s")

    def ratio(a: Sequence[float], b: Sequence[float]) -> float | None:
        return round(statistics.median(a) / statistics.median(b), 3) if a and b else None

    return {
        "pair_ratios": [round(x, 3) for x in ratios],
        "speed_up": speed_up,
        "efficiency": None if speed_up is None else round(speed_up / 2, 3),
        "target_speed_up": TARGET_SPEED_UP,
        "target_met": speed_up is not None and speed_up >= TARGET_SPEED_UP,
        "median_wall_s": {"1": _median(one_wall), "2": _median(two_wall)},
        "median_cpu_s": {"1": _median(one_cpu), "2": _median(two_cpu)},
        "cpu_two_vs_one": ratio(two_cpu, one_cpu),
        "single_wall_s": _median(single_wall),
        "single_cpu_s": _median(single_cpu),
        "chunked_one_vs_single_wall": ratio(one_wall, single_wall),
        "chunked_one_vs_single_cpu": ratio(one_cpu, single_cpu),
    }


def busy_s(events: Sequence[dict[str, Any]]) -> float:
    """Seconds between each ``ffmpeg.started`` and its ``ffmpeg.finished`` (pure)."""
    begun: dict[Any, float] = {}
    total = 0.0
    for event in events:
        name, pid = event.get("event"), event.get("pid")
        if name == "ffmpeg.started":
            begun[pid] = event_time(event)
        elif name == "ffmpeg.finished" and pid in begun:
            total += event_time(event) - begun.pop(pid)
    return total


def phases(events: Sequence[dict[str, Any]], started_at: float, wall_s: float) -> dict[str, float]:
    """Where a chunked run's wall went (pure), from every worker's log lines:

    ``split``: upload, enqueue, receive, probe, until ``job.split``; ``parts``: from there to the
    last ``job.part_encoded``; ``stitch``: from there to ``COMPLETED`` (download the parts, stitch,
    gate, publish). Only the middle one is shared between workers.
    """
    split = [event_time(e) for e in events if e.get("event") == "job.split"]
    encoded = [event_time(e) for e in events if e.get("event") == "job.part_encoded"]
    if not split or not encoded:
        return {}
    first, last = min(split), max(encoded)
    return {
        "split": round(first - started_at, 2),
        "parts": round(last - first, 2),
        "stitch": round(started_at + wall_s - last, 2),
    }


def _run_row(run: Run) -> str:
    label = "single pass" if run.kind == "single" else f"chunked, rep {run.rep}"
    parts = ", ".join(str(n) for n in run.parts_by_worker) or "-"
    cpus = " + ".join(f"{c:.1f}" for c in run.worker_cpu_s) or "-"
    busy = " + ".join(f"{b:.1f}" for b in run.ffmpeg_s) or "-"
    split = " / ".join(f"{run.phases_s[k]:.1f}" for k in PHASES if k in run.phases_s) or "-"
    state = "ok" if run.valid else "INVALID: " + "; ".join(run.problems or [run.status])
    return (
        f"| {label} | {run.workers} | {run.wall_s:.1f} | {split} | {run.parts or '-'} | {parts} | "
        f"{busy} | {run.cpu_s:.1f} ({cpus}) | {run.emulator_cpu_s:.1f} | "
        f"{', '.join(run.published)} | {state} |"
    )


def _figure(value: float | None, unit: str = "") -> str:
    return "?" if value is None else f"{value:g}{unit}"


def markdown(result: dict[str, Any]) -> str:
    """The table of one invocation (pure)."""
    src, summary = result["source"], result["summary"]
    load = result.get("machine", {})
    verdict = "met" if summary["target_met"] else "NOT met"
    lines = [
        f"# Chunked job, one worker vs two: {src['size']} {src['fps']:g} fps, "
        f"{src['duration_s']:g} s, ladder {' + '.join(src['renditions'])}, "
        f"{src['chunk_s']:g} s chunks, ffmpeg threads {src['threads']}",
        "",
        f"Command: `{result.get('command', '')}`; commit {result.get('commit', '')}; "
        f"load {load.get('load_start', '?')} -> {load.get('load_end', '?')}; "
        f"all runs completed with valid outputs: {result['valid']}",
        "",
        f"Wall speed-up, two workers vs one (median of per-pair ratios "
        f"{summary['pair_ratios']}): **{_figure(summary['speed_up'], 'x')}** "
        f"(target {summary['target_speed_up']:g}x: {verdict}); efficiency "
        f"{_figure(summary['efficiency'])} of 2 workers; CPU two vs one "
        f"{_figure(summary['cpu_two_vs_one'], 'x')}",
        "",
        f"Chunked on one worker vs the single pass: wall "
        f"{_figure(summary['chunked_one_vs_single_wall'], 'x')}, CPU "
        f"{_figure(summary['chunked_one_vs_single_cpu'], 'x')}",
        "",
        "| run | workers | wall s (upload -> COMPLETED) | split / parts / stitch s | parts | "
        "parts per worker | ffmpeg running s (per worker) | CPU-s (per worker) | emulator CPU-s | "
        "published | outputs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_run_row(run_from(run)) for run in result["runs"]]
    return "\n".join(lines) + "\n"


def run_from(data: dict[str, Any]) -> Run:
    fields = {f.name for f in dataclasses.fields(Run)}
    return Run(**{k: v for k, v in data.items() if k in fields})
