"""Turn an invocation's outcome into the results files and the printed table."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import cost, plots, report
from benchmarks.harness import Options, Outcome
from benchmarks.model import RUNNERS, RunResult
from benchmarks.summary import (
    MAIN_WORKLOAD,
    Summary,
    Target,
    overhead_percentiles,
    ratios,
    summarize,
)
from benchmarks.targets import evaluate

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def commit() -> str:
    """Short commit, with ``-dirty`` when tracked files differ from it (read-only git calls)."""
    short = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{short}-dirty" if dirty else short


def machine(load_start: tuple[float, ...]) -> dict[str, Any]:
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ffmpeg": ffmpeg.stdout.splitlines()[0] if ffmpeg.stdout else "ffmpeg: unknown",
        "load_start": " ".join(f"{v:.2f}" for v in load_start),
        "load_end": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def record(
    name: str,
    argv: Sequence[str],
    result: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    out: Path,
    load_start: tuple[float, ...],
) -> int:
    """Stamp a side-by-side run (``python -m benchmarks NAME``) and write its JSON and markdown.

    Prints the tables; the exit status is 0 when every output of the run was valid.
    """
    result["command"] = " ".join([f"python -m benchmarks {name}", *argv])
    result["commit"] = commit()
    result["machine"] = machine(load_start)
    text = render(result)
    stem = f"{datetime.date.today().isoformat()}-{result['commit']}-{name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {out / stem}.json and .md", file=sys.stderr)
    return 0 if result["valid"] else 1


def summaries_of(outcome: Outcome, options: Options) -> list[Summary]:
    durations = {p.workload.name: p.media.duration_s for p in outcome.prepared}
    found = []
    for workload, duration_s in durations.items():
        for runner in RUNNERS:
            runs = [r for r in outcome.runs if r.workload == workload and r.runner == runner]
            if runs:
                found.append(summarize(workload, runner, runs, duration_s))
    return found


def _run_dict(run: RunResult) -> dict[str, Any]:
    return {**dataclasses.asdict(run), "cpu_s": run.cpu_s, "valid": run.valid}


def document(
    outcome: Outcome, options: Options, command: str, load_start: tuple[float, ...]
) -> tuple[dict[str, Any], list[Summary], list[Target]]:
    summaries = summaries_of(outcome, options)
    by_workload = {
        p.workload.name: ratios([r for r in outcome.runs if r.workload == p.workload.name])
        for p in outcome.prepared
    }
    output_names = {f"{t.name}.mp4" for p in outcome.prepared for t in p.plan.targets}
    main = by_workload.get(MAIN_WORKLOAD, {})
    targets = evaluate(outcome.runs, summaries, main, outcome.control, output_names)
    now = datetime.datetime.now(datetime.UTC)
    doc: dict[str, Any] = {
        "schema": 1,
        "date": now.strftime("%Y-%m-%d"),
        "time": now.isoformat(timespec="seconds"),
        "commit": commit(),
        "command": command,
        "machine": machine(load_start),
        "options": dataclasses.asdict(options),
        "settings": {
            "x264_preset": outcome.settings.x264_preset,
            "ladder": [r.model_dump() for r in outcome.settings.ladder],
            "audio_bitrate_kbps": outcome.settings.audio_bitrate_kbps,
        },
        "vmaf_ffmpeg": outcome.vmaf_ffmpeg,
        "prices": _prices(),
        "workloads": [
            {**dataclasses.asdict(w), "bytes": w.path.stat().st_size} for w in outcome.workloads
        ],
        "runs": [_run_dict(r) for r in outcome.runs],
        "summaries": summaries,
        "ratios": by_workload,
        "sweep": outcome.sweep,
        "control_plane": outcome.control,
        "control_plane_percentiles": overhead_percentiles(outcome.control)
        if outcome.control
        else None,
        "targets": targets,
    }
    return doc, summaries, targets


def _prices() -> dict[str, Any]:
    return {
        "as_of": cost.PRICES_AS_OF,
        "region": cost.REGION,
        "task": {"vcpu": cost.TASK_VCPU, "memory_gb": cost.TASK_MEMORY_GB},
        "fargate_x86": dataclasses.asdict(cost.FARGATE_X86),
        "fargate_arm": dataclasses.asdict(cost.FARGATE_ARM),
        "mediaconvert_basic_hd_usd_per_min": cost.MEDIACONVERT_BASIC_HD_USD_PER_MIN,
    }


def parts(
    doc: dict[str, Any], summaries: Sequence[Summary], targets: Sequence[Target], outcome: Outcome
) -> dict[str, list[str]]:
    vmaf = "VMAF " + ("by " + str(doc["vmaf_ffmpeg"]) if doc["vmaf_ffmpeg"] else "n/a (no libvmaf)")
    sweep = report.sweep_table(outcome.sweep) if outcome.sweep else ["Not run.", ""]
    prices = f"list prices as of {cost.PRICES_AS_OF}, {cost.REGION}"
    return {
        "Targets": report.target_table(targets),
        "Runs (medians of valid runs)": report.runs_table(summaries),
        "W against the baselines (median of per-repetition ratios)": [
            *report.ratio_table(doc["ratios"]),
            "B0 spread is max / min of B0 over its repetitions: the same command on the same file,",
            "so it is the noise floor; a W/B0 ratio nearer 1 than that cannot be told from noise.",
            "",
        ],
        "Stages": report.stage_table(summaries),
        f"Quality of W's renditions (first repetition; {vmaf})": [
            *report.quality_table(summaries),
            *report.identity_lines(outcome.runs),
        ],
        f"x264 preset x CRF sweep ({MAIN_WORKLOAD}, one run each)": sweep,
        "Control plane": report.control_lines(outcome.control),
        f"Cost per output minute ({prices})": report.cost_table(summaries),
    }


def publish(
    outcome: Outcome,
    options: Options,
    command: str,
    out_dir: Path,
    load_start: tuple[float, ...],
    *,
    with_plots: bool = True,
) -> tuple[list[Path], str]:
    doc, summaries, targets = document(outcome, options, command, load_start)
    text = report.markdown(doc, parts(doc, summaries, targets, outcome))
    stem = f"{doc['date']}-{doc['commit']}"
    written = list(report.write(out_dir, stem, doc, text))
    if with_plots:
        written += plots.write_all(out_dir, stem, summaries, outcome.sweep, outcome.control)
    return written, text
