"""One invocation: build the workloads, start the counting emulator and the worker, run the
runners interleaved, then the preset/CRF sweep and the control-plane run, and write the results.

Interleaving: for each workload, repetition k runs every runner back to back, in forward order
for even k and reverse order for odd k (W B0 B1 B3, then B3 B1 B0 W, ...), so slow drifts of a
shared machine's load and any warm-up advantage fall on every runner alike.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import quality
from benchmarks.context import Bench, Prepared, QualityConfig, prepare
from benchmarks.control_plane import run_control_plane
from benchmarks.display import Display
from benchmarks.emulator import CountingEmulator
from benchmarks.model import ControlPlane, RunResult, SweepPoint
from benchmarks.runners import run_b0, run_b1, run_b3
from benchmarks.sweep import run_sweep
from benchmarks.worker_runner import WorkerProcess, enqueuer_for, run_w
from samples.workloads import Workload, build_workloads, ensure_workload
from transcoder.aws.clients import open_clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import bootstrap
from transcoder.runtime import app

Runner = Callable[[Bench, Prepared, int], Awaitable[RunResult]]


@dataclass(frozen=True, slots=True)
class Options:
    """What to run; ``python -m benchmarks run --help`` documents each."""

    quick: bool
    reps: int
    duration_s: float
    workloads: tuple[str, ...]
    runners: tuple[str, ...]
    presets: tuple[str, ...]
    crfs: tuple[int, ...]
    sweep_duration_s: float
    control_jobs: int
    quality: bool
    vmaf: bool
    vmaf_ffmpeg: str | None
    vmaf_subsample: int
    x264_preset: str | None
    timeout_s: float
    source_access: str = "gateway"


@dataclass
class Outcome:
    workloads: list[Workload]
    prepared: list[Prepared]
    runs: list[RunResult]
    sweep: list[SweepPoint]
    control: ControlPlane | None
    settings: Settings
    vmaf_ffmpeg: str | None


def bench_settings(
    endpoint_url: str, root: Path, preset: str | None, source_access: str = "gateway"
) -> Settings:
    token = secrets.token_hex(3)
    overrides: dict[str, object] = {"x264_preset": preset} if preset else {}
    overrides["source_access"] = source_access
    return Settings(
        bucket=f"bench-media-{token}",
        queue=f"bench-jobs-{token}",
        dead_letter_queue=f"bench-jobs-dlq-{token}",
        table=f"bench-jobs-{token}",
        endpoint_url=endpoint_url,
        region="us-east-1",
        wait_time_s=2,
        scratch_dir=root / "worker-scratch",
        metrics_host="127.0.0.1",
        metrics_port=0,
        worker_id=f"bench-worker-{token}",
        **overrides,  # type: ignore[arg-type]
    )


def order(runners: tuple[str, ...], rep: int) -> tuple[str, ...]:
    return runners if rep % 2 == 0 else tuple(reversed(runners))


def headline(run: RunResult) -> str:
    if not run.valid:
        problems = run.error or "; ".join(o.problem or "" for o in run.outputs if not o.valid)
        return f"  {run.workload} {run.runner} rep {run.rep}: FAILED {problems[:300]}"
    return (
        f"  {run.workload:<16} {run.runner:<2} rep {run.rep}: {run.wall_s:6.2f} s wall, "
        f"{run.cpu_s:6.2f} CPU-s ({run.python_cpu_s:.2f} Python), "
        f"{len(run.outputs)} valid outputs"
    )


async def _guarded(runner: Runner, bench: Bench, prep: Prepared, name: str, rep: int) -> RunResult:
    try:
        return await runner(bench, prep, rep)
    except Exception as exc:  # one broken run must not lose the others' results
        return RunResult(
            name, prep.workload.name, rep, ok=False, error=f"{type(exc).__name__}: {exc}"
        )


async def interleaved(
    bench: Bench, workloads: list[Workload], options: Options
) -> tuple[list[Prepared], list[RunResult]]:
    worker = WorkerProcess(bench.settings, bench.work_dir / "worker.log")
    runners: dict[str, Runner] = {"B0": run_b0, "B1": run_b1, "B3": run_b3}
    if "W" in options.runners:
        await worker.start()
        enqueuer = enqueuer_for(bench.settings, bench.services.queue.url)

        async def w(b: Bench, p: Prepared, rep: int) -> RunResult:
            return await run_w(b, worker, enqueuer, p, rep)

        runners["W"] = w
    prepared, runs = [], []
    try:
        for workload in workloads:
            prep = await prepare(workload, bench.settings)
            prepared.append(prep)
            for rep in range(options.reps):
                for name in order(options.runners, rep):
                    bench.display.begin(f"{workload.name}: {name} rep {rep + 1}/{options.reps}")
                    run = await _guarded(runners[name], bench, prep, name, rep)
                    runs.append(run)
                    bench.display.finished(headline(run))
    finally:
        worker.stop()
    return prepared, runs


async def _sweep(bench: Bench, options: Options) -> list[SweepPoint]:
    if not options.presets or not options.crfs:
        return []
    workload = await asyncio.to_thread(ensure_workload, "1080p-moov-end", options.sweep_duration_s)
    prep = await prepare(workload, bench.settings)
    return await run_sweep(bench, prep, options.presets, options.crfs)


async def _control(bench: Bench, options: Options) -> ControlPlane | None:
    if options.control_jobs <= 0:
        return None
    clip = await asyncio.to_thread(ensure_workload, "control-1s", 1.0)
    control = await run_control_plane(bench, clip, options.control_jobs)
    bench.display.finished(
        f"  control plane: {control.completed}/{control.jobs} jobs in {control.wall_s:.1f} s"
    )
    return control


def quality_config(options: Options) -> QualityConfig:
    vmaf = (
        quality.find_vmaf_ffmpeg(options.vmaf_ffmpeg) if options.quality and options.vmaf else None
    )
    return QualityConfig(options.quality, vmaf, options.vmaf_subsample)


async def run(options: Options, display: Display) -> Outcome:
    display.begin("building workloads (cached after the first run)")
    workloads = list(
        (
            await asyncio.to_thread(
                build_workloads, options.workloads, duration_s=options.duration_s
            )
        ).values()
    )
    score = quality_config(options)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, CountingEmulator() as emulator:
        settings = bench_settings(
            emulator.url, Path(tmp), options.x264_preset, options.source_access
        )
        async with open_clients(settings) as clients:
            await bootstrap(clients, settings)
            services = await app.connect(clients, settings)
            bench = Bench(
                settings, emulator, clients, services, Path(tmp), display, score, options.timeout_s
            )
            prepared, runs = await interleaved(bench, workloads, options)
            sweep = await _sweep(bench, options)
            control = await _control(bench, options)
    return Outcome(workloads, prepared, runs, sweep, control, settings, score.vmaf_ffmpeg)
