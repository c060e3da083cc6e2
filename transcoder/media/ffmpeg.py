"""FFmpeg argument building (pure, built with ffmpeg-python, tested by list equality).

One process decodes the source once, ``split``s the picture into one scaler and one x264 encoder per
rendition, encodes the audio once, and writes every rendition through the ``tee`` muxer, so the
shared AAC packets go into each MP4 without a second encode. Each MP4 is written to local scratch
with ``+faststart`` (moov before mdat) so players can start before the whole file arrives. The
same ``tee`` also writes each rendition's HLS stream from those packets (``hls.tee_slaves``).

Before the split, the picture is deinterlaced (``bwdif``, frames flagged interlaced only), made
constant-rate when the plan says so (``fps``), and converted to BT.709 SDR when the source is HDR
or BT.2020 (``zscale`` + ``tonemap``). Rotation needs no filter: ffmpeg applies the display matrix
on decode (autorotate) and writes none to the output. ``-max_error_rate`` turns a source whose
frames mostly fail to decode into exit status 69 (``undecodable``) instead of a glitchy rendition.

The poster and the thumbnail sprite are two more branches of the same split, written as image
outputs of the same process (``transcoder.media.stills``): no second decode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from transcoder.media import hls
from transcoder.media.hls import HlsOutput
from transcoder.media.ladder import ColourIn, Plan
from transcoder.media.probe import MAX_DECODE_ERROR_RATE
from transcoder.media.stills import BRANCHES, Stills
from transcoder.media.stills import outputs as still_outputs

# Reading from a presigned S3 URL: seekable HTTP with range requests (moov-at-end MP4 works),
# reconnect on network errors and on 5xx, and never hang forever on a dead socket.
HTTP_INPUT_OPTIONS: Mapping[str, str] = {
    "reconnect": "1",
    "reconnect_on_network_error": "1",
    "reconnect_on_http_error": "5xx",
    "reconnect_delay_max": "10",
    "rw_timeout": "30000000",
}

# HDR -> SDR: linearise with the source's own description (so zscale never guesses), treating
# 203 cd/m2 as SDR white (ITU-R BT.2408 reference white), convert the primaries to BT.709 in
# linear light, roll the highlights off (mobius keeps everything below the knee linear, so
# mid-tones and saturation survive: no washed-out look), then encode with the BT.709 curve.
REFERENCE_WHITE_NITS = 203


def colour_chain(colour: ColourIn) -> list[tuple[str, dict[str, str]]]:
    """The filters that bring ``colour`` to 8-bit BT.709 SDR (zscale + tonemap)."""
    source = {"tin": colour.transfer, "pin": colour.primaries, "min": colour.matrix}
    if not colour.tonemap:
        return [
            ("zscale", {**source, "t": "bt709", "p": "bt709", "m": "bt709", "r": "tv"}),
            ("format", {"pix_fmts": "yuv420p"}),
        ]
    return [
        ("zscale", {**source, "t": "linear", "npl": str(REFERENCE_WHITE_NITS)}),
        ("format", {"pix_fmts": "gbrpf32le"}),
        ("zscale", {"p": "bt709"}),
        ("tonemap", {"tonemap": "mobius", "desat": "0"}),
        ("zscale", {"t": "bt709", "m": "bt709", "r": "tv"}),
        ("format", {"pix_fmts": "yuv420p"}),
    ]


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
    if plan.colour is not None:
        for name, options in colour_chain(plan.colour):
            stream = stream.filter(name, **options)
    return stream


def _tee_spec(plan: Plan, outputs: Mapping[str, Path], hls_output: HlsOutput | None) -> str:
    audio = ",a" if plan.audio_index is not None else ""
    slaves = []
    for index, target in enumerate(plan.targets):
        select = f"\\'v:{index}{audio}\\'"
        slaves.append(f"[f=mp4:movflags=+faststart:select={select}]{outputs[target.name]}")
    if hls_output is not None:
        slaves += hls.tee_slaves(plan, hls_output)
    return "|".join(slaves)


def _rate_options(plan: Plan) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for index, target in enumerate(plan.targets):
        options[f"crf:v:{index}"] = target.crf
        options[f"maxrate:v:{index}"] = f"{target.maxrate_kbps}k"
        options[f"bufsize:v:{index}"] = f"{target.bufsize_kbps}k"
    return options


def _split(video: Any, count: int) -> list[Any]:
    if count == 1:
        return [video]
    split = video.filter_multi_output("split", count)
    return [split.stream(i) for i in range(count)]


def _scaled(branches: list[Any], plan: Plan) -> list[Any]:
    """One branch per rendition: scaled to its size, square pixels, 8-bit 4:2:0."""
    return [
        branch.filter("scale", target.width, target.height)
        .filter("setsar", "1")
        .filter("format", "yuv420p")
        for branch, target in zip(branches, plan.targets, strict=True)
    ]


def _encode_options(plan: Plan, options: EncodeOptions) -> dict[str, Any]:
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
    if plan.to_bt709:
        encode.update(
            color_primaries="bt709", color_trc="bt709", colorspace="bt709", color_range="tv"
        )
    if plan.audio_index is not None:
        encode.update({"c:a": "aac", "b:a": f"{options.audio_bitrate_kbps}k", "ac": 2})
    return encode


def build_args(
    input_url: str,
    plan: Plan,
    outputs: Mapping[str, Path],
    options: EncodeOptions,
    *,
    hls_output: HlsOutput | None = None,
    stills: Stills | None = None,
    binary: str = "ffmpeg",
) -> list[str]:
    """The complete ffmpeg command line for ``plan``; ``outputs`` maps rendition name -> path.

    With ``hls_output``, the same packets are also muxed into each rendition's HLS stream.
    With ``stills``, two more branches of the same picture write the poster and the sprite
    (``transcoder.media.stills``); the renditions stay the first output, so ``-progress``
    reports their frames.
    """
    http = input_url.startswith(("http://", "https://"))
    source = ffmpeg.input(input_url, **(HTTP_INPUT_OPTIONS if http else {}))
    renditions = len(plan.targets)
    branches = _split(_video_chain(source, plan), renditions + (BRANCHES if stills else 0))
    streams = _scaled(branches[:renditions], plan)
    if plan.audio_index is not None:
        streams.append(source[str(plan.audio_index)])
    output = ffmpeg.output(
        *streams,
        _tee_spec(plan, outputs, hls_output),
        format="tee",
        **_encode_options(plan, options),
    )
    if stills is not None:
        output = ffmpeg.merge_outputs(output, *still_outputs(branches[renditions:], stills))
    args: list[str] = output.global_args(
        "-nostdin",
        "-hide_banner",
        *("-loglevel", "error", "-progress", "pipe:1", "-nostats"),
        *("-max_error_rate", f"{MAX_DECODE_ERROR_RATE:g}"),
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
