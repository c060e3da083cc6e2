"""``python -m benchmarks outputs``: what the player-ready outputs cost, side by side in one run.

The worker's own command line (``transcoder.media.ffmpeg.build_args``, planned exactly as
``Pipeline._encode`` plans it: the default ladder, ``ladder.plan(max_fps=60, gop_s=2)``,
``hls.hls_time_s``, ``stills.plan``) in four variants on the same source:

* ``mp4``: the MP4 renditions only (``TRANSCODER_HLS=false``, ``TRANSCODER_STILLS=false``);
* ``hls``: + every rendition's HLS stream from the same packets (the ``tee`` muxer);
* ``stills``: + the poster and the thumbnail sprite (two more ``split`` branches) and the VTT;
* ``both``: what the worker does by default.

Each ffmpeg is measured exactly with ``os.wait4`` (user + system CPU of the process and its
threads). Repetitions rotate the order of the variants, and each variant's ratio is the median
of its per-repetition ratios to that repetition's ``mp4`` run, so a change in the machine's load
hits both sides of a ratio. The spread of the ``mp4`` runs ((max - min) / median) is the noise
floor: a ratio closer to 1 than that is not a measured cost. Target: ``both`` within 1.05x.

Every output goes through the real publish gates (``verify.check`` per MP4, ``hls.check``,
``stills.check``): a variant whose outputs would not be published makes the run exit 1. Bytes are
reported per output kind. Writes ``benchmarks/results/<date>-<commit>-outputs.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measurement import run_measured
from benchmarks.publish import DEFAULT_OUT, record
from samples.workloads import WORKLOADS, ensure_workload
from transcoder.domain.rungs import DEFAULT_LADDER
from transcoder.media import hls, ladder, probe, stills, verify
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.hls import HlsOutput

VARIANTS = ("mp4", "hls", "stills", "both")
TARGET_RATIO = 1.05
KINDS = ("mp4", "hls", "poster", "sprite", "vtt")


@dataclass(frozen=True, slots=True)
class Options:
    workload: str = "1080p-moov-end"
    duration_s: float = 30.0
    reps: int = 3
    threads: int = 0
    out: Path = DEFAULT_OUT


@dataclass
class Run:
    """One encode of the whole ladder in one variant."""

    variant: str
    rep: int
    cpu_s: float = 0.0
    wall_s: float = 0.0
    bytes: dict[str, int] = field(default_factory=dict)  # per output kind (``KINDS``)
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Source:
    path: Path
    media: probe.MediaInfo
    plan: ladder.Plan


def order(rep: int) -> tuple[str, ...]:
    """The variants of repetition ``rep``, rotated so each takes every position in turn."""
    shift = rep % len(VARIANTS)
    return VARIANTS[shift:] + VARIANTS[:shift]


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median: how far apart repeated identical runs land (the noise floor)."""
    if len(values) < 2:
        return None  # one run says nothing about the noise
    return (max(values) - min(values)) / statistics.median(values)


def paired_ratios(runs: Sequence[Run], variant: str) -> list[float]:
    """``variant`` / ``mp4`` CPU-seconds within each repetition that has both."""
    base = {r.rep: r.cpu_s for r in runs if r.variant == "mp4"}
    return [r.cpu_s / base[r.rep] for r in runs if r.variant == variant and r.rep in base]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarise(runs: Sequence[Run]) -> dict[str, Any]:
    """Per variant: CPU-seconds, the median paired ratio to ``mp4``, median bytes per kind."""
    mp4_cpu = [r.cpu_s for r in runs if r.variant == "mp4"]
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r.variant == variant]
        if not mine:
            continue
        ratios = paired_ratios(runs, variant)
        variants[variant] = {
            "cpu_s": [round(r.cpu_s, 2) for r in mine],
            "median_cpu_s": round(statistics.median(r.cpu_s for r in mine), 2),
            "ratios": [round(x, 4) for x in ratios],
            "ratio": round(statistics.median(ratios), 4) if ratios else None,
            "bytes": {
                kind: int(statistics.median(r.bytes.get(kind, 0) for r in mine)) for kind in KINDS
            },
        }
    both = variants.get("both", {}).get("ratio")
    return {
        "variants": variants,
        "noise_floor": _rounded(spread(mp4_cpu)),
        "target_ratio": TARGET_RATIO,
        "target_met": both is not None and both <= TARGET_RATIO,
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _prepare(options: Options) -> Source:
    workload = await asyncio.to_thread(ensure_workload, options.workload, options.duration_s)
    raw = await probe.run(str(workload.path), timeout_s=120)
    media = probe.parse(raw, size_bytes=workload.path.stat().st_size)
    names = tuple(rung.name for rung in DEFAULT_LADDER)
    plan = ladder.plan(media, DEFAULT_LADDER, names, max_fps=60.0, gop_s=2.0)
    return Source(workload.path, media, plan)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def _gate_mp4(run: Run, source: Source, outputs: dict[str, Path]) -> None:
    for target in source.plan.targets:
        path = outputs[target.name]
        try:
            facts = await probe.run(str(path), timeout_s=120)
            verify.check_complete(facts, source.media)
            verify.check(path, facts, target, source.media, source.plan)
        except Exception as exc:  # a failed gate is a result, not a crash
            run.problems.append(str(exc)[:400])
    run.bytes["mp4"] = sum(_size(p) for p in outputs.values())


def _gate_hls(run: Run, source: Source, output: HlsOutput) -> None:
    try:
        variants = hls.check(output.folder, source.media, source.plan)
    except Exception as exc:
        run.problems.append(str(exc)[:400])
        return
    master = output.folder / hls.MASTER
    master.write_text(hls.master_playlist(variants))
    run.bytes["hls"] = sum(v.bytes for v in variants) + _size(master)


def _gate_stills(run: Run, source: Source, still: stills.Stills) -> None:
    files = still.files
    try:
        files.vtt.write_text(stills.vtt_text(still))  # as the pipeline does after the encode
        stills.check(still, verify.tolerance_s(source.media))
    except Exception as exc:
        run.problems.append(str(exc)[:400])
    run.bytes.update(poster=_size(files.poster), sprite=_size(files.sprite), vtt=_size(files.vtt))


async def encode(source: Source, work: Path, variant: str, rep: int, threads: int) -> Run:
    """One measured ffmpeg of ``variant``, then the publish gates on what it wrote."""
    outputs = {t.name: work / f"{t.name}.mp4" for t in source.plan.targets}
    hls_output = None
    if variant in ("hls", "both"):
        hls_output = HlsOutput(work / "hls", hls.hls_time_s(source.plan, source.media.fps))
        hls_output.prepare(source.plan)
    still = None
    if variant in ("stills", "both"):
        tolerance = verify.tolerance_s(source.media)
        still = stills.plan(source.media.duration_s, source.plan, tolerance, work)
    options = EncodeOptions(threads=threads)
    args = build_args(
        str(source.path), source.plan, outputs, options, hls_output=hls_output, stills=still
    )
    finished = await asyncio.to_thread(run_measured, args)
    run = Run(variant, rep, cpu_s=finished.cpu_s, wall_s=finished.wall_s)
    if finished.returncode != 0:
        run.problems.append(f"ffmpeg exit {finished.returncode}: {finished.stderr_tail[-400:]}")
        return run
    await _gate_mp4(run, source, outputs)
    if hls_output is not None:
        _gate_hls(run, source, hls_output)
    if still is not None:
        _gate_stills(run, source, still)
    return run


def _line(run: Run) -> str:
    status = "ok" if run.valid else "INVALID: " + "; ".join(run.problems)
    return (
        f"  rep {run.rep} {run.variant}: {run.cpu_s:.1f} CPU-s, {run.wall_s:.1f} s wall, "
        f"bytes {run.bytes} [{status}]"
    )


async def measure(options: Options) -> dict[str, Any]:
    """Every run of one invocation, in the order described in the module docstring."""
    source = await _prepare(options)
    root = Path(tempfile.mkdtemp(prefix="bench-outputs-"))
    runs: list[Run] = []
    try:
        for rep in range(options.reps):
            for variant in order(rep):
                work = root / f"{rep}-{variant}"
                work.mkdir()
                runs.append(await encode(source, work, variant, rep, options.threads))
                _say(_line(runs[-1]))
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "source": {
            "workload": options.workload,
            "path": str(source.path),
            "duration_s": source.media.duration_s,
            "size": f"{source.media.width}x{source.media.height}",
            "fps": source.media.fps,
            "keyint": source.plan.keyint,
            "renditions": [t.name for t in source.plan.targets],
        },
        "runs": [{**dataclasses.asdict(r), "valid": r.valid} for r in runs],
        "summary": summarise(runs),
        "valid": bool(runs) and all(r.valid for r in runs),
    }


def _kib(count: int) -> str:
    return f"{count / 1024:,.0f} KiB" if count >= 10_240 else f"{count:,} B"


def markdown(result: dict[str, Any]) -> str:
    """The table of one invocation (pure)."""
    src, summary = result["source"], result["summary"]
    load = result.get("machine", {})
    both = summary["variants"].get("both", {}).get("ratio")
    verdict = "met" if summary["target_met"] else "NOT met"
    noise = summary["noise_floor"]
    floor = "n/a (one repetition)" if noise is None else f"{noise * 100:.1f} %"
    lines = [
        f"# Player-ready outputs: {src['workload']} {src['size']} {src['fps']:g} fps, "
        f"{src['duration_s']:g} s, ladder {' + '.join(src['renditions'])}",
        "",
        f"Command: `{result.get('command', '')}`; commit {result.get('commit', '')}; "
        f"load {load.get('load_start', '?')} -> {load.get('load_end', '?')}; "
        f"all outputs passed the publish gates: {result['valid']}",
        "",
        f"Target: MP4 + HLS + stills within {summary['target_ratio']:.2f}x the MP4-only CPU: "
        f"**{verdict}** ({both if both is not None else '?'}x); noise floor (MP4-only spread) "
        f"{floor}",
        "",
        "| variant | CPU-s per repetition | vs MP4 only (median paired) | MP4 | HLS | poster | "
        "sprite | VTT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in summary["variants"].items():
        ratio = "1 (baseline)" if variant == "mp4" else f"**{row['ratio']:.3f}x** {row['ratios']}"
        sizes = " | ".join(
            _kib(row["bytes"][kind]) if row["bytes"][kind] else "-" for kind in KINDS
        )
        lines.append(f"| {variant} | {row['cpu_s']} | {ratio} | {sizes} |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks outputs", description=__doc__)
    p.add_argument("--workload", default="1080p-moov-end", choices=sorted(WORKLOADS))
    p.add_argument("--duration", type=float, default=30.0, help="seconds of source (default 30)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the four variants")
    p.add_argument("--threads", type=int, default=0, help="ffmpeg -threads (0: ffmpeg chooses)")
    p.add_argument("--quick", action="store_true", help="2 s, 1 repetition (smoke test)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results ({DEFAULT_OUT})")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    options = Options(
        workload=args.workload,
        duration_s=2.0 if args.quick else args.duration,
        reps=1 if args.quick else max(1, args.reps),
        threads=args.threads,
        out=args.out,
    )
    load_start = os.getloadavg()
    result = asyncio.run(measure(options))
    return record("outputs", argv, result, markdown, options.out, load_start)
