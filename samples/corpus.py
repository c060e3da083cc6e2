"""The conformance corpus: awkward and broken uploads, built from the real sample footage.

Every case is made on demand by transforming the clips of :mod:`samples.build` with ffmpeg (or by
cutting and overwriting bytes), so nothing large is committed. Clips are short (1-3 s) and small.
Each case carries what the pipeline must make of it (:class:`Expect`): the renditions and their
displayed sizes, or the reason code it must fail with on its first attempt.

Cases are cached under ``<cache>/corpus-<digest>/``, where the digest covers this module's own
source, so changing a recipe rebuilds the corpus and a stale one is never used. Building happens
under an exclusive lock; each file is built in a private temporary directory and moved into place
with :func:`os.replace`, so concurrent readers never see a partial file.

Usage::

    python -m samples.corpus [--dir DIR] [NAME ...]   # prints name<TAB>path lines

    from samples.corpus import CASES, ensure_corpus
    paths = ensure_corpus(["rotated_90", "truncated_faststart"])
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from samples.build import SampleUnavailable, default_cache_dir, ensure_samples, locked

__all__ = ["CASES", "Case", "CorpusError", "Expect", "corpus_dir", "ensure_corpus", "main"]

_FFMPEG_TIMEOUT_S: Final = 300
Size = tuple[int, int]
Recipe = Callable[[Mapping[str, Path], Path, Path], None]

X264: Final = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "28")
AAC: Final = ("-c:a", "aac", "-ac", "2", "-b:a", "64k")
# Mastering metadata as a real HDR10 camera file carries it (P3 primaries, 1000 nit peak).
HDR10_X265: Final = (
    "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:hdr10=1:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
    "max-cll=1000,400"
)


class CorpusError(RuntimeError):
    """A corpus case could not be built; the message names the case and ffmpeg's complaint."""


@dataclass(frozen=True, slots=True)
class Expect:
    """What the pipeline must make of a case.

    ``renditions`` maps rung -> displayed (width, height), or None when the rung is SKIPPED.
    ``fps`` is the output frame rate; ``bt709`` says the source was HDR/BT.2020 and the output
    must be converted and tagged BT.709.
    """

    status: Literal["COMPLETED", "FAILED"]
    reason: str | None = None
    renditions: Mapping[str, Size | None] = field(default_factory=dict)
    audio: bool = True
    fps: float | None = None
    bt709: bool = False


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    filename: str
    description: str
    samples: tuple[str, ...]
    build: Recipe
    expect: Expect


def _ok(
    sizes: Mapping[str, Size | None], *, fps: float = 25, audio: bool = True, bt709: bool = False
) -> Expect:
    return Expect("COMPLETED", None, dict(sizes), audio, fps, bt709)


def _failed(reason: str) -> Expect:
    return Expect("FAILED", reason, {}, False)


# --- ffmpeg and byte-level helpers -----------------------------------------------------------


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly (overwriting outputs); raise CorpusError with its stderr on failure."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_FFMPEG_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"`{' '.join(cmd)}` could not run: {exc}") from exc
    if proc.returncode != 0:
        raise CorpusError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-1500:]}")


def _bbb(src: Mapping[str, Path], seconds: float) -> tuple[str, ...]:
    return ("-i", str(src["bigbuckbunny"]), "-t", f"{seconds:g}")


def _cut(path: Path, out: Path, fraction: float) -> None:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])


def _mdat_payload(data: bytes) -> tuple[int, int]:
    """Start and end offsets of the first ``mdat`` box's payload."""
    at = data.find(b"mdat")
    if at < 4:
        raise CorpusError("no mdat box to corrupt")
    size = int.from_bytes(data[at - 4 : at], "big")
    return at + 4, min(len(data), at - 4 + size)


def _corrupt(path: Path, out: Path) -> None:
    """Overwrite every other 4 KiB block of the payload with (seeded) noise; headers stay intact."""
    data = bytearray(path.read_bytes())
    start, end = _mdat_payload(bytes(data))
    noise = random.Random(20240501)
    for offset in range(start + 4096, end - 4096, 8192):
        data[offset : offset + 4096] = noise.randbytes(4096)
    out.write_bytes(bytes(data))


def _rename_fourcc(path: Path, out: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    if data.count(old) != 1:
        raise CorpusError(f"expected one {old!r} sample entry in {path.name}")
    out.write_bytes(data.replace(old, new))


# --- recipes: (sample paths, scratch dir, output path) -----------------------------------------


def _rotated_90(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """1920x1080 H.264 with a 90-degree display matrix (a phone held upright)."""
    base = work / "landscape.mp4"
    ffmpeg(*_bbb(src, 2), "-vf", "scale=1920:1080,setsar=1", *X264, *AAC, base)
    # ffmpeg 5.1 turns the rotate tag into a display matrix rotating N degrees anticlockwise:
    # 270 gives the matrix phones write for portrait (ffprobe: rotation -90, i.e. turn 90 cw).
    ffmpeg("-i", base, "-c", "copy", "-metadata:s:v", "rotate=270", out)


def _portrait(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """True portrait: 720x1280 pixels."""
    ffmpeg(*_bbb(src, 2), "-vf", "transpose=clock,setsar=1", *X264, *AAC, out)


def _odd_444(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """853x481 yuv444p, H.264 High 4:4:4 Predictive."""
    video = "scale=853:481,setsar=1,format=yuv444p"
    ffmpeg(*_bbb(src, 2), "-vf", video, *X264, "-profile:v", "high444", *AAC, out)


def _tiny(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """160x90."""
    ffmpeg(*_bbb(src, 2), "-vf", "scale=160:90,setsar=1", *X264, *AAC, out)


def _uhd(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """3840x2160, 1 s."""
    ffmpeg(*_bbb(src, 1), "-vf", "scale=3840:2160,setsar=1", *X264[:-1], "35", *AAC, out)


def _fps60(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """1280x720 at 60 fps."""
    ffmpeg(*_bbb(src, 2), "-vf", "fps=60", *X264, *AAC, out)


def _fps120(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """640x360 at 120 fps (capped to 60)."""
    ffmpeg(*_bbb(src, 1), "-vf", "fps=120,scale=640:360,setsar=1", *X264, *AAC, out)


def _vfr(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """640x360 at 30, then 10, then 30 fps, 3 s: a variable frame rate."""
    # 30 fps for a second, every third frame (10 fps) for a second, 30 fps again: timestamps kept.
    keep = "select='lt(t\\,1)+gte(t\\,2)+not(mod(n\\,3))'"
    video = f"fps=30,scale=640:360,setsar=1,{keep}"
    ffmpeg(*_bbb(src, 3), "-vf", video, "-fps_mode", "vfr", *X264, *AAC, out)


def _interlaced_ts(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """MPEG-2 720x576i, SAR 64:45, top field first, MP2 audio, in MPEG-TS."""
    # A PAL broadcast capture: 720x576 anamorphic 16:9, 25 frames of two fields each, top field
    # first, MPEG-2 + MP2 in MPEG-TS. Reading the clip at 50 fps and weaving pairs of successive
    # pictures into fields gives real combing on motion (idet sees it), not just the flag.
    video = "scale=720:576,tinterlace=mode=interleave_top,setsar=64/45"
    mpeg2 = ("-c:v", "mpeg2video", "-b:v", "4M", "-flags", "+ilme+ildct", "-top", "1")
    audio = ("-c:a", "mp2", "-b:a", "128k", "-ac", "2")
    source = ("-r", "50", "-i", str(src["bigbuckbunny"]), "-t", "2")
    ffmpeg(*source, "-vf", video, *mpeg2, *audio, "-f", "mpegts", out)


def _hdr10(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """HEVC Main 10, PQ, BT.2020, HDR10 metadata, Opus audio, in Matroska."""
    # Real PQ code values (SDR white at 203 nits, BT.2408), not just tags on SDR pixels.
    to_pq = (
        "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=smpte2084:p=bt2020:m=bt2020nc:r=tv:npl=203,"
        "format=yuv420p10le"
    )
    tags = ("-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc")
    x265 = ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", HDR10_X265)
    opus = ("-c:a", "libopus", "-b:a", "64k", "-ac", "2")
    ffmpeg(*_bbb(src, 2), "-vf", to_pq, *x265, *tags, *opus, out)


def _hlg(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """H.264 High 10, HLG, BT.2020, 640x360, in QuickTime."""
    to_hlg = (
        "scale=640:360,setsar=1,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=arib-std-b67:"
        "p=bt2020:m=bt2020nc:r=tv:npl=203,format=yuv420p10le"
    )
    tags = ("-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc")
    ffmpeg(*_bbb(src, 1), "-vf", to_hlg, *X264, *tags, *AAC, out)


def _vp9_webm(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """VP9 + Opus 640x360 in WebM."""
    vp9 = ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k")
    opus = ("-c:a", "libopus", "-b:a", "48k", "-ac", "2")
    ffmpeg(*_bbb(src, 1), "-vf", "scale=640:360,setsar=1", *vp9, *opus, out)


def _mpeg4_avi(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """MPEG-4 Part 2 + MP3 320x180 in AVI."""
    mpeg4 = ("-c:v", "mpeg4", "-q:v", "5")
    mp3 = ("-c:a", "libmp3lame", "-b:a", "64k", "-ac", "2")
    ffmpeg(*_bbb(src, 1), "-vf", "scale=320:180,setsar=1", *mpeg4, *mp3, out)


def _copy_sample(name: str, about: str) -> Recipe:
    def recipe(src: Mapping[str, Path], work: Path, out: Path) -> None:
        shutil.copyfile(src[name], out)

    recipe.__doc__ = about
    return recipe


def _multi_audio(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """Two audio tracks: a silent first one, and the soundtrack flagged default."""
    # Track 1: silent commentary, not default; track 2: the soundtrack, flagged default.
    silence = ("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono")
    maps = ("-map", "0:v", "-map", "1:a", "-map", "0:a", "-t", "2")
    flags = ("-disposition:a:0", "0", "-disposition:a:1", "default")
    video = ("-vf", "scale=640:360,setsar=1")
    ffmpeg("-i", src["bigbuckbunny"], *silence, *maps, *video, *X264, *AAC, *flags, out)


def _faststart(src: Mapping[str, Path], out: Path) -> None:
    ffmpeg("-i", src["bigbuckbunny"], "-c", "copy", "-movflags", "+faststart", out)


def _truncated_moov_end(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """A moov-at-end MP4 cut in half."""
    _cut(src["bigbuckbunny"], out, 0.5)  # moov is at the end: it never arrived


def _truncated_faststart(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """A faststart MP4 cut at 55 %, in the middle of mdat."""
    _faststart(src, work / "fast.mp4")
    _cut(work / "fast.mp4", out, 0.55)  # the index promises 5.3 s, the payload holds ~2.4 s


def _empty(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """Zero bytes."""
    out.write_bytes(b"")


def _text(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """A text file named .mp4."""
    out.write_text("This is a shopping list, not a video.\n- milk\n- eggs\n", encoding="utf-8")


def _audio_only(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """An m4a (AAC only) renamed .mp4."""
    m4a = work / "soundtrack.m4a"
    ffmpeg("-i", src["bigbuckbunny"], "-vn", "-c:a", "copy", m4a)
    shutil.copyfile(m4a, out)


def _corrupted(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """A faststart MP4 with every other 4 KiB of its mdat payload overwritten by noise."""
    _faststart(src, work / "fast.mp4")
    _corrupt(work / "fast.mp4", out)


def _unknown_codec(src: Mapping[str, Path], work: Path, out: Path) -> None:
    """A MOV whose video sample entry is a codec no decoder knows (qqv1)."""
    mov = work / "video.mov"
    ffmpeg(*_bbb(src, 1), "-an", "-vf", "scale=320:180,setsar=1", *X264, mov)
    _rename_fourcc(mov, out, b"avc1", b"qqv1")  # a codec no decoder knows


BBB = ("bigbuckbunny",)
CITY = _copy_sample("city", "The city sample: MPEG-2 program stream 720x405, no audio.")
BIKES = _copy_sample("bikes", "The bikes sample: 640x272 H.264 without audio.")
BUNNY = _copy_sample("bigbuckbunny", "The bigbuckbunny sample: 1280x720, moov after mdat.")
LANDSCAPE = {"720p": (1280, 720), "1080p": (1920, 1080)}
PORTRAIT = {"720p": (720, 1280), "1080p": (1080, 1920)}


def _only(width: int, height: int) -> dict[str, Size | None]:
    """Below 1080p: one 720p rendition at the given size, 1080p skipped."""
    return {"720p": (width, height), "1080p": None}


def _case(
    name: str, ext: str, build: Recipe, expect: Expect, samples: tuple[str, ...] = BBB
) -> Case:
    return Case(name, f"{name}.{ext}", (build.__doc__ or "").strip(), samples, build, expect)


# fmt: off
CASES: Final[dict[str, Case]] = {c.name: c for c in (
    _case("rotated_90", "mp4", _rotated_90, _ok(PORTRAIT)),
    _case("portrait", "mp4", _portrait, _ok(_only(720, 1280))),
    _case("odd_444", "mp4", _odd_444, _ok(_only(852, 480))),
    _case("tiny", "mp4", _tiny, _ok(_only(160, 90))),
    _case("uhd_4k", "mp4", _uhd, _ok(LANDSCAPE)),
    _case("fps60", "mp4", _fps60, _ok(_only(1280, 720), fps=60)),
    _case("fps120", "mp4", _fps120, _ok(_only(640, 360), fps=60)),
    _case("vfr", "mp4", _vfr, _ok(_only(640, 360), fps=30)),
    _case("interlaced_ts", "ts", _interlaced_ts, _ok(_only(1024, 576))),
    _case("hdr10_hevc", "mkv", _hdr10, _ok(_only(1280, 720), bt709=True)),
    _case("hlg_mov", "mov", _hlg, _ok(_only(640, 360), bt709=True)),
    _case("vp9_webm", "webm", _vp9_webm, _ok(_only(640, 360))),
    _case("mpeg4_avi", "avi", _mpeg4_avi, _ok(_only(320, 180))),
    _case("mpeg2_ps", "mpg", CITY, _ok(_only(720, 404), audio=False), ("city",)),
    _case("no_audio", "mp4", BIKES, _ok(_only(640, 272), audio=False), ("bikes",)),
    _case("moov_at_end", "mp4", BUNNY, _ok(_only(1280, 720))),
    _case("multi_audio", "mp4", _multi_audio, _ok(_only(640, 360))),
    _case("truncated_moov_end", "mp4", _truncated_moov_end, _failed("truncated")),
    _case("truncated_faststart", "mp4", _truncated_faststart, _failed("truncated")),
    _case("empty", "mp4", _empty, _failed("input_empty"), ()),
    _case("text", "mp4", _text, _failed("not_a_video"), ()),
    _case("audio_only", "mp4", _audio_only, _failed("no_video_stream")),
    _case("corrupted", "mp4", _corrupted, _failed("undecodable")),
    _case("unknown_codec", "mov", _unknown_codec, _failed("unsupported_codec")),
)}
# fmt: on


# --- the cache ---------------------------------------------------------------------------------


def corpus_dir(cache_dir: Path | None = None) -> Path:
    """``<cache>/corpus-<digest of this module>``: a recipe change means a fresh directory."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return (cache_dir or default_cache_dir()).expanduser() / f"corpus-{digest}"


def _resolve(names: Iterable[str] | None) -> list[Case]:
    if names is None:
        return list(CASES.values())
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown corpus case(s) {unknown}; known: {', '.join(CASES)}")
    return [CASES[n] for n in dict.fromkeys(names)]


def _build(case: Case, sources: Mapping[str, Path], root: Path) -> None:
    """Build ``case`` in a private temporary directory, then move it into place atomically."""
    with tempfile.TemporaryDirectory(prefix=f".{case.name}-", dir=root) as tmp:
        work = Path(tmp)
        built = work / case.filename
        try:
            case.build(sources, work, built)
        except CorpusError as exc:
            raise CorpusError(f"corpus case {case.name!r}: {exc}") from exc
        built.chmod(0o644)
        built.replace(root / case.filename)


def ensure_corpus(
    names: Iterable[str] | None = None, cache_dir: Path | None = None
) -> dict[str, Path]:
    """Return ``{case: path}``, building only the cases not cached yet (under a lock)."""
    wanted = _resolve(names)
    root = corpus_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    if any(not (root / c.filename).exists() for c in wanted):
        with locked(root / ".lock"):
            missing = [c for c in wanted if not (root / c.filename).exists()]
            needed = sorted({s for c in missing for s in c.samples})
            sources = ensure_samples(needed, cache_dir) if needed else {}
            for case in missing:
                _build(case, sources, root)
    return {c.name: root / c.filename for c in wanted}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m samples.corpus [--dir DIR] [NAME ...]``: build and print name<TAB>path."""
    parser = argparse.ArgumentParser(prog="python -m samples.corpus", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="cache directory")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"cases (default: all of {', '.join(CASES)})"
    )
    args = parser.parse_args(argv)
    try:
        paths = ensure_corpus(args.names or None, args.dir)
    except (ValueError, CorpusError, SampleUnavailable) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2 if isinstance(exc, ValueError) else 1
    for name, path in paths.items():
        sys.stdout.write(f"{name}\t{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
