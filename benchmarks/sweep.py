"""The speed/quality sweep that chooses the defaults: x264 presets x CRF values on 1080p input.

Each point is B0 (plain ffmpeg, the worker's own command line for the whole ladder) with the
preset and every rung's CRF replaced; maxrate and bufsize stay as configured, so the caps still
apply. Each point runs once; its CPU time is exact (``os.wait4``), and every rendition is scored
(PSNR, SSIM, and VMAF when available) against the source scaled to its size.
"""

from __future__ import annotations

import asyncio
import dataclasses

from benchmarks.context import Bench, Prepared, check_outputs, plan_for, remove
from benchmarks.measurement import run_measured
from benchmarks.model import SweepPoint
from transcoder.media.ffmpeg import build_args


def _prepared_for_crf(prep: Prepared, bench: Bench, crf: int) -> Prepared:
    rungs = tuple(rung.model_copy(update={"crf": crf}) for rung in bench.settings.ladder)
    settings = bench.settings.model_copy(update={"ladder": rungs})
    return dataclasses.replace(prep, plan=plan_for(prep.media, settings))


async def run_point(bench: Bench, prep: Prepared, preset: str, crf: int) -> SweepPoint:
    point = _prepared_for_crf(prep, bench, crf)
    work = bench.fresh_dir(f"sweep-{preset}-{crf}")
    outputs = {t.name: work / f"{t.name}.mp4" for t in point.plan.targets}
    options = dataclasses.replace(bench.encode_options(), preset=preset)
    args = build_args(str(prep.workload.path), point.plan, outputs, options)
    try:
        finished = await asyncio.to_thread(run_measured, args)
        ok = finished.returncode == 0
        checked = await check_outputs(outputs, point, bench.quality) if ok else []
        return SweepPoint(
            preset=preset,
            crf=crf,
            ok=ok and all(o.valid for o in checked),
            wall_s=round(finished.wall_s, 4),
            cpu_s=round(finished.cpu_s, 4),
            duration_s=prep.media.duration_s,
            outputs=tuple(checked),
            error=None if ok else finished.stderr_tail[-800:],
        )
    finally:
        remove(work)


async def run_sweep(
    bench: Bench, prep: Prepared, presets: tuple[str, ...], crfs: tuple[int, ...]
) -> list[SweepPoint]:
    points: list[SweepPoint] = []
    total = len(presets) * len(crfs)
    for preset in presets:
        for crf in crfs:
            bench.display.begin(f"sweep {len(points) + 1}/{total}: preset {preset}, CRF {crf}")
            point = await run_point(bench, prep, preset, crf)
            points.append(point)
            bench.display.finished(_headline(point))
    return points


def _headline(point: SweepPoint) -> str:
    scores = ", ".join(
        f"{o.name} {o.bitrate_kbps} kb/s"
        + (f" PSNR {o.quality.psnr_db:.2f}" if o.quality and o.quality.psnr_db else "")
        + (f" VMAF {o.quality.vmaf:.1f}" if o.quality and o.quality.vmaf else "")
        for o in point.outputs
    )
    status = "ok" if point.ok else f"FAILED: {point.error}"
    return (
        f"  sweep {point.preset:>9} crf {point.crf}: {point.cpu_s:6.1f} CPU-s "
        f"{point.wall_s:6.1f} s wall; {scores} [{status}]"
    )
