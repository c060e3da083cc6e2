"""Writing results: ``<date>-<commit>.json`` (everything), ``.md`` (the tables), PNG plots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import cost
from benchmarks.model import RUNNER_TITLES, ControlPlane, RunResult, SweepPoint
from benchmarks.summary import Summary, Target, overhead_percentiles
from benchmarks.targets import verdict


def _n(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def runs_table(summaries: Sequence[Summary]) -> list[str]:
    header = ["workload", "runner", "valid", "wall s", "speed x", "CPU s (Python + ffmpeg)"]
    header += ["CPU-s / output min", "1st frame s", "peak RSS Python / ffmpeg MiB"]
    header += ["peak disk MiB", "source sent x size (requests)", "of which ffprobe x size"]
    header += ["emulator CPU s"]
    rows = [
        [
            s.workload,
            s.runner,
            f"{s.valid}/{s.runs}",
            _n(s.wall_s),
            _n(s.speed_x),
            f"{_n(s.cpu_s)} ({_n(s.python_cpu_s)} + {_n(s.ffmpeg_cpu_s)})",
            _n(s.cpu_s_per_output_min, ".1f"),
            _n(s.first_frame_s),
            f"{_n(s.peak_python_rss_mib, '.0f')} / {_n(s.peak_ffmpeg_rss_mib, '.0f')}",
            _n(s.peak_disk_mib, ".1f"),
            f"{_n(s.source_read_ratio, '.3f')} ({_n(s.source_requests, '.0f')})",
            _n(s.probe_read_ratio, ".3f"),
            _n(s.emulator_cpu_s),
        ]
        for s in summaries
    ]
    return _table(header, rows)


def ratio_table(ratios: dict[str, dict[str, float | None]]) -> list[str]:
    names = [
        "W/B0 cpu",
        "W/B0 wall",
        "W/B1 cpu",
        "W/B1 wall",
        "B3/W wall",
        "W/B3 cpu",
        "B0 cpu spread",
        "B0 wall spread",
    ]
    rows = [[w, *(_n(r.get(n), ".3f") for n in names)] for w, r in ratios.items()]
    return _table(["workload", *names], rows)


def stage_table(summaries: Sequence[Summary]) -> list[str]:
    rows = [
        [s.workload, s.runner, ", ".join(f"{k} {v:.2f}" for k, v in s.stages_s.items())]
        for s in summaries
        if s.runner in ("W", "B3")
    ]
    return _table(["workload", "runner", "median stage wall s"], rows)


def quality_table(summaries: Sequence[Summary]) -> list[str]:
    rows = [
        [
            s.workload,
            o.name,
            f"{o.width}x{o.height}",
            str(o.bitrate_kbps),
            _n(o.quality.psnr_db if o.quality else None),
            _n(o.quality.ssim if o.quality else None, ".4f"),
            _n(o.quality.vmaf if o.quality else None),
        ]
        for s in summaries
        if s.runner == "W"
        for o in s.outputs
    ]
    return _table(["workload", "rendition", "size", "kb/s", "PSNR-Y dB", "SSIM", "VMAF"], rows)


def identity_lines(runs: Sequence[RunResult]) -> list[str]:
    """Whether every runner produced the same video bitstream (MD5 of the packets) per rendition."""
    digests: dict[tuple[str, str], set[str]] = {}
    for run in runs:
        for output in run.outputs:
            if output.valid and output.digest:
                digests.setdefault((run.workload, output.name), set()).add(output.digest)
    differing = sorted(f"{w} {n}" for (w, n), found in digests.items() if len(found) > 1)
    if not digests:
        return []
    if not differing:
        return [
            "Every run of every runner produced the same video bitstream per rendition (MD5 of "
            "the video packets): B0, B1 and B3 encode exactly what the worker encodes.",
            "",
        ]
    return [f"Bitstreams differ between runs for: {', '.join(differing)}.", ""]


def sweep_table(points: Sequence[SweepPoint]) -> list[str]:
    names = sorted({o.name for p in points for o in p.outputs}, key=lambda n: int(n[:-1]))
    header = ["preset", "CRF", "CPU s", "speed x"]
    for name in names:
        header += [f"{name} kb/s", f"{name} PSNR-Y", f"{name} SSIM", f"{name} VMAF"]
    rows = []
    for p in points:
        row = [p.preset, str(p.crf), _n(p.cpu_s), _n(p.duration_s / p.wall_s if p.wall_s else None)]
        by_name = {o.name: o for o in p.outputs}
        for name in names:
            o = by_name.get(name)
            q = o.quality if o else None
            row += [str(o.bitrate_kbps) if o else "n/a", _n(q.psnr_db if q else None)]
            row += [_n(q.ssim if q else None, ".4f"), _n(q.vmaf if q else None)]
        rows.append(row)
    return _table(header, rows)


def cost_table(summaries: Sequence[Summary]) -> list[str]:
    rows = [
        [
            s.workload,
            _n(s.cost.output_minutes, ".3f"),
            f"${s.cost.busy[cost.FARGATE_X86.name]:.5f}",
            f"${s.cost.busy[cost.FARGATE_ARM.name]:.5f}",
            f"${s.cost.wall[cost.FARGATE_X86.name]:.5f}",
            f"${s.cost.mediaconvert:.4f}",
            f"{s.cost.times_cheaper:.1f}x",
        ]
        for s in summaries
        if s.runner == "W" and s.cost is not None
    ]
    header = ["workload (W)", "output min", "Fargate x86 (busy)", "Fargate ARM (busy)"]
    header += ["Fargate x86 (1 job/task, wall)", "MediaConvert Basic HD", "x cheaper (x86 busy)"]
    return _table(header, rows)


def control_lines(control: ControlPlane | None) -> list[str]:
    if control is None:
        return ["Not run.", ""]
    p = overhead_percentiles(control)
    return [
        f"{control.completed}/{control.jobs} one-second jobs, one worker slot, "
        f"{control.wall_s:.1f} s in all.",
        "",
        *_table(
            ["per job", "p50 ms", "p95 ms"],
            [
                ["receive to delete minus ffmpeg", _n(p["p50_ms"], ".1f"), _n(p["p95_ms"], ".1f")],
                [
                    "... minus ffprobe too",
                    _n(p["without_probe_p50_ms"], ".1f"),
                    _n(p["without_probe_p95_ms"], ".1f"),
                ],
                ["ffmpeg (for scale)", _n(p["ffmpeg_p50_ms"], ".1f"), ""],
                ["ffprobe, all calls of a job", _n(p["ffprobe_p50_ms"], ".1f"), ""],
            ],
        ),
    ]


def target_table(targets: Sequence[Target]) -> list[str]:
    rows = [[t.name, t.value, t.threshold, verdict(t), t.detail] for t in targets]
    return _table(["target", "measured", "threshold", "verdict", "how"], rows)


def markdown(doc: dict[str, Any], parts: dict[str, list[str]]) -> str:
    machine = doc["machine"]
    lines = [
        f"# Benchmark {doc['date']} at {doc['commit']}",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {machine['cpus']} CPUs, load average {machine['load_start']} at the start and "
        f"{machine['load_end']} at the end; {machine['ffmpeg']}. Timings on a shared machine "
        "are noisy: compare the ratios (same repetition, back to back), not absolute seconds.",
        "",
        "Runners: " + "; ".join(f"**{k}** {v}" for k, v in RUNNER_TITLES.items()) + ".",
        "",
    ]
    for title, body in parts.items():
        lines += [f"## {title}", "", *body]
    return "\n".join(lines)


def write(out_dir: Path, stem: str, doc: dict[str, Any], text: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=_default) + "\n")
    md_path.write_text(text + "\n")
    return json_path, md_path


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
