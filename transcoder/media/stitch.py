"""Checks on chunks and on the stitched rendition (pure), and the thin shells that run them.

A stitched rendition must be indistinguishable in its timing from a single pass: its video
packets' presentation times are exactly the frames ``0..n-1`` of the output rate (a gap means a
lost frame, a duplicate an overlap at a boundary), decode times strictly increase, keyframes sit
exactly on the GOP grid (``0, keyint, 2*keyint, ...``), and the frame count is the sum of the
chunks', each closed chunk holding exactly its planned frames. Chunks of one rendition must share
their codec parameters (size, profile, level, reordering and the SPS/PPS bytes), since the
stitched MP4 carries only the first chunk's. The publish gate (``verify.check``) comes on top.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from transcoder.domain.errors import FfmpegFailed, OutputInvalid
from transcoder.media import encoder
from transcoder.media.chunks import ChunkPlan, concat_list, stitch_args
from transcoder.media.progress import Progress

# What must be equal across one rendition's chunks for a bitstream copy to play as one stream.
SHARED_PARAMETERS = (
    "codec_name",
    "profile",
    "level",
    "width",
    "height",
    "pix_fmt",
    "has_b_frames",
    "time_base",
    "extradata_hash",
)
_PACKET_ENTRIES = (
    "packet=pts,dts,flags:stream=index,codec_name,profile,level,width,height,pix_fmt,"
    "time_base,start_time,nb_frames,has_b_frames,extradata_hash"
)
_SHOWN = 3  # how many offending frames a problem names


@dataclass(frozen=True, slots=True)
class Timeline:
    """The video packets of one file, as output frame indices."""

    frames: int
    keyframes: tuple[int, ...]
    problems: tuple[str, ...]


def _frame_indices(packets: list[dict[str, Any]], tick_frames: Fraction) -> tuple[list[int], int]:
    """Each packet's frame index from its pts (first frame = 0), and how many are off the grid."""
    pts = [int(p["pts"]) for p in packets]
    first = min(pts)
    exact = [(value - first) * tick_frames for value in pts]
    indices = [round(x) for x in exact]
    off_grid = sum(1 for x, i in zip(exact, indices, strict=True) if abs(x - i) > Fraction(1, 100))
    return indices, off_grid


def _order_problems(indices: list[int], rate: Fraction) -> list[str]:
    problems: list[str] = []
    present = set(indices)
    missing = [i for i in range(max(present) + 1) if i not in present][:_SHOWN]
    if missing:
        at = ", ".join(f"{float(i / rate):.3f}s" for i in missing)
        problems.append(f"timestamp gap: no frame at {at}")
    if len(present) != len(indices):
        repeated = sorted(i for i, n in Counter(indices).items() if n > 1)[:_SHOWN]
        at = ", ".join(f"{float(i / rate):.3f}s" for i in repeated)
        problems.append(f"timestamp overlap: two frames at {at}")
    return problems


def timeline(probe: dict[str, Any], rate: Fraction) -> Timeline:
    """Read ffprobe's packets (:func:`probe_packets`) of the first video stream at ``rate``."""
    packets = [p for p in probe.get("packets", []) if "pts" in p and "dts" in p]
    if not packets:
        return Timeline(0, (), ("no video packets with timestamps",))
    time_base = Fraction(str(probe["streams"][0]["time_base"]))
    indices, off_grid = _frame_indices(packets, time_base * rate)
    problems = _order_problems(indices, rate)
    if off_grid:
        problems.append(f"{off_grid} frames off the {float(rate):.3f} fps grid")
    dts = [int(p["dts"]) for p in packets]
    backwards = sum(1 for a, b in itertools.pairwise(dts) if b <= a)
    if backwards:
        problems.append(f"decode timestamps not increasing at {backwards} packets")
    keyframes = tuple(sorted(i for i, p in zip(indices, packets, strict=True) if "K" in p["flags"]))
    return Timeline(len(packets), keyframes, tuple(problems))


def gop_problems(line: Timeline, keyint: int) -> list[str]:
    """Keyframes must be exactly the closed GOP grid a single pass has."""
    expected = tuple(range(0, line.frames, keyint))
    if line.keyframes == expected:
        return []
    extra = sorted(set(line.keyframes) - set(expected))[:_SHOWN]
    lacking = sorted(set(expected) - set(line.keyframes))[:_SHOWN]
    return [f"keyframes off the {keyint}-frame GOP grid (extra at {extra}, missing at {lacking})"]


def _stream(probe: dict[str, Any]) -> dict[str, Any]:
    streams = probe.get("streams") or [{}]
    return dict(streams[0])


def check_chunks(name: str, probes: Sequence[dict[str, Any]], chunks: ChunkPlan) -> list[int]:
    """Frames each chunk of rendition ``name`` contributes (post-roll excluded); OutputInvalid if
    one is not as planned."""
    problems: list[str] = []
    frames: list[int] = []
    first = _stream(probes[0]) if probes else {}
    for chunk, probe in zip(chunks.chunks, probes, strict=True):
        line = timeline(probe, chunks.rate)
        warmup = chunks.warmup(chunk)
        frames.append(line.frames - warmup if chunk.frames is None else chunk.frames)
        problems += [f"chunk {chunk.index}: {p}" for p in line.problems]
        extra = warmup + chunks.postroll_frames
        encoded = None if chunk.frames is None else chunk.frames + extra
        if encoded is not None and line.frames != encoded:
            problems.append(f"chunk {chunk.index}: {line.frames} frames, planned {encoded}")
        differing = [k for k in SHARED_PARAMETERS if _stream(probe).get(k) != first.get(k)]
        if differing:
            problems.append(f"chunk {chunk.index}: {', '.join(differing)} differ from chunk 0")
    if problems:
        raise OutputInvalid(f"{name} chunks: " + "; ".join(problems))
    return frames


def cut_us(probe: dict[str, Any], chunks: ChunkPlan, frames: int | None) -> int | None:
    """Where the post-roll starts in decode time (whole microseconds, rounded down so the IDR at
    the chunk's end is dropped and the frame decoded before it is kept); None: nothing to cut.

    The post-roll is the file's last ``postroll_frames`` frames: counting from the end finds the
    IDR whether or not the chunk was encoded with a warm-up before its ``frames`` frames.
    """
    if frames is None or not chunks.postroll_frames:
        return None
    packets = [p for p in probe.get("packets", []) if "pts" in p and "dts" in p]
    time_base = Fraction(str(_stream(probe)["time_base"]))
    first = min(int(p["pts"]) for p in packets)
    at = len(packets) - chunks.postroll_frames
    if at - frames not in {0, chunks.warmup_frames}:
        raise OutputInvalid(f"{len(packets)} frames: not {frames} + a post-roll (and warm-up)")
    for packet in packets:
        if (int(packet["pts"]) - first) * time_base * chunks.rate == at:
            return math.floor(int(packet["dts"]) * time_base * 1_000_000)
    raise OutputInvalid(f"no frame {at} to cut the post-roll at")


def check_stitched(name: str, probe: dict[str, Any], chunks: ChunkPlan, frames: int) -> Timeline:
    """The stitched rendition's timeline; OutputInvalid on a seam, a gap or a GOP off the grid."""
    line = timeline(probe, chunks.rate)
    problems = list(line.problems) + gop_problems(line, chunks.keyint)
    if line.frames != frames:
        problems.append(f"{line.frames} frames, the chunks hold {frames}")
    if problems:
        raise OutputInvalid(f"{name} stitched: " + "; ".join(problems))
    return line


async def probe_packets(path: Path, *, timeout_s: float = 120, ffprobe: str = "ffprobe") -> Any:
    """ffprobe JSON of the first video stream and its packets (pts, dts, flags)."""
    process = await asyncio.create_subprocess_exec(
        ffprobe,
        *("-v", "error", "-print_format", "json", "-select_streams", "v:0"),
        *("-show_entries", _PACKET_ENTRIES, "-show_data_hash", "md5", str(path)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise FfmpegFailed(f"ffprobe of {path.name}: {stderr.decode(errors='replace')[-300:]}")
    return json.loads(stdout or b"{}")


async def stitch(
    chunks: ChunkPlan,
    name: str,
    chunk_files: Sequence[Path],
    audio: Path | None,
    output: Path,
    *,
    binary: str = "ffmpeg",
) -> Timeline:
    """Check one rendition's chunks, join them with the audio into ``output``, check the seams."""
    probes = [await probe_packets(path) for path in chunk_files]
    frames = check_chunks(name, probes, chunks)
    cuts = [cut_us(p, chunks, c.frames) for p, c in zip(probes, chunks.chunks, strict=True)]
    script = output.with_suffix(".ffconcat")
    script.write_text(concat_list(chunks, chunk_files, cuts))
    await encoder.run(stitch_args(script, audio, output, binary=binary), Progress())
    return check_stitched(name, await probe_packets(output), chunks, sum(frames))


def chunk_path(work: Path, rendition: str, index: int) -> Path:
    """Where chunk ``index`` of ``rendition`` is written (``work/{rendition}/{index}.mp4``)."""
    return work / rendition / f"{index:05d}.mp4"


def chunk_outputs(work: Path, names: Sequence[str], index: int) -> Mapping[str, Path]:
    paths = {name: chunk_path(work, name, index) for name in names}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    return paths
