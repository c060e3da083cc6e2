"""The demo's player page: where each job's outputs go under ``--out DIR``, and ``index.html``.

A completed job's objects are laid out per video so that every relative reference in them still
works from disk: the HLS master names ``{rendition}/index.m3u8``, which names ``init.mp4`` and the
segments next to it; the WebVTT cues name ``sprite.jpg`` next to the VTT. So each prefix is kept
whole under one folder::

    DIR/index.html, player.js, player.css, hls.light.min.js, LICENSE.hls.js.txt
    DIR/{video}/{rendition}.mp4            <- transcoded/{rendition}/{user}/{video}.mp4
    DIR/{video}/poster.jpg                 <- transcoded/poster/{user}/{video}.jpg
    DIR/{video}/thumbnails/...             <- transcoded/thumbnails/{user}/{video}/...
    DIR/{video}/hls/...                    <- transcoded/hls/{user}/{video}/...

``index.html`` is plain HTML with one ``<section>`` per video whose ``data-*`` attributes hold
those relative paths; ``player.js`` (package data, next to this module) wires them to hls.js (or
the browser's native HLS), the scrubbing preview and the rendition picker. Nothing is fetched from
the network: hls.js is shipped here (``player/README.md`` says which version and how to refresh).
The page needs an HTTP server (browsers refuse ``fetch`` from ``file://``):
``python -m http.server -d DIR -b 127.0.0.1``.
"""

from __future__ import annotations

import html
import posixpath
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transcoder.domain.job import RenditionStatus
from transcoder.domain.record import JobRecord

ASSETS = ("player.js", "player.css", "hls.light.min.js", "LICENSE.hls.js.txt")


class UnsafeKey(ValueError):
    """An object key that would land outside its video's folder (``..``, an absolute path)."""


@dataclass(frozen=True, slots=True)
class Mp4:
    name: str
    path: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True, slots=True)
class VideoFiles:
    """Where one completed job's outputs go, as paths relative to ``DIR`` (``/``-separated)."""

    video_id: str
    title: str
    mp4s: tuple[Mp4, ...]  # lowest first
    poster: str | None
    sprite: str | None
    vtt: str | None
    master: str | None
    # (key, path) for each single object; (key prefix, folder) for the HLS tree, listed at export.
    objects: tuple[tuple[str, str], ...]
    hls_tree: tuple[str, str] | None

    def hls_path(self, key: str) -> str:
        """The local path of an object listed under the HLS prefix."""
        assert self.hls_tree is not None
        prefix, folder = self.hls_tree
        return under(folder, key, prefix)


def under(folder: str, key: str, prefix: str) -> str:
    """``folder/`` + the part of ``key`` after ``prefix``, refusing anything that climbs out."""
    if not key.startswith(prefix):
        raise UnsafeKey(f"{key!r} is not under {prefix!r}")
    parts = key[len(prefix) :].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeKey(f"{key!r} does not name a file under {prefix!r}")
    return "/".join([folder, *parts])


def files_for(record: JobRecord, title: str) -> VideoFiles:
    """The local layout of a completed job's outputs (see the module docstring)."""
    vid = record.video_id
    mp4s = sorted(
        (
            Mp4(name, f"{vid}/{name}.mp4", r.width or 0, r.height or 0, r.bytes or 0)
            for name, r in record.renditions.items()
            if r.status is RenditionStatus.COMPLETED and r.key
        ),
        key=lambda m: (m.height, m.width),
    )
    objects = [(record.renditions[m.name].key or "", m.path) for m in mp4s]
    poster = sprite = vtt = master = None
    hls_tree = None
    if record.poster is not None:
        poster = f"{vid}/poster{posixpath.splitext(record.poster.key)[1] or '.jpg'}"
        objects.append((record.poster.key, poster))
    if record.thumbnails is not None:
        # Both files under the VTT's folder, so the cues' relative sprite URL still resolves.
        prefix = posixpath.dirname(record.thumbnails.vtt_key) + "/"
        vtt = under(f"{vid}/thumbnails", record.thumbnails.vtt_key, prefix)
        sprite = under(f"{vid}/thumbnails", record.thumbnails.sprite_key, prefix)
        objects += [(record.thumbnails.sprite_key, sprite), (record.thumbnails.vtt_key, vtt)]
    if record.hls is not None:
        prefix = posixpath.dirname(record.hls.master_key) + "/"
        hls_tree = (prefix, f"{vid}/hls")
        master = under(f"{vid}/hls", record.hls.master_key, prefix)
    return VideoFiles(
        vid, title, tuple(mp4s), poster, sprite, vtt, master, tuple(objects), hls_tree
    )


def render(videos: list[VideoFiles]) -> str:
    """``index.html`` for these videos (an empty page says that nothing completed)."""
    sections = "\n".join(section(v) for v in videos) or (
        '<p class="empty">No job completed, so there is nothing to play.</p>'
    )
    return PAGE.format(sections=sections)


def section(video: VideoFiles) -> str:
    data = {
        "video-id": video.video_id,
        "master": video.master,
        "vtt": video.vtt,
        "mp4s": ",".join(f"{m.name}={m.path}" for m in video.mp4s) or None,
    }
    attributes = "".join(f' data-{k}="{attr(v)}"' for k, v in data.items() if v is not None)
    poster = f' poster="{attr(video.poster)}"' if video.poster else ""
    links = "\n".join(
        f'      <li><a href="{attr(m.path)}" download>{text(m.name)}</a>'
        f" {m.width}x{m.height}, {m.bytes / 1024**2:.1f} MiB</li>"
        for m in video.mp4s
    )
    return SECTION.format(
        title=text(video.title), attributes=attributes, poster=poster, links=links
    )


def write(out: Path, videos: list[VideoFiles]) -> Path:
    """Write ``index.html`` and the player's assets into ``out``; the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    folder = resources.files("transcoder.ops") / "player"
    for name in ASSETS:
        with resources.as_file(folder / name) as source:
            shutil.copyfile(source, out / name)
    page = out / "index.html"
    page.write_text(render(videos), encoding="utf-8")
    return page


def attr(value: str) -> str:
    return html.escape(value, quote=True)


def text(value: str) -> str:
    return html.escape(value, quote=False)


PAGE = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>transcoder demo</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="player.css">
</head>
<body>
  <h1>transcoder demo</h1>
  <p class="hint">HLS through hls.js (or the browser's own HLS); hover the bar under a video for
  previews, click it to seek; the picker forces a rendition.</p>
{sections}
  <script src="hls.light.min.js"></script>
  <script src="player.js"></script>
</body>
</html>
"""

SECTION = """\
  <section class="video"{attributes}>
    <h2>{title}</h2>
    <div class="stage">
      <video controls playsinline preload="metadata"{poster}></video>
      <div class="scrub" title="hover for a preview, click to seek">
        <div class="played"></div>
        <div class="preview" hidden><span class="time"></span></div>
      </div>
    </div>
    <p class="controls">
      <label>rendition <select class="rendition"><option value="-1">auto</option></select></label>
      <output class="now">no picture yet</output>
      <span class="mode"></span>
    </p>
    <p class="errors" hidden></p>
    <ul class="downloads">
{links}
    </ul>
  </section>"""
