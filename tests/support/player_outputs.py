"""A completed job's outputs, made with plain ffmpeg, in the layout the worker publishes.

The player page and its browser test need a poster, a sprite with its WebVTT index and an fMP4 HLS
tree before the worker makes them (other branches of issue 16). This builds exactly that layout
(``/work/briefs/layout.md``, ``transcoder.domain.job``'s key helpers) under a local folder whose
paths are the S3 keys, and returns the ``COMPLETED`` record that would describe it. Small on
purpose: two renditions at 240p and 360p of a few seconds of real footage, so both encodes take
about a second; the page does not care about the sizes, only that the two differ.

The browser test uploads the tree to the emulator and runs the demo's own export over it; once the
worker produces these outputs, a real ``transcoder demo --out DIR`` can replace this builder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from transcoder.domain.job import (
    HlsRecord,
    HlsVariant,
    PosterRecord,
    RenditionRecord,
    RenditionStatus,
    Status,
    ThumbnailsRecord,
    hls_prefix,
    output_key,
    poster_key,
    thumbnails_prefix,
)
from transcoder.domain.record import JobRecord

SEGMENT_S = 2.0
FPS = 25
# name -> (width, height); the picker and the switch assertion need two different sizes.
LADDER = {"240p": (428, 240), "360p": (640, 360)}
TILE = (160, 90)
COLUMNS = 4
INTERVAL_S = 1.0
PROFILES = {"High": "6400", "Main": "4d40", "Constrained Baseline": "42e0"}


def run(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, cwd=cwd, timeout=120)


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    ).stdout
    facts: dict[str, object] = json.loads(out)
    return facts


def encode(clip: Path, target: Path, size: tuple[int, int], loops: int) -> None:
    """H.264 High + AAC, closed 2 s GOPs (as the worker's renditions), faststart."""
    target.parent.mkdir(parents=True, exist_ok=True)
    gop = str(int(SEGMENT_S * FPS))
    run(
        *("-stream_loop", str(loops - 1), "-i", str(clip)),
        *("-vf", f"scale={size[0]}:{size[1]},setsar=1,fps={FPS}", "-c:v", "libx264"),
        *("-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p"),
        *("-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-flags", "+cgop"),
        *("-c:a", "aac", "-ac", "2", "-b:a", "96k", "-movflags", "+faststart", str(target)),
    )


def segment(mp4: Path, folder: Path) -> int:
    """The rendition as fMP4 HLS (its packets copied: segments cut at the GOPs); segment count."""
    folder.mkdir(parents=True, exist_ok=True)
    run(
        *("-i", str(mp4), "-c", "copy", "-f", "hls", "-hls_time", str(SEGMENT_S)),
        *("-hls_playlist_type", "vod", "-hls_segment_type", "fmp4"),
        *("-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", "seg_%05d.m4s"),
        "index.m3u8",
        cwd=folder,
    )
    return len(list(folder.glob("seg_*.m4s")))


def codecs(facts: dict[str, object]) -> str:
    streams = facts["streams"]
    assert isinstance(streams, list)
    video = next(s for s in streams if s["codec_type"] == "video")
    text = f"avc1.{PROFILES[video['profile']]}{int(video['level']):02x}"
    return text + (",mp4a.40.2" if any(s["codec_type"] == "audio" for s in streams) else "")


def stamp(seconds: float) -> str:
    minutes, millis = divmod(round(seconds * 1000), 60_000)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def thumbnails(
    clip: Path, root: Path, user: str, video: str, loops: int, duration_s: float
) -> ThumbnailsRecord:
    """One tile per second in a sprite, and the WebVTT that indexes it (cues 0 -> duration)."""
    prefix = thumbnails_prefix(user, video)
    folder = root / prefix
    folder.mkdir(parents=True, exist_ok=True)
    count = int(-(-duration_s // INTERVAL_S))
    rows = -(-count // COLUMNS)
    run(
        *("-stream_loop", str(loops - 1), "-i", str(clip), "-an"),
        *("-vf", f"fps=1/{INTERVAL_S},scale={TILE[0]}:{TILE[1]},tile={COLUMNS}x{rows}"),
        *("-frames:v", "1", str(folder / "sprite.jpg")),
    )
    lines = ["WEBVTT", ""]
    for index in range(count):
        x, y = index % COLUMNS * TILE[0], index // COLUMNS * TILE[1]
        end = min((index + 1) * INTERVAL_S, duration_s)
        lines += [f"{stamp(index * INTERVAL_S)} --> {stamp(end)}"]
        lines += [f"sprite.jpg#xywh={x},{y},{TILE[0]},{TILE[1]}", ""]
    (folder / "thumbnails.vtt").write_text("\n".join(lines))
    return ThumbnailsRecord(
        sprite_key=prefix + "sprite.jpg",
        vtt_key=prefix + "thumbnails.vtt",
        interval_s=INTERVAL_S,
        count=count,
        tile_width=TILE[0],
        tile_height=TILE[1],
        columns=COLUMNS,
        rows=rows,
        bytes=(folder / "sprite.jpg").stat().st_size,
    )


# Over 40 lines: one recipe read top to bottom, the record assembled from what was made.
def build(
    clip: Path, root: Path, *, user: str = "demo", video: str = "bunny", loops: int = 2
) -> JobRecord:
    """Make every output of one completed job under ``root`` (paths = S3 keys); its record."""
    renditions: dict[str, RenditionRecord] = {}
    variants: dict[str, HlsVariant] = {}
    hls = hls_prefix(user, video)
    master = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    duration_s = 0.0
    for name, (width, height) in LADDER.items():
        key = output_key(name, user, video)
        mp4 = root / key
        encode(clip, mp4, (width, height), loops)
        facts = probe(mp4)
        fmt = facts["format"]
        assert isinstance(fmt, dict)
        duration_s = float(fmt["duration"])
        size = mp4.stat().st_size
        bandwidth = int(float(fmt["bit_rate"]) * 1.2)
        renditions[name] = RenditionRecord(
            status=RenditionStatus.COMPLETED,
            key=key,
            width=width,
            height=height,
            duration_s=duration_s,
            bytes=size,
            bitrate_kbps=bandwidth // 1200,
        )
        segments = segment(mp4, root / hls / name)
        tree = sum(p.stat().st_size for p in (root / hls / name).iterdir())
        variants[name] = HlsVariant(
            playlist_key=f"{hls}{name}/index.m3u8",
            segments=segments,
            bandwidth=bandwidth,
            codecs=codecs(facts),
            width=width,
            height=height,
            bytes=tree,
        )
        master += [
            f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={width}x{height},"
            f'CODECS="{codecs(facts)}",FRAME-RATE={FPS:.3f}',
            f"{name}/index.m3u8",
        ]
    (root / hls / "master.m3u8").write_text("\n".join(master) + "\n")
    top = list(LADDER)[-1]
    poster = root / poster_key(user, video)
    poster.parent.mkdir(parents=True, exist_ok=True)
    run("-ss", "1.5", "-i", str(root / output_key(top, user, video)), "-frames:v", "1", str(poster))
    return JobRecord(
        user_id=user,
        video_id=video,
        status=Status.COMPLETED,
        job_id="0" * 32,
        renditions=renditions,
        poster=PosterRecord(
            key=poster_key(user, video),
            width=LADDER[top][0],
            height=LADDER[top][1],
            bytes=poster.stat().st_size,
        ),
        thumbnails=thumbnails(clip, root, user, video, loops, duration_s),
        hls=HlsRecord(master_key=f"{hls}master.m3u8", segment_s=SEGMENT_S, variants=variants),
    )


CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".vtt": "text/vtt",
}


def content_type(path: Path) -> str:
    """The Content-Type the worker sets for each kind of output (layout.md)."""
    return CONTENT_TYPES[path.suffix]
