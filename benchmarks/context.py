"""What every runner shares: the emulator, the worker's settings, the planned ladder, the checks.

The baselines use the worker's own code for everything that is not the thing measured: the
ladder comes from ``transcoder.media.ladder.plan`` on ``transcoder.media.probe`` facts, the command
line from
``transcoder.media.ffmpeg.build_args`` with the encode options ``transcoder.runtime.app`` derives
from the same
``Settings``, and every output must pass the worker's publish gate
(``transcoder.media.verify.check``).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import quality
from benchmarks.display import Display
from benchmarks.emulator import CountingEmulator, Request
from benchmarks.model import Output, SourceReads
from samples.workloads import Workload
from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.errors import TranscoderError
from transcoder.media import ladder, probe, verify
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.runtime import app


@dataclass(frozen=True, slots=True)
class QualityConfig:
    enabled: bool
    vmaf_ffmpeg: str | None
    vmaf_subsample: int


@dataclass
class Bench:
    """One invocation's shared state."""

    settings: Settings
    emulator: CountingEmulator
    clients: Clients
    services: app.Services
    work_dir: Path
    display: Display
    quality: QualityConfig
    timeout_s: float
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def fresh_dir(self, label: str) -> Path:
        path = self.work_dir / f"{label}-{next(self._serial)}"
        path.mkdir(parents=True)
        return path

    def encode_options(self) -> EncodeOptions:
        return app.pipeline_config(self.settings).encode

    def args(self, source: str, plan: ladder.Plan, outputs: dict[str, Path]) -> list[str]:
        return build_args(source, plan, outputs, self.encode_options())


@dataclass(frozen=True, slots=True)
class Prepared:
    """A workload with its probed facts and the ladder the worker would plan for it."""

    workload: Workload
    media: probe.MediaInfo
    plan: ladder.Plan

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f"{t.name}.mp4" for t in self.plan.targets)


def plan_for(media: probe.MediaInfo, settings: Settings) -> ladder.Plan:
    wanted = tuple(rung.name for rung in settings.ladder)
    return ladder.plan(
        media, settings.ladder, wanted, max_fps=settings.max_fps, gop_s=settings.gop_s
    )


async def prepare(workload: Workload, settings: Settings) -> Prepared:
    raw = await probe.run(str(workload.path), timeout_s=settings.ffprobe_timeout_s)
    media = probe.parse(raw, size_bytes=workload.path.stat().st_size)
    return Prepared(workload, media, plan_for(media, settings))


async def check_output(
    path: Path, target: ladder.Target, prep: Prepared, score: QualityConfig | None
) -> Output:
    """The publish gate's verdict on one rendition, its digest and (optionally) its quality."""
    try:
        facts = await probe.run(str(path), timeout_s=120)
        seen = verify.check(path, facts, target, prep.media, prep.plan)
    except (TranscoderError, OSError) as exc:
        return Output(target.name, 0, 0, 0.0, 0, 0, valid=False, problem=str(exc)[:500])
    digest = await asyncio.to_thread(quality.video_digest, path)
    scores = None
    if score is not None and score.enabled:
        scores = await asyncio.to_thread(
            quality.measure,
            path,
            prep.workload.path,
            seen.width,
            seen.height,
            vmaf_ffmpeg=score.vmaf_ffmpeg,
            vmaf_subsample=score.vmaf_subsample,
        )
    return Output(
        name=target.name,
        width=seen.width,
        height=seen.height,
        duration_s=seen.duration_s,
        bytes=path.stat().st_size,
        bitrate_kbps=seen.bitrate_kbps,
        valid=True,
        digest=digest,
        quality=scores,
    )


async def check_outputs(
    paths: dict[str, Path], prep: Prepared, score: QualityConfig | None = None
) -> list[Output]:
    return [await check_output(paths[t.name], t, prep, score) for t in prep.plan.targets]


def source_reads(
    requests: list[Request], bucket: str, key: str, size: int, transcode_at: float | None
) -> SourceReads:
    """Sum what the emulator served for ``key``; reads before ``transcode_at`` were the probe's.

    With the gateway every read is the worker's own (botocore); with a presigned URL they are
    libavformat's (``Lavf``), which the ``ffmpeg_*`` fields count apart.
    """
    gets = [r for r in requests if r.method == "GET" and r.path == f"/{bucket}/{key}"]
    lavf = [r for r in gets if r.by_ffmpeg]
    probing = [r for r in gets if transcode_at is not None and r.at < transcode_at]
    return SourceReads(
        object_bytes=size,
        body_bytes=sum(r.body_bytes for r in gets),
        requests=len(gets),
        ffmpeg_body_bytes=sum(r.body_bytes for r in lavf),
        ffmpeg_requests=len(lavf),
        probe_body_bytes=sum(r.body_bytes for r in probing),
        probe_requests=len(probing),
    )


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
