"""Benchmark workloads built with ffmpeg from the real sample footage, cached next to the samples.

Every workload is derived from a clip of :mod:`samples.build`:

* ``1080p-moov-end``: Big Buck Bunny (1280x720 25 fps) **upscaled** to 1920x1080 with lanczos and
  looped (``-stream_loop``) to the requested duration, H.264 CRF 18 + AAC, ``moov`` at the end.
  It is not native 1080p footage: the detail above 720p is interpolated, which makes it slightly
  easier to encode than real 1080p.
* ``1080p-faststart``: the same bytes remuxed with ``+faststart`` (``moov`` first).
* ``1080p-no-audio``: the same video without the audio stream (``moov`` at the end).
* ``1080p-grain``: the 1080p clip with temporal + uniform noise (``noise=alls=20:allf=t+u``),
  re-encoded at CRF 18: film grain is the classic hard case for x264.
* ``720p-native``: the Big Buck Bunny clip as shipped (5.3 s), cut when a shorter duration is
  asked for.
* ``mpeg2-ps``: ``cityCC0.mpg``, an MPEG-2 program stream (720x405, 7.6 s), cut likewise.
* ``control-1s``: one second of the ``bikes`` clip (640x272, no audio), for the control-plane run.

Files are built once per (name, duration, recipe version) and published with :func:`os.replace`,
so a reader never sees a partial file. ``python -m samples.workloads [--duration S] [NAME ...]``
builds them and prints ``name<TAB>path`` lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from samples.build import default_cache_dir, ensure_samples

__all__ = ["WORKLOADS", "Workload", "build_workloads", "workload_dir"]

RECIPE_VERSION: Final = 2
_BUILD_TIMEOUT_S: Final = 1800
_NATIVE_DURATION_S: Final = {"720p-native": 5.28, "mpeg2-ps": 7.6}


def _x264(crf: int) -> tuple[str, ...]:
    """Intermediate-quality H.264 with a 2 s GOP, as a phone or an editor would upload it."""
    return (
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        str(crf),
        "-g",
        "50",
        "-pix_fmt",
        "yuv420p",
    )


# The 1080p clips start from near-transparent quality (CRF 18). Grain is incompressible: CRF 18
# would make a ~90 Mbit/s file; CRF 23 (~23 Mbit/s) keeps the grain visible.
_MEZZANINE_VIDEO: Final = _x264(18)
_GRAIN_VIDEO: Final = _x264(23)


@dataclass(frozen=True, slots=True)
class Workload:
    """One benchmark input file."""

    name: str
    path: Path
    duration_s: float
    description: str


Recipe = Callable[[Path | None, float, Path], list[str]]
"""(samples cache dir, duration, destination) -> the ffmpeg arguments after ``ffmpeg -y``."""


def _sample(name: str, cache: Path | None) -> Path:
    return ensure_samples([name], cache)[name]


def _upscaled(cache: Path | None, duration_s: float, dest: Path) -> list[str]:
    return [
        *("-stream_loop", "-1", "-i", str(_sample("bigbuckbunny", cache))),
        *("-t", f"{duration_s:g}", "-vf", "scale=1920:1080:flags=lanczos,setsar=1"),
        *_MEZZANINE_VIDEO,
        *("-c:a", "aac", "-b:a", "192k", "-map_metadata", "-1", str(dest)),
    ]


def _from_base(*options: str) -> Recipe:
    def recipe(cache: Path | None, duration_s: float, dest: Path) -> list[str]:
        base = ensure_workload("1080p-moov-end", duration_s, cache).path
        return ["-i", str(base), *options, str(dest)]

    return recipe


def _cut(sample: str) -> Recipe:
    def recipe(cache: Path | None, duration_s: float, dest: Path) -> list[str]:
        return ["-i", str(_sample(sample, cache)), "-t", f"{duration_s:g}", "-c", "copy", str(dest)]

    return recipe


def _control(cache: Path | None, duration_s: float, dest: Path) -> list[str]:
    return [
        *("-i", str(_sample("bikes", cache)), "-t", "1"),
        *("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an", str(dest)),
    ]


@dataclass(frozen=True, slots=True)
class _Spec:
    suffix: str
    description: str
    recipe: Recipe
    native: str | None = None  # sample used as is when it is no longer than the duration


WORKLOADS: Final[dict[str, _Spec]] = {
    "1080p-moov-end": _Spec(
        ".mp4",
        "Big Buck Bunny upscaled 720p->1080p (lanczos), looped, H.264 CRF 18 + AAC 5.1, "
        "moov at end",
        _upscaled,
    ),
    "1080p-faststart": _Spec(
        ".mp4",
        "the 1080p clip remuxed with +faststart (moov first)",
        _from_base("-c", "copy", "-movflags", "+faststart"),
    ),
    "1080p-no-audio": _Spec(
        ".mp4", "the 1080p clip without audio, moov at end", _from_base("-c", "copy", "-an")
    ),
    "1080p-grain": _Spec(
        ".mp4",
        "the 1080p clip with added grain (noise=alls=20:allf=t+u), H.264 CRF 23 (~23 Mbit/s), "
        "moov at end",
        _from_base("-vf", "noise=alls=20:allf=t+u", *_GRAIN_VIDEO, "-c:a", "copy"),
    ),
    "720p-native": _Spec(
        ".mp4",
        "Big Buck Bunny 1280x720 25 fps H.264 + AAC as shipped, moov at end",
        _cut("bigbuckbunny"),
        native="bigbuckbunny",
    ),
    "mpeg2-ps": _Spec(
        ".mpg",
        "cityCC0.mpg: MPEG-2 video in an MPEG program stream, 720x405 25 fps, no audio",
        _cut("city"),
        native="city",
    ),
    "control-1s": _Spec(
        ".mp4", "1 s of the bikes clip (640x272, no audio), for control-plane runs", _control
    ),
}


def workload_dir(cache_dir: Path | None = None) -> Path:
    """Where built workloads live: ``<samples cache>/workloads``."""
    return (cache_dir if cache_dir is not None else default_cache_dir()) / "workloads"


def _file_name(name: str, duration_s: float) -> str:
    spec = WORKLOADS[name]
    return f"{name}-{duration_s:g}s-v{RECIPE_VERSION}{spec.suffix}"


def _build(recipe: Recipe, cache: Path | None, length_s: float, dest: Path, ffmpeg: str) -> None:
    """Run the recipe into a temporary file beside ``dest`` and publish it atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=dest.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    args = recipe(cache, length_s, tmp)
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
        )
        if done.returncode != 0 or tmp.stat().st_size == 0:
            raise RuntimeError(f"building {dest.name} failed: {done.stderr.strip()[-1500:]}")
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_workload(
    name: str, duration_s: float, cache_dir: Path | None = None, *, ffmpeg: str = "ffmpeg"
) -> Workload:
    """Return workload ``name`` lasting ``duration_s`` (native clips: at most their length)."""
    spec = WORKLOADS[name]
    native_s = _NATIVE_DURATION_S.get(name)
    if spec.native is not None and native_s is not None and duration_s >= native_s:
        return Workload(name, _sample(spec.native, cache_dir), native_s, spec.description)
    length_s = 1.0 if name == "control-1s" else duration_s
    root = workload_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / _file_name(name, length_s)
    if not dest.is_file() or dest.stat().st_size == 0:
        _build(spec.recipe, cache_dir, length_s, dest, ffmpeg)
    return Workload(name, dest, length_s, spec.description)


def build_workloads(
    names: Iterable[str] | None = None,
    *,
    duration_s: float = 30.0,
    cache_dir: Path | None = None,
    ffmpeg: str = "ffmpeg",
) -> dict[str, Workload]:
    """Build (or reuse) the named workloads; ``ValueError`` for an unknown name."""
    wanted = list(names) if names is not None else list(WORKLOADS)
    unknown = [n for n in wanted if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    return {n: ensure_workload(n, duration_s, cache_dir, ffmpeg=ffmpeg) for n in wanted}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m samples.workloads``: build workloads and print ``name<TAB>path`` lines."""
    parser = argparse.ArgumentParser(prog="python -m samples.workloads", description=__doc__)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--dir", type=Path, default=None, help="samples cache directory")
    parser.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    args = parser.parse_args(argv)
    try:
        built = build_workloads(args.names or None, duration_s=args.duration, cache_dir=args.dir)
    except ValueError as exc:
        parser.error(str(exc))
    for workload in built.values():
        sys.stdout.write(f"{workload.name}\t{workload.path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
