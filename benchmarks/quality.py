"""Objective quality of a rendition against its source: PSNR, SSIM and (when available) VMAF.

The reference is the source decoded and scaled (bicubic) to the rendition's size, so the scores
measure what the encode lost, not what downscaling discarded. Both streams are re-timed to start
at zero so an MPEG-PS start offset does not misalign frames.

PSNR and SSIM come from ffmpeg's ``psnr`` and ``ssim`` filters (any ffmpeg build has them): the
PSNR reported is the luma (Y) PSNR, the SSIM is ffmpeg's ``All`` (planes weighted). VMAF
needs an ffmpeg built with libvmaf: :func:`find_vmaf_ffmpeg` checks an explicit binary, then the
``ffmpeg`` on ``PATH``, then the static binary inside the ``imageio-ffmpeg`` wheel when that
package is installed. Without one, VMAF is ``None`` and reports say "n/a".
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VMAF_MODEL = "vmaf_v0.6.1"
_TIMEOUT_S = 1800
_PSNR = re.compile(r"PSNR y:([0-9.]+|inf)")
_SSIM = re.compile(r"SSIM .*?All:([0-9.]+)")
_VMAF = re.compile(r"VMAF score[:=]\s*([0-9.]+)")


@dataclass(frozen=True, slots=True)
class Quality:
    """Scores of one rendition; ``vmaf`` is None when no libvmaf-capable ffmpeg was found."""

    psnr_db: float | None  # luma
    ssim: float | None
    vmaf: float | None


def has_libvmaf(binary: str) -> bool:
    try:
        listed = subprocess.run(
            [binary, "-hide_banner", "-filters"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(r"^\s*\S+\s+libvmaf\s", listed.stdout, re.MULTILINE) is not None


def _imageio_ffmpeg() -> str | None:
    try:
        module = importlib.import_module("imageio_ffmpeg")
    except ImportError:
        return None
    try:
        return str(module.get_ffmpeg_exe())
    except RuntimeError:
        return None


def find_vmaf_ffmpeg(explicit: str | None = None) -> str | None:
    """The first ffmpeg with the libvmaf filter: ``explicit``, PATH's, imageio-ffmpeg's."""
    candidates = [explicit, shutil.which("ffmpeg"), _imageio_ffmpeg()]
    for binary in candidates:
        if binary and has_libvmaf(binary):
            return binary
    return None


def _graph(width: int, height: int, vmaf_subsample: int | None) -> str:
    reference = f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p,setpts=PTS-STARTPTS"
    outputs = 3 if vmaf_subsample else 2
    graph = (
        f"[0:v]format=yuv420p,setpts=PTS-STARTPTS,split={outputs}[d0][d1]{'[d2]' * (outputs - 2)};"
        f"[1:v]{reference},split={outputs}[r0][r1]{'[r2]' * (outputs - 2)};"
        "[d0][r0]psnr;[d1][r1]ssim"
    )
    if vmaf_subsample:
        graph += f";[d2][r2]libvmaf=model=version={VMAF_MODEL}:n_subsample={vmaf_subsample}"
    return graph


def _score(pattern: re.Pattern[str], text: str) -> float | None:
    found = pattern.findall(text)
    if not found:
        return None
    value = found[-1]
    return float("inf") if value == "inf" else float(value)


def parse_scores(stderr: str) -> Quality:
    """Read the filters' summary lines (pure; tested on captured ffmpeg output)."""
    return Quality(_score(_PSNR, stderr), _score(_SSIM, stderr), _score(_VMAF, stderr))


def measure(
    rendition: Path,
    source: Path,
    width: int,
    height: int,
    *,
    ffmpeg: str = "ffmpeg",
    vmaf_ffmpeg: str | None = None,
    vmaf_subsample: int = 1,
) -> Quality:
    """Score ``rendition`` (``width`` x ``height``) against ``source``; one decode of each."""
    binary = vmaf_ffmpeg or ffmpeg
    command = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]
    command += ["-i", str(rendition), "-i", str(source), "-filter_complex"]
    command += [_graph(width, height, vmaf_subsample if vmaf_ffmpeg else None), "-f", "null", "-"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"quality measurement failed: {done.stderr.strip()[-800:]}")
    scores = parse_scores(done.stderr)
    return scores if vmaf_ffmpeg else Quality(scores.psnr_db, scores.ssim, None)


def video_digest(path: Path, ffmpeg: str = "ffmpeg") -> str:
    """MD5 of the video bitstream (packets, not container), to prove two encodes are identical."""
    command = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path)]
    command += ["-map", "0:v:0", "-c", "copy", "-f", "md5", "-"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return done.stdout.strip().removeprefix("MD5=") if done.returncode == 0 else ""
