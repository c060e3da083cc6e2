"""FFmpeg argument building (pure, built with ffmpeg-python, tested by list equality).

One process decodes the source once, ``split``s the picture into one scaler and one x264 encoder per
rendition, encodes the audio once, and writes every rendition through the ``tee`` muxer, so the
shared AAC packets go into each MP4 without a second encode. Each MP4 is written to local scratch
with ``+faststart`` (moov before mdat) so players can start before the whole file arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from transcoder.ladder import Plan

# Reading from a presigned S3 URL: seekable HTTP with range requests (moov-at-end MP4 works),
# reconnect on network errors and on 5xx, and never hang forever on a dead socket.
HTTP_INPUT_OPTIONS: Mapping[str, str] = {
    "reconnect": "1",
    "reconnect_on_network_error": "1",
    "reconnect_on_http_error": "5xx",
    "reconnect_delay_max": "10",
    "rw_timeout": "30000000",
}

TONEMAP_CHAIN = (
    ("zscale", {"t": "linear", "npl": "100"}),
    ("format", {"pix_fmts": "gbrpf32le"}),
    ("zscale", {"p": "bt709"}),
    ("tonemap", {"tonemap": "hable", "desat": "0"}),
    ("zscale", {"t": "bt709", "m": "bt709", "r": "tv"}),
)


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """Encoder settings that are not per rendition."""

    preset: str = "veryfast"
    audio_bitrate_kbps: int = 128
    threads: int = 0


def _video_chain(source: Any, plan: Plan) -> Any:
    stream = source[str(plan.video_index)]
    if plan.deinterlace:
        stream = stream.filter("bwdif", mode="send_frame", parity="auto", deint="interlaced")
    if plan.output_fps:
        stream = stream.filter("fps", fps=f"{plan.output_fps:.6g}")
    if plan.tonemap:
        for name, options in TONEMAP_CHAIN:
            stream = stream.filter(name, **options)
    return stream


def _tee_spec(plan: Plan, outputs: Mapping[str, Path]) -> str:
    audio = ",a" if plan.audio_index is not None else ""
    slaves = []
    for index, target in enumerate(plan.targets):
        select = f"\\'v:{index}{audio}\\'"
        slaves.append(f"[f=mp4:movflags=+faststart:select={select}]{outputs[target.name]}")
    return "|".join(slaves)


def _rate_options(plan: Plan) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for index, target in enumerate(plan.targets):
        options[f"crf:v:{index}"] = target.crf
        options[f"maxrate:v:{index}"] = f"{target.maxrate_kbps}k"
        options[f"bufsize:v:{index}"] = f"{target.bufsize_kbps}k"
    return options


def build_args(
    input_url: str,
    plan: Plan,
    outputs: Mapping[str, Path],
    options: EncodeOptions,
    *,
    binary: str = "ffmpeg",
) -> list[str]:
    """The complete ffmpeg command line for ``plan``; ``outputs`` maps rendition name -> path."""
    http = input_url.startswith(("http://", "https://"))
    source = ffmpeg.input(input_url, **(HTTP_INPUT_OPTIONS if http else {}))
    video = _video_chain(source, plan)
    if len(plan.targets) > 1:
        split = video.filter_multi_output("split", len(plan.targets))
        branches = [split.stream(i) for i in range(len(plan.targets))]
    else:
        branches = [video]
    streams = [
        branch.filter("scale", target.width, target.height)
        .filter("setsar", "1")
        .filter("format", "yuv420p")
        for branch, target in zip(branches, plan.targets, strict=True)
    ]
    encode: dict[str, Any] = {
        "c:v": "libx264",
        "preset": options.preset,
        "profile:v": "high",
        "g": plan.keyint,
        "keyint_min": plan.keyint,
        "sc_threshold": 0,
        "flags": "+cgop",
        "map_metadata": -1,
        "map_chapters": -1,
        "threads": options.threads,
        **_rate_options(plan),
    }
    if plan.tonemap:
        encode.update(color_primaries="bt709", color_trc="bt709", colorspace="bt709")
    if plan.audio_index is not None:
        streams.append(source[str(plan.audio_index)])
        encode.update({"c:a": "aac", "b:a": f"{options.audio_bitrate_kbps}k", "ac": 2})
    output = ffmpeg.output(*streams, _tee_spec(plan, outputs), format="tee", **encode)
    args: list[str] = output.global_args(
        "-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1", "-nostats"
    ).compile(cmd=binary, overwrite_output=True)
    return args


@dataclass(frozen=True, slots=True)
class ProgressSample:
    """One ``-progress`` block: frames written and media time reached so far."""

    frame: int
    out_time_s: float
    speed: float | None
    done: bool


def parse_progress_block(fields: Mapping[str, str]) -> ProgressSample:
    """Fields of one block of ``-progress pipe:1`` output (ends with ``progress=continue|end``)."""
    out_time_us = fields.get("out_time_us") or fields.get("out_time_ms") or "0"
    speed_text = fields.get("speed", "").rstrip("x").strip()
    try:
        speed = float(speed_text) if speed_text not in ("", "N/A") else None
    except ValueError:
        speed = None
    try:
        out_time_s = max(0.0, int(out_time_us) / 1_000_000)
    except ValueError:
        out_time_s = 0.0
    frame = fields.get("frame", "0")
    return ProgressSample(
        frame=int(frame) if frame.isdigit() else 0,
        out_time_s=out_time_s,
        speed=speed,
        done=fields.get("progress") == "end",
    )
