"""Synthetic test footage made with ffmpeg at test time, cached across runs.

A fault scenario needs a job that lasts long enough to interrupt; a 1280x720 ``testsrc2`` clip
with a tone, encoded by a worker with one x264 thread, gives a few seconds of encode per 10 s of
footage on a loaded 2-core machine. Clips are built once and kept under the system temp dir.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "transcoder-fault-clips"


def clip(
    seconds: float,
    width: int = 1280,
    height: int = 720,
    *,
    audio: bool = True,
    layout: str = "faststart",
) -> Path:
    """An H.264/AAC file of ``seconds`` of moving test pattern (built on first use).

    ``layout``: ``faststart`` (MP4, ``moov`` first), ``moov-at-end`` (MP4 as a camera writes it:
    readers must seek to the end first) or ``mpeg-ps`` (an MPEG program stream, MPEG-2 video).
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    suffix = ".mpg" if layout == "mpeg-ps" else ".mp4"
    name = f"testsrc2-{width}x{height}-{seconds:g}s{'-a' if audio else ''}-{layout}{suffix}"
    path = CACHE / name
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes never build the same clip at once
        if not path.exists():
            _build(path, seconds, width, height, audio=audio, layout=layout)
    return path


def _build(
    path: Path, seconds: float, width: int, height: int, *, audio: bool, layout: str
) -> None:
    partial = path.with_suffix(f".{os.getpid()}.part{path.suffix}")
    if layout == "mpeg-ps":
        command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi"]
        command += ["-i", f"testsrc2=size={width}x{height}:rate=25:duration={seconds:g}"]
        command += ["-c:v", "mpeg2video", "-q:v", "8", "-an", "-f", "vob", str(partial)]
        subprocess.run(command, check=True, timeout=300)
        partial.rename(path)
        return
    command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi"]
    command += ["-i", f"testsrc2=size={width}x{height}:rate=25:duration={seconds:g}"]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds:g}"]
        command += ["-c:a", "aac", "-b:a", "64k"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-g", "50"]
    command += ["-pix_fmt", "yuv420p"]
    command += ["-movflags", "+faststart"] if layout == "faststart" else []
    command += [str(partial)]
    subprocess.run(command, check=True, timeout=300)
    partial.rename(path)
