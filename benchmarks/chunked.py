"""``python -m benchmarks chunked``: the ladder chunked vs single pass on the same 1080p source.

Side by side in one invocation, on the ``1080p-moov-end`` workload (``samples/workloads.py``):

* **CPU**: the single pass (``transcoder.media.ffmpeg.build_args``, the worker's command line)
  against the chunked path (``transcoder.media.chunks``: every chunk's ffmpeg, the one audio
  encode and the stitches), each process measured exactly with ``os.wait4`` (the children's
  rusage). Repetitions alternate (single, chunked, chunked, single, ...) and the ratio is the
  median of per-repetition ratios, so a change in the machine's load hits both sides.
* **Chunk length sweep**: the chunked path once more at each other length, against the median
  single pass.
* **Quality**: per-frame PSNR (luma) and SSIM (``All``) of each rendition, single and chunked,
  against the source scaled to its size (ffmpeg's ``psnr``/``ssim`` filters); and per boundary,
  the mean of the frames around it (two before, two after) against the rendition's mean.
* **Parallel** (``--parallel``): the chunks encoded by two processes with ``-threads 1`` each
  against one process with ``-threads 1``: the wall speed-up a second worker gives.

Every stitched output goes through the seam checks and the publish gate (``verify.check``).
Writes ``benchmarks/results/<date>-<commit>-chunked.json`` and ``.md`` and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measurement import Finished, run_measured
from benchmarks.publish import DEFAULT_OUT, record
from benchmarks.quality import VMAF_MODEL, find_vmaf_ffmpeg
from samples.workloads import ensure_workload
from transcoder.domain.rungs import DEFAULT_LADDER
from transcoder.media import ladder, probe, verify
from transcoder.media.chunks import (
    DEFAULT_POSTROLL_FRAMES,
    DEFAULT_WARMUP_FRAMES,
    ChunkPlan,
    audio_args,
    chunk_args,
    concat_list,
    plan_chunks,
)
from transcoder.media.chunks import stitch_args as make_stitch_args
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.stitch import (
    check_chunks,
    check_stitched,
    chunk_outputs,
    chunk_path,
    cut_us,
    probe_packets,
)

WORKLOAD = "1080p-moov-end"
DEFAULT_CHUNK_S = 30.0  # the fleet's TRANSCODER_CHUNK_S (docs/media.md: why 30)
WINDOW = 2  # frames on each side of a boundary scored as "around the boundary"
PROFILE = range(-3, 7)  # frames relative to a boundary in the per-frame seam profile


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = 60.0
    chunk_s: tuple[float, ...] = (10.0, 20.0, 30.0)
    main_chunk_s: float = DEFAULT_CHUNK_S
    reps: int = 2
    threads: int = 0
    quality: bool = True
    quality_all: bool = False  # score every swept length, not only the main one
    parallel: bool = False
    postroll_frames: int = DEFAULT_POSTROLL_FRAMES
    warmup_frames: int = DEFAULT_WARMUP_FRAMES
    vmaf_ffmpeg: str | None = None  # an ffmpeg with libvmaf: per-frame VMAF beside PSNR/SSIM
    out: Path = DEFAULT_OUT


@dataclass
class Run:
    """One encode of the whole ladder, single pass or chunked."""

    kind: str  # "single" | "chunked"
    chunk_s: float | None
    rep: int
    workers: int = 1
    threads: int = 0
    chunks: int = 1
    cpu_s: float = 0.0  # every process of the run
    video_cpu_s: float = 0.0  # chunked: the chunk encodes only
    audio_cpu_s: float = 0.0
    stitch_cpu_s: float = 0.0
    wall_s: float = 0.0
    frames: dict[str, int] = field(default_factory=dict)
    duration_s: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Source:
    path: Path
    media: probe.MediaInfo
    plan: ladder.Plan


def _checked(finished: Finished, what: str) -> Finished:
    if finished.returncode != 0:
        raise RuntimeError(f"{what} failed: {finished.stderr_tail[-600:]}")
    return finished


async def _gate(run: Run, source: Source, outputs: dict[str, Path]) -> None:
    for target in source.plan.targets:
        path = outputs[target.name]
        try:
            facts = await probe.run(str(path), timeout_s=120)
            seen = verify.check(path, facts, target, source.media, source.plan)
            run.frames[target.name] = seen.frames or 0
            run.duration_s[target.name] = seen.duration_s
        except Exception as exc:  # a failed gate is a result, not a crash
            run.problems.append(str(exc)[:400])


def _outputs(work: Path, plan: ladder.Plan, prefix: str) -> dict[str, Path]:
    return {t.name: work / f"{prefix}-{t.name}.mp4" for t in plan.targets}


async def single_pass(source: Source, work: Path, rep: int, threads: int) -> Run:
    outputs = _outputs(work, source.plan, "single")
    options = EncodeOptions(threads=threads)
    args = build_args(str(source.path), source.plan, outputs, options)
    finished = _checked(await asyncio.to_thread(run_measured, args), "single pass")
    run = Run("single", None, rep, threads=threads, cpu_s=finished.cpu_s, wall_s=finished.wall_s)
    run.video_cpu_s = finished.cpu_s
    await _gate(run, source, outputs)
    return run


def _encode_chunks(
    source: Source, chunks: ChunkPlan, work: Path, options: EncodeOptions, workers: int
) -> list[Finished]:
    names = [t.name for t in source.plan.targets]
    commands = [
        chunk_args(
            str(source.path),
            source.plan,
            chunks,
            chunk,
            chunk_outputs(work, names, chunk.index),
            options,
        )
        for chunk in chunks.chunks
    ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_measured, commands))


async def _stitch(source: Source, chunks: ChunkPlan, work: Path, audio: Path | None) -> float:
    """Stitch every rendition; returns the CPU-seconds of the stitch processes."""
    cpu_s = 0.0
    for target in source.plan.targets:
        files = [chunk_path(work, target.name, c.index) for c in chunks.chunks]
        probes = [await probe_packets(f) for f in files]
        frames = check_chunks(target.name, probes, chunks)
        cuts = [cut_us(p, chunks, c.frames) for p, c in zip(probes, chunks.chunks, strict=True)]
        script = work / f"{target.name}.ffconcat"
        script.write_text(concat_list(chunks, files, cuts))
        output = work / f"chunked-{target.name}.mp4"
        args = make_stitch_args(script, audio, output)
        cpu_s += _checked(await asyncio.to_thread(run_measured, args), "stitch").cpu_s
        check_stitched(target.name, await probe_packets(output), chunks, sum(frames))
    return cpu_s


async def chunked(
    source: Source,
    work: Path,
    chunk_s: float,
    rep: int,
    threads: int,
    workers: int = 1,
    postroll_frames: int = DEFAULT_POSTROLL_FRAMES,
    warmup_frames: int = DEFAULT_WARMUP_FRAMES,
) -> Run:
    chunks = plan_chunks(
        source.media,
        source.plan,
        chunk_s,
        postroll_frames=postroll_frames,
        warmup_frames=warmup_frames,
    )
    options = EncodeOptions(threads=threads)
    run = Run("chunked", chunk_s, rep, workers, threads, chunks=len(chunks.chunks))
    started = time.monotonic()
    encoded = await asyncio.to_thread(_encode_chunks, source, chunks, work, options, workers)
    run.wall_s = time.monotonic() - started  # the chunks' wall (the parallel figure)
    for finished in encoded:
        _checked(finished, "chunk")
    run.video_cpu_s = sum(f.cpu_s for f in encoded)
    audio = None
    if source.plan.audio_index is not None:
        audio = work / "audio.m4a"
        args = audio_args(str(source.path), source.plan, audio, options)
        run.audio_cpu_s = _checked(await asyncio.to_thread(run_measured, args), "audio").cpu_s
    try:
        run.stitch_cpu_s = await _stitch(source, chunks, work, audio)
    except Exception as exc:  # a seam is a result, not a crash
        run.problems.append(str(exc)[:400])
    run.cpu_s = run.video_cpu_s + run.audio_cpu_s + run.stitch_cpu_s
    await _gate(run, source, _outputs(work, source.plan, "chunked"))
    return run


_PSNR_Y = re.compile(r"psnr_y:([0-9.]+|inf)")
_SSIM_ALL = re.compile(r"All:([0-9.]+)")


def per_frame(stats: str, pattern: re.Pattern[str]) -> list[float]:
    """One score per frame from a psnr/ssim ``stats_file`` (pure; ``inf`` capped at 100 dB)."""
    scores = []
    for line in stats.splitlines():
        found = pattern.search(line)
        if found:
            scores.append(100.0 if found.group(1) == "inf" else float(found.group(1)))
    return scores


def _quality_graph(width: int, height: int, stats: dict[str, Path]) -> str:
    reference = f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p,setpts=PTS-STARTPTS"
    return (
        f"[2:v]{reference},split=4[r0][r1][r2][r3];"
        "[0:v]format=yuv420p,setpts=PTS-STARTPTS,split=2[a0][a1];"
        "[1:v]format=yuv420p,setpts=PTS-STARTPTS,split=2[b0][b1];"
        f"[a0][r0]psnr=stats_file={stats['single-psnr']}[p0];"
        f"[a1][r1]ssim=stats_file={stats['single-ssim']}[s0];"
        f"[b0][r2]psnr=stats_file={stats['chunked-psnr']}[p1];"
        f"[b1][r3]ssim=stats_file={stats['chunked-ssim']}[s1]"
    )


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def boundary_scores(scores: list[float], boundaries: Sequence[int]) -> list[float]:
    """The mean score of the frames around each boundary (``WINDOW`` on each side)."""
    return [_mean(scores[max(0, b - WINDOW) : b + WINDOW]) for b in boundaries]


def score(
    single: Path, chunked_path: Path, source: Path, width: int, height: int, work: Path
) -> dict[str, list[float]]:
    """Per-frame PSNR-Y and SSIM of both renditions; one decode of each file."""
    stats = {k: work / f"{k}.log" for k in ("single-psnr", "single-ssim", "chunked-psnr")}
    stats["chunked-ssim"] = work / "chunked-ssim.log"
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    command += ["-i", str(single), "-i", str(chunked_path), "-i", str(source)]
    command += ["-filter_complex", _quality_graph(width, height, stats)]
    for label in ("p0", "s0", "p1", "s1"):
        command += ["-map", f"[{label}]"]
    command += ["-f", "null", "-"]
    subprocess.run(command, check=True, capture_output=True, timeout=3600)
    return {
        key: per_frame(path.read_text(), _PSNR_Y if key.endswith("psnr") else _SSIM_ALL)
        for key, path in stats.items()
    }


def vmaf_frames(log: str) -> list[float]:
    """One VMAF score per frame from libvmaf's JSON log (pure)."""
    return [float(frame["metrics"]["vmaf"]) for frame in json.loads(log)["frames"]]


def vmaf_scores(
    binary: str,
    renditions: dict[str, Path],
    source: Path,
    width: int,
    height: int,
    work: Path,
) -> dict[str, list[float]]:
    """Per-frame VMAF (``VMAF_MODEL``) of each rendition against the source at its size."""
    reference = f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p,setpts=PTS-STARTPTS"
    scores = {}
    for kind, rendition in renditions.items():
        log = work / f"{kind}-vmaf.json"
        graph = (
            f"[0:v]format=yuv420p,setpts=PTS-STARTPTS[d];[1:v]{reference}[r];"
            f"[d][r]libvmaf=model=version={VMAF_MODEL}:log_fmt=json:log_path={log}"
            f":n_threads={os.cpu_count() or 1}"
        )
        command = [binary, "-hide_banner", "-nostdin", "-loglevel", "error"]
        command += ["-i", str(rendition), "-i", str(source), "-filter_complex", graph]
        subprocess.run([*command, "-f", "null", "-"], check=True, capture_output=True, timeout=7200)
        scores[f"{kind}-vmaf"] = vmaf_frames(log.read_text())
    return scores


def seam_profile(
    chunked_scores: Sequence[float],
    single_scores: Sequence[float],
    boundaries: Sequence[int],
    offset: float,
) -> dict[str, float]:
    """Per frame relative to a boundary (``PROFILE``), chunked - single averaged over every
    boundary, beyond ``offset`` (the whole-stream difference): 0 everywhere is no seam."""
    profile = {}
    for at in PROFILE:
        frames = [b + at for b in boundaries if 0 <= b + at < len(chunked_scores)]
        diffs = [chunked_scores[f] - single_scores[f] for f in frames]
        profile[f"{at:+d}"] = round(_mean(diffs) - offset, 3)
    return profile


def quality_summary(scores: dict[str, list[float]], boundaries: Sequence[int]) -> dict[str, Any]:
    """Mean scores, chunked - single, the worst and mean boundary window against the mean, and
    the per-frame seam profile."""
    summary: dict[str, Any] = {"boundaries": len(boundaries)}
    for key, values in scores.items():
        around = boundary_scores(values, boundaries)
        summary[f"{key}_mean"] = round(_mean(values), 4)
        summary[f"{key}_boundary_mean"] = round(_mean(around), 4)
        summary[f"{key}_worst_boundary_delta"] = round(min(around) - _mean(values), 4)
    for metric in [m for m in ("psnr", "ssim", "vmaf") if f"single-{m}" in scores]:
        chunked_minus_single = summary[f"chunked-{metric}_mean"] - summary[f"single-{metric}_mean"]
        summary[f"{metric}_chunked_minus_single"] = round(chunked_minus_single, 4)
        # A seam is where chunked falls behind the single pass more than it does on average.
        seams = [
            c - s
            for c, s in zip(
                boundary_scores(scores[f"chunked-{metric}"], boundaries),
                boundary_scores(scores[f"single-{metric}"], boundaries),
                strict=True,
            )
        ]
        summary[f"{metric}_worst_seam"] = round(min(seams) - chunked_minus_single, 4)
        summary[f"{metric}_mean_seam"] = round(_mean(seams) - chunked_minus_single, 4)
        profile = seam_profile(
            scores[f"chunked-{metric}"],
            scores[f"single-{metric}"],
            boundaries,
            chunked_minus_single,
        )
        summary[f"{metric}_seam_profile"] = profile
    return summary


def _ratio(runs: list[Run], rep: int, chunk_s: float) -> float | None:
    single = [r.cpu_s for r in runs if r.kind == "single" and r.rep == rep]
    chunk = [r.cpu_s for r in runs if r.kind == "chunked" and r.rep == rep and r.chunk_s == chunk_s]
    if not single or not chunk:
        return None
    return chunk[0] / single[0]


def summarise(runs: list[Run], options: Options) -> dict[str, Any]:
    """CPU ratios: the main length paired with the single pass of its repetition (median over
    repetitions); the other lengths (run once) against the median single pass."""
    singles = [r.cpu_s for r in runs if r.kind == "single"]
    median_single = statistics.median(singles)
    by_length: dict[str, Any] = {}
    for length in options.chunk_s:
        mine = [r for r in runs if r.kind == "chunked" and r.chunk_s == length]
        if not mine:
            continue
        paired = [_ratio(runs, rep, length) for rep in range(options.reps)]
        paired_ok = [p for p in paired if p is not None]
        by_length[f"{length:g}"] = {
            "chunks": mine[0].chunks,
            "cpu_s": [round(r.cpu_s, 2) for r in mine],
            "ratio": round(
                statistics.median(paired_ok) if paired_ok else mine[0].cpu_s / median_single, 4
            ),
            "ratio_kind": "median of paired repetitions" if paired_ok else "vs median single",
            "audio_cpu_s": round(mine[0].audio_cpu_s, 2),
            "stitch_cpu_s": round(mine[0].stitch_cpu_s, 2),
        }
    return {
        "single_cpu_s": [round(c, 2) for c in singles],
        "median_single_cpu_s": round(median_single, 2),
        "by_chunk_s": by_length,
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _line(run: Run) -> str:
    what = "single pass" if run.kind == "single" else f"chunked {run.chunk_s:g} s x{run.chunks}"
    status = "ok" if run.valid else "INVALID: " + "; ".join(run.problems)
    return (
        f"  {what} (workers {run.workers}, threads {run.threads}): {run.cpu_s:.1f} CPU-s, "
        f"{run.wall_s:.1f} s wall, frames {run.frames} [{status}]"
    )


async def prepare_source(duration_s: float) -> Source:
    """The workload cut to ``duration_s``, probed and planned with the default ladder."""
    workload = await asyncio.to_thread(ensure_workload, WORKLOAD, duration_s)
    raw = await probe.run(str(workload.path), timeout_s=120)
    media = probe.parse(raw, size_bytes=workload.path.stat().st_size)
    names = tuple(rung.name for rung in DEFAULT_LADDER)
    plan = ladder.plan(media, DEFAULT_LADDER, names, max_fps=60.0, gop_s=2.0)
    return Source(workload.path, media, plan)


async def _one(
    source: Source, root: Path, kind: str, chunk_s: float, rep: int, post: int, **kw: int
) -> Run:
    """One run; ``kw``: ``workers``, ``threads``, ``warmup`` (frames)."""
    work = root / f"{kind}-{chunk_s:g}-{rep}-{kw.get('workers', 1)}"
    work.mkdir(parents=True, exist_ok=True)
    threads = kw.get("threads", 0)
    if kind == "single":
        run = await single_pass(source, work, rep, threads)
    else:
        workers, warmup = kw.get("workers", 1), kw.get("warmup", 0)
        run = await chunked(source, work, chunk_s, rep, threads, workers, post, warmup)
    _say(_line(run))
    return run


def _quality(
    source: Source,
    root: Path,
    options: Options,
    chunk_s: float,
    single_vmaf: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    """Score the chunked run of ``chunk_s`` (the main one of repetition 0, else the sweep's)
    against the first single pass; the single pass's VMAF is computed once (``single_vmaf``)."""
    chunks = plan_chunks(
        source.media,
        source.plan,
        chunk_s,
        postroll_frames=options.postroll_frames,
        warmup_frames=options.warmup_frames,
    )
    boundaries = [c.start_frame for c in chunks.chunks[1:]]
    run_dir = (
        f"chunked-{chunk_s:g}-0-1"
        if chunk_s == options.main_chunk_s
        else f"chunked-{chunk_s:g}--1-1"
    )
    results: dict[str, Any] = {}
    for target in source.plan.targets:
        _say(f"  scoring {target.name}, {chunk_s:g} s chunks (PSNR, SSIM per frame)")
        single = root / f"single-{options.main_chunk_s:g}-0-1" / f"single-{target.name}.mp4"
        chunk = root / run_dir / f"chunked-{target.name}.mp4"
        size = (target.width, target.height)
        scores = score(single, chunk, source.path, *size, root)
        if options.vmaf_ffmpeg is not None:
            _say(f"  scoring {target.name}, {chunk_s:g} s chunks (VMAF: {options.vmaf_ffmpeg})")
            if target.name not in single_vmaf:
                single_vmaf[target.name] = vmaf_scores(
                    options.vmaf_ffmpeg, {"single": single}, source.path, *size, root
                )
            scores |= single_vmaf[target.name]
            scores |= vmaf_scores(options.vmaf_ffmpeg, {"chunked": chunk}, source.path, *size, root)
        results[target.name] = quality_summary(scores, boundaries)
    return results


async def measure(options: Options) -> dict[str, Any]:
    """Every run of one invocation, in the order described in the module docstring."""
    source = await prepare_source(options.duration_s)
    post = options.postroll_frames
    warm = {"warmup": options.warmup_frames}
    root = Path(tempfile.mkdtemp(prefix="bench-chunked-"))
    runs: list[Run] = []
    quality: dict[str, Any] = {}
    others: dict[str, Any] = {}  # --quality-all: the swept lengths' scores
    single_vmaf: dict[str, dict[str, list[float]]] = {}
    try:
        for rep in range(options.reps):
            kinds = ("single", "chunked") if rep % 2 == 0 else ("chunked", "single")
            for kind in kinds:
                runs.append(await _one(source, root, kind, options.main_chunk_s, rep, post, **warm))
            if rep == 0 and options.quality:
                quality = await asyncio.to_thread(
                    _quality, source, root, options, options.main_chunk_s, single_vmaf
                )
        for length in options.chunk_s:
            if length != options.main_chunk_s:
                runs.append(await _one(source, root, "chunked", length, -1, post, **warm))
                if options.quality and options.quality_all:
                    others[f"{length:g}"] = await asyncio.to_thread(
                        _quality, source, root, options, length, single_vmaf
                    )
        if options.parallel:
            for workers in (1, 2):
                main = options.main_chunk_s
                runs.append(
                    await _one(
                        source, root, "chunked", main, -2, post, workers=workers, threads=1, **warm
                    )
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "source": {
            "path": str(source.path),
            "duration_s": source.media.duration_s,
            "size": f"{source.media.width}x{source.media.height}",
            "fps": source.media.fps,
            "keyint": source.plan.keyint,
            "renditions": [t.name for t in source.plan.targets],
        },
        "runs": [dataclasses.asdict(r) for r in runs],
        "cpu": summarise([r for r in runs if r.rep != -2], options),
        "quality": quality,
        "quality_by_chunk_s": {f"{options.main_chunk_s:g}": quality, **others} if others else {},
        "parallel": _parallel([r for r in runs if r.rep == -2]),
        "valid": all(r.valid for r in runs),
        "postroll_frames": post,
        "warmup_frames": options.warmup_frames,
    }


def _parallel(runs: list[Run]) -> dict[str, Any]:
    one = [r for r in runs if r.workers == 1]
    two = [r for r in runs if r.workers == 2]
    if not one or not two:
        return {}
    return {
        "one_process_wall_s": round(one[0].wall_s, 2),
        "two_processes_wall_s": round(two[0].wall_s, 2),
        "speed_up": round(one[0].wall_s / two[0].wall_s, 3),
    }


def markdown(result: dict[str, Any]) -> str:
    """The tables of one invocation (pure)."""
    src = result["source"]
    cpu = result["cpu"]
    lines = [
        f"# Chunked vs single pass: {src['size']} {src['fps']:g} fps, {src['duration_s']:g} s, "
        f"ladder {' + '.join(src['renditions'])}",
        "",
        f"Command: `{result.get('command', '')}`; commit {result.get('commit', '')}; "
        f"load {result.get('machine', {}).get('load_start', '?')} -> "
        f"{result.get('machine', {}).get('load_end', '?')}; all outputs valid: {result['valid']}",
        "",
        f"Post-roll: {result.get('postroll_frames', 0)} frames per chunk; warm-up: "
        f"{result.get('warmup_frames', 0)} frames per chunk",
        "",
        f"Single pass CPU-s: {cpu['single_cpu_s']} (median {cpu['median_single_cpu_s']})",
        "",
        "| chunk length | chunks | CPU-s (chunks + audio + stitch) | chunked / single | "
        "audio CPU-s | stitch CPU-s |",
        "|---|---|---|---|---|---|",
    ]
    for length, row in cpu["by_chunk_s"].items():
        lines.append(
            f"| {length} s | {row['chunks']} | {row['cpu_s']} | **{row['ratio']:.3f}** "
            f"({row['ratio_kind']}) | {row['audio_cpu_s']} | {row['stitch_cpu_s']} |"
        )
    if result["quality"]:
        lines += [
            "",
            "| rendition | PSNR-Y single | chunked | diff | SSIM single | chunked | diff | "
            "worst boundary PSNR vs mean (single / chunked) | worst seam PSNR / SSIM |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, q in result["quality"].items():
            lines.append(
                f"| {name} | {q['single-psnr_mean']:.3f} | {q['chunked-psnr_mean']:.3f} | "
                f"{q['psnr_chunked_minus_single']:+.3f} | {q['single-ssim_mean']:.5f} | "
                f"{q['chunked-ssim_mean']:.5f} | {q['ssim_chunked_minus_single']:+.5f} | "
                f"{q['single-psnr_worst_boundary_delta']:+.3f} / "
                f"{q['chunked-psnr_worst_boundary_delta']:+.3f} dB | "
                f"{q['psnr_worst_seam']:+.3f} dB / {q['ssim_worst_seam']:+.5f} |"
            )
        vmaf = {name: q for name, q in result["quality"].items() if "single-vmaf_mean" in q}
        if vmaf:
            lines += [
                "",
                f"| rendition | VMAF single | chunked | diff | frames around boundaries "
                f"({WINDOW} before, {WINDOW} after), chunked | seam VMAF: mean / worst |",
                "|---|---|---|---|---|---|",
            ]
        for name, q in vmaf.items():
            lines.append(
                f"| {name} | {q['single-vmaf_mean']:.3f} | {q['chunked-vmaf_mean']:.3f} | "
                f"**{q['vmaf_chunked_minus_single']:+.3f}** | "
                f"{q['chunked-vmaf_boundary_mean']:.3f} | "
                f"{q['vmaf_mean_seam']:+.3f} / **{q['vmaf_worst_seam']:+.3f}** |"
            )
        lines += _profile_table(result["quality"])
    if result.get("quality_by_chunk_s"):
        lines += _lengths_table(result["quality_by_chunk_s"])
    if result["parallel"]:
        par = result["parallel"]
        lines += [
            "",
            f"Chunks with `-threads 1`: one process {par['one_process_wall_s']} s wall, two "
            f"processes {par['two_processes_wall_s']} s: speed-up **{par['speed_up']:.2f}x**",
        ]
    return "\n".join(lines) + "\n"


def _lengths_table(by_length: dict[str, Any]) -> list[str]:
    """Whole-stream difference and seam per chunk length (``--quality-all``; pure)."""
    lines = [
        "",
        "| chunk length | rendition | boundaries | VMAF chunked - single | "
        "seam VMAF mean / worst | PSNR-Y chunked - single | seam PSNR mean / worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for length, renditions in by_length.items():
        for name, q in renditions.items():
            vmaf = (
                f"{q['vmaf_chunked_minus_single']:+.3f} | "
                f"{q['vmaf_mean_seam']:+.3f} / {q['vmaf_worst_seam']:+.3f}"
                if "vmaf_worst_seam" in q
                else "- | -"
            )
            lines.append(
                f"| {length} s | {name} | {q['boundaries']} | {vmaf} | "
                f"{q['psnr_chunked_minus_single']:+.3f} dB | "
                f"{q['psnr_mean_seam']:+.3f} / {q['psnr_worst_seam']:+.3f} dB |"
            )
    return lines


def _profile_table(quality: dict[str, Any]) -> list[str]:
    """Per frame around a boundary, chunked - single beyond the average (pure)."""
    offsets = [f"{at:+d}" for at in PROFILE]
    lines = [
        "",
        "Seam profile: per frame relative to a boundary (0 = the chunk's IDR), chunked - single "
        "averaged over the boundaries, less the whole-stream difference",
        "",
        f"| rendition, metric | {' | '.join(offsets)} |",
        "|---|" + "---|" * len(offsets),
    ]
    for name, q in quality.items():
        for metric in ("psnr", "vmaf"):
            profile = q.get(f"{metric}_seam_profile")
            if profile:
                values = " | ".join(f"{profile[at]:+.2f}" for at in offsets)
                lines.append(f"| {name} {metric.upper()} | {values} |")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks chunked", description=__doc__)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of 1080p (default 60)")
    p.add_argument("--chunk-s", default="10,20,30", help="chunk lengths to sweep (seconds)")
    p.add_argument(
        "--main-chunk-s",
        type=float,
        default=DEFAULT_CHUNK_S,
        help=f"the repeated, scored length (default {DEFAULT_CHUNK_S:g})",
    )
    p.add_argument("--reps", type=int, default=2, help="alternating single/chunked repetitions")
    p.add_argument("--threads", type=int, default=0, help="ffmpeg -threads (0: ffmpeg chooses)")
    p.add_argument("--no-quality", action="store_true", help="skip PSNR/SSIM")
    p.add_argument(
        "--quality-all", action="store_true", help="score every swept length, not only the main"
    )
    p.add_argument("--parallel", action="store_true", help="also 2 processes vs 1, -threads 1")
    p.add_argument(
        "--postroll",
        type=int,
        default=DEFAULT_POSTROLL_FRAMES,
        help=f"frames encoded past each chunk (default {DEFAULT_POSTROLL_FRAMES})",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP_FRAMES,
        help=f"frames encoded before each chunk (default {DEFAULT_WARMUP_FRAMES})",
    )
    p.add_argument(
        "--vmaf-ffmpeg",
        help="an ffmpeg with libvmaf for per-frame VMAF (default: search PATH, imageio-ffmpeg)",
    )
    p.add_argument("--no-vmaf", action="store_true", help="PSNR/SSIM only")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results ({DEFAULT_OUT})")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    lengths = tuple(float(x) for x in args.chunk_s.split(",") if x.strip())
    options = Options(
        duration_s=args.duration,
        chunk_s=tuple(dict.fromkeys((args.main_chunk_s, *lengths))),
        main_chunk_s=args.main_chunk_s,
        reps=max(1, args.reps),
        threads=args.threads,
        quality=not args.no_quality,
        quality_all=args.quality_all,
        parallel=args.parallel,
        postroll_frames=args.postroll,
        warmup_frames=args.warmup,
        vmaf_ffmpeg=None if args.no_vmaf else find_vmaf_ffmpeg(args.vmaf_ffmpeg),
        out=args.out,
    )
    load_start = os.getloadavg()
    result = asyncio.run(measure(options))
    return record("chunked", argv, result, markdown, options.out, load_start)
