"""From runs to numbers: medians per workload and runner, paired ratios, costs, the targets.

Ratios between runners are medians of per-repetition ratios (W of rep k over B0 of rep k): the
runs of one repetition ran back to back, so a load change on a shared machine affects both
sides of each ratio alike, which a ratio of medians does not guarantee.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks import cost
from benchmarks.model import ControlPlane, Output, RunResult

MAIN_WORKLOAD = "1080p-moov-end"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians of the valid runs of one runner on one workload."""

    workload: str
    runner: str
    runs: int
    valid: int
    duration_s: float
    wall_s: float | None
    speed_x: float | None
    cpu_s: float | None
    python_cpu_s: float | None
    ffmpeg_cpu_s: float | None
    cpu_s_per_output_min: float | None
    first_frame_s: float | None
    peak_python_rss_mib: float | None
    peak_ffmpeg_rss_mib: float | None
    peak_disk_mib: float | None
    source_read_ratio: float | None
    probe_read_ratio: float | None
    emulator_cpu_s: float | None
    source_requests: float | None
    stages_s: dict[str, float]
    outputs: tuple[Output, ...]  # from the first valid run
    cost: cost.Cost | None


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: str
    threshold: str
    met: bool | None  # None: not measured in this invocation
    detail: str = ""


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def _peak(values: Sequence[int | None]) -> float | None:
    present = [v for v in values if v]
    return round(max(present) / MIB, 1) if present else None


def _stages(runs: list[RunResult]) -> dict[str, float]:
    names = sorted({name for run in runs for name in run.stages_s})
    return {n: median([r.stages_s.get(n) for r in runs]) or 0.0 for n in names}


def _read_ratio(run: RunResult) -> float | None:
    reads = run.source_reads
    return reads.body_bytes / reads.object_bytes if reads and reads.object_bytes else None


def _probe_ratio(run: RunResult) -> float | None:
    reads = run.source_reads
    return reads.probe_body_bytes / reads.object_bytes if reads and reads.object_bytes else None


def summarize(workload: str, runner: str, runs: list[RunResult], duration_s: float) -> Summary:
    good = [r for r in runs if r.valid]
    wall = median([r.wall_s for r in good])
    cpu = median([r.cpu_s for r in good])
    outputs = tuple(good[0].outputs) if good else ()
    minutes = cost.output_minutes([o.duration_s for o in outputs])
    return Summary(
        workload=workload,
        runner=runner,
        runs=len(runs),
        valid=len(good),
        duration_s=duration_s,
        wall_s=wall,
        speed_x=round(duration_s / wall, 3) if wall else None,
        cpu_s=cpu,
        python_cpu_s=median([r.python_cpu_s for r in good]),
        ffmpeg_cpu_s=median([r.ffmpeg_cpu_s for r in good]),
        cpu_s_per_output_min=round(cpu / minutes, 2) if cpu and minutes else None,
        first_frame_s=median([r.first_frame_s for r in good]),
        peak_python_rss_mib=_peak([r.peak_python_rss_bytes for r in good]),
        peak_ffmpeg_rss_mib=_peak([r.peak_ffmpeg_rss_bytes for r in good]),
        peak_disk_mib=_peak([r.peak_disk_bytes for r in good]),
        source_read_ratio=median([_read_ratio(r) for r in good]),
        probe_read_ratio=median([_probe_ratio(r) for r in good]),
        emulator_cpu_s=median([r.emulator_cpu_s for r in good]),
        source_requests=median(
            [float(r.source_reads.requests) if r.source_reads else None for r in good]
        ),
        stages_s=_stages(good),
        outputs=outputs,
        cost=cost.estimate(cpu, wall, [o.duration_s for o in outputs]) if cpu and wall else None,
    )


def paired_ratio(
    runs: list[RunResult], top: str, bottom: str, value: Callable[[RunResult], float]
) -> float | None:
    """Median over repetitions of value(top run) / value(bottom run), valid pairs only."""
    by_rep: dict[int, dict[str, RunResult]] = {}
    for run in runs:
        if run.valid:
            by_rep.setdefault(run.rep, {})[run.runner] = run
    ratios = [
        value(pair[top]) / value(pair[bottom])
        for pair in by_rep.values()
        if top in pair and bottom in pair and value(pair[bottom]) > 0
    ]
    return round(statistics.median(ratios), 4) if ratios else None


def spread(runs: list[RunResult], runner: str, value: Callable[[RunResult], float]) -> float | None:
    """max / min of ``value`` over one runner's valid repetitions (1.0 = perfectly repeatable)."""
    values = [value(r) for r in runs if r.runner == runner and r.valid and value(r) > 0]
    return round(max(values) / min(values), 4) if len(values) > 1 else None


def ratios(runs: list[RunResult]) -> dict[str, float | None]:
    def cpu(r: RunResult) -> float:
        return r.cpu_s

    def wall(r: RunResult) -> float:
        return r.wall_s

    return {
        # The noise floor: how far B0, the same command on the same file, strays between
        # repetitions (max / min). A W/B0 ratio closer to 1 than this cannot be told apart.
        "B0 cpu spread": spread(runs, "B0", cpu),
        "B0 wall spread": spread(runs, "B0", wall),
        "W/B0 cpu": paired_ratio(runs, "W", "B0", cpu),
        "W/B0 wall": paired_ratio(runs, "W", "B0", wall),
        "W/B1 cpu": paired_ratio(runs, "W", "B1", cpu),
        "W/B1 wall": paired_ratio(runs, "W", "B1", wall),
        "B3/W wall": paired_ratio(runs, "B3", "W", wall),
        "W/B3 cpu": paired_ratio(runs, "W", "B3", cpu),
    }


def overhead_percentiles(control: ControlPlane) -> dict[str, float | None]:
    def pct(values: tuple[float, ...], q: int) -> float | None:
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)

    return {
        "p50_ms": pct(control.overhead_ms, 50),
        "p95_ms": pct(control.overhead_ms, 95),
        "without_probe_p50_ms": pct(control.without_probe_ms, 50),
        "without_probe_p95_ms": pct(control.without_probe_ms, 95),
        "ffmpeg_p50_ms": pct(control.ffmpeg_ms, 50),
        "ffprobe_p50_ms": pct(control.ffprobe_ms, 50),
    }
