"""The baselines: B0 (the floor), B1 (one ffmpeg per rendition), B3 (a naive worker).

* **B0** runs the worker's own ffmpeg command line (``transcoder.media.ffmpeg.build_args``, same
  plan,
  same options) on the local workload file. Nothing else: no probe, no verify, no upload.
* **B1** runs one ffmpeg per rendition (the same arguments restricted to one target), all at
  once, as a worker without ``split`` would. CPU is summed; peak RSS is the sum of each
  process's peak (they run together, so this bounds their joint peak from above).
* **B3** runs ``benchmarks.naive`` as a child process: boto3 downloads the whole object to local
  disk, ffmpeg transcodes the file with B0's arguments, boto3 uploads the renditions.

B0 and B1 are reaped with ``os.wait4``, so their CPU and peak RSS are exact; the naive worker
reports its own split (Python vs ffmpeg) from ``getrusage``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.context import Bench, Prepared, check_outputs, remove, source_reads
from benchmarks.measurement import Finished, Sampler, run_measured
from benchmarks.model import RunResult

NAIVE_FILES = frozenset({"job.json", "report.json"})


def _outputs(directory: Path, prep: Prepared) -> dict[str, Path]:
    return {t.name: directory / f"{t.name}.mp4" for t in prep.plan.targets}


async def run_b0(bench: Bench, prep: Prepared, rep: int) -> RunResult:
    work = bench.fresh_dir("b0")
    outputs = _outputs(work, prep)
    args = bench.args(str(prep.workload.path), prep.plan, outputs)
    try:
        sampler = Sampler([work], prep.output_names)
        with sampler:
            finished = await asyncio.to_thread(run_measured, args)
        result = _from_processes("B0", prep, rep, [finished], sampler)
        if result.ok:
            result.outputs = await check_outputs(outputs, prep)
        return result
    finally:
        remove(work)


async def run_b1(bench: Bench, prep: Prepared, rep: int) -> RunResult:
    work = bench.fresh_dir("b1")
    outputs = _outputs(work, prep)
    commands = [
        bench.args(
            str(prep.workload.path),
            dataclasses.replace(prep.plan, targets=(target,)),
            {target.name: outputs[target.name]},
        )
        for target in prep.plan.targets
    ]
    try:
        sampler = Sampler([work], prep.output_names)
        with sampler:
            finished = await asyncio.gather(
                *(asyncio.to_thread(run_measured, command) for command in commands)
            )
        result = _from_processes("B1", prep, rep, list(finished), sampler)
        if result.ok:
            result.outputs = await check_outputs(outputs, prep)
        return result
    finally:
        remove(work)


def _from_processes(
    runner: str, prep: Prepared, rep: int, finished: list[Finished], sampler: Sampler
) -> RunResult:
    failed = [f for f in finished if f.returncode != 0]
    sampled = sampler.result
    return RunResult(
        runner=runner,
        workload=prep.workload.name,
        rep=rep,
        ok=not failed,
        error=failed[0].stderr_tail if failed else None,
        wall_s=round(max(f.wall_s for f in finished), 4),
        stages_s={"transcode": round(max(f.wall_s for f in finished), 4)},
        first_frame_s=sampled.first_output_after(sampled.started_at),
        ffmpeg_cpu_s=sum(f.cpu_s for f in finished),
        peak_ffmpeg_rss_bytes=sum(f.maxrss_bytes for f in finished),
        peak_disk_bytes=sampled.peak_disk_bytes,
        files_on_disk=dict(sorted(sampled.files_seen.items())),
    )


async def run_b3(bench: Bench, prep: Prepared, rep: int) -> RunResult:
    work = bench.fresh_dir("b3")
    video_id = f"{prep.workload.name}-b3r{rep}-{time.time_ns() % 10**9}"
    key = f"raw/bench-naive/{video_id}{prep.workload.path.suffix}"
    try:
        await bench.services.storage.upload(prep.workload.path, key)
        job = _naive_job(bench, prep, work, key, video_id)
        job_path = work / "job.json"
        job_path.write_text(json.dumps(job))
        bench.emulator.reset_counts()
        sampler = Sampler([work], prep.output_names)
        emulator_before = bench.emulator.cpu()
        with sampler:
            finished = await asyncio.to_thread(
                run_measured, [sys.executable, "-m", "benchmarks.naive", str(job_path)]
            )
        emulator_cpu_s = round(bench.emulator.cpu() - emulator_before, 3)
        report_path = Path(job["report"])
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        result = _from_naive(prep, rep, finished, report, sampler)
        size = prep.workload.path.stat().st_size
        reads = source_reads(bench.emulator.requests(), bench.settings.bucket, key, size, None)
        result.source_reads = reads
        result.emulator_cpu_s = emulator_cpu_s
        if result.ok:
            outputs = {name: Path(path) for name, (path, _key) in job["outputs"].items()}
            result.outputs = await check_outputs(outputs, prep)
        return result
    finally:
        remove(work)


def _naive_job(bench: Bench, prep: Prepared, work: Path, key: str, video_id: str) -> dict[str, Any]:
    source = work / f"source{prep.workload.path.suffix}"
    outputs = _outputs(work, prep)
    return {
        "endpoint": bench.settings.endpoint_url,
        "region": bench.settings.region,
        "bucket": bench.settings.bucket,
        "key": key,
        "source": str(source),
        "args": bench.args(str(source), prep.plan, outputs),
        "outputs": {
            name: [str(path), f"transcoded-naive/{name}/{video_id}.mp4"]
            for name, path in outputs.items()
        },
        "report": str(work / "report.json"),
    }


def _from_naive(
    prep: Prepared, rep: int, finished: Finished, report: dict[str, Any], sampler: Sampler
) -> RunResult:
    sampled = sampler.result
    ok = finished.returncode == 0 and bool(report)
    return RunResult(
        runner="B3",
        workload=prep.workload.name,
        rep=rep,
        ok=ok,
        error=None if ok else (report.get("stderr") or finished.stderr_tail)[-800:],
        wall_s=round(float(report.get("wall_s", finished.wall_s)), 4),
        stages_s={k: round(float(v), 4) for k, v in report.get("stages_s", {}).items()},
        first_frame_s=sampled.first_output_after(float(report.get("started_at", 0.0))),
        python_cpu_s=float(report.get("python_cpu_s", 0.0)),
        ffmpeg_cpu_s=float(report.get("ffmpeg_cpu_s", finished.cpu_s)),
        peak_python_rss_bytes=int(report.get("python_maxrss_bytes", 0)),
        peak_ffmpeg_rss_bytes=int(report.get("ffmpeg_maxrss_bytes", finished.maxrss_bytes)),
        peak_disk_bytes=sampled.peak_disk_bytes,
        files_on_disk={k: v for k, v in sorted(sampled.files_seen.items()) if k not in NAIVE_FILES},
    )
