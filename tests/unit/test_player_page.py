"""The demo's player page writer: where a record's outputs go under ``--out`` and what the HTML
points at. A wrong path here is a page that shows nothing, so each reference is checked."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

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
from transcoder.ops import page

ROOT = Path(__file__).resolve().parents[2]


def variant(name: str, width: int, height: int) -> HlsVariant:
    return HlsVariant(
        playlist_key=f"{hls_prefix('u1', 'clip')}{name}/index.m3u8",
        segments=3,
        bandwidth=1_000_000,
        codecs="avc1.64001f,mp4a.40.2",
        width=width,
        height=height,
        bytes=1,
    )


def completed(**published: object) -> JobRecord:
    return JobRecord(
        user_id="u1",
        video_id="clip",
        status=Status.COMPLETED,
        renditions={
            "1080p": RenditionRecord(
                status=RenditionStatus.COMPLETED,
                key=output_key("1080p", "u1", "clip"),
                width=1920,
                height=1080,
                bytes=3 * 1024**2,
            ),
            "720p": RenditionRecord(
                status=RenditionStatus.COMPLETED,
                key=output_key("720p", "u1", "clip"),
                width=1280,
                height=720,
                bytes=1024**2,
            ),
            "2160p": RenditionRecord(status=RenditionStatus.SKIPPED, reason="no upscaling"),
        },
        **published,
    )


FULL = {
    "poster": PosterRecord(key=poster_key("u1", "clip"), width=1920, height=1080, bytes=9),
    "thumbnails": ThumbnailsRecord(
        sprite_key=thumbnails_prefix("u1", "clip") + "sprite.jpg",
        vtt_key=thumbnails_prefix("u1", "clip") + "thumbnails.vtt",
        interval_s=2.0,
        count=5,
        tile_width=160,
        tile_height=90,
        columns=5,
        rows=1,
        bytes=9,
    ),
    "hls": HlsRecord(
        master_key=hls_prefix("u1", "clip") + "master.m3u8",
        segment_s=2.0,
        variants={"720p": variant("720p", 1280, 720), "1080p": variant("1080p", 1920, 1080)},
    ),
}


class References(HTMLParser):
    """Every attribute of every element, to look references up by name."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def values(self, tag: str, name: str) -> list[str | None]:
        return [a[name] for t, a in self.elements if t == tag and name in a]


def parsed(html: str) -> References:
    parser = References()
    parser.feed(html)
    return parser


def test_a_full_record_is_laid_out_so_every_relative_reference_still_resolves() -> None:
    files = page.files_for(completed(**FULL), "clip.mov")
    assert dict(files.objects) == {
        "transcoded/720p/u1/clip.mp4": "clip/720p.mp4",
        "transcoded/1080p/u1/clip.mp4": "clip/1080p.mp4",
        "transcoded/poster/u1/clip.jpg": "clip/poster.jpg",
        # The VTT names "sprite.jpg" relative to itself: both land in one folder.
        "transcoded/thumbnails/u1/clip/sprite.jpg": "clip/thumbnails/sprite.jpg",
        "transcoded/thumbnails/u1/clip/thumbnails.vtt": "clip/thumbnails/thumbnails.vtt",
    }
    # The HLS tree is kept whole: master -> 720p/index.m3u8 -> init.mp4, seg_00000.m4s.
    assert files.hls_tree == ("transcoded/hls/u1/clip/", "clip/hls")
    assert files.master == "clip/hls/master.m3u8"
    assert files.hls_path("transcoded/hls/u1/clip/720p/seg_00000.m4s") == (
        "clip/hls/720p/seg_00000.m4s"
    )
    assert files.hls_path("transcoded/hls/u1/clip/720p/init.mp4") == "clip/hls/720p/init.mp4"


def test_the_page_references_the_stream_previews_poster_and_each_mp4() -> None:
    html = page.render([page.files_for(completed(**FULL), "clip.mov")])
    refs = parsed(html)
    assert refs.values("section", "data-master") == ["clip/hls/master.m3u8"]
    assert refs.values("section", "data-vtt") == ["clip/thumbnails/thumbnails.vtt"]
    assert refs.values("section", "data-mp4s") == ["720p=clip/720p.mp4,1080p=clip/1080p.mp4"]
    assert refs.values("video", "poster") == ["clip/poster.jpg"]
    assert refs.values("a", "href") == ["clip/720p.mp4", "clip/1080p.mp4"]  # lowest first
    assert "2160p" not in html  # a skipped rendition has no file to link
    assert refs.values("script", "src") == ["hls.light.min.js", "player.js"]
    assert refs.values("link", "href") == ["data:,", "player.css"]
    assert "<h2>clip.mov</h2>" in html
    assert "1920x1080, 3.0 MiB" in html


def test_a_record_without_stream_or_previews_still_gets_its_mp4s() -> None:
    """A job from before HLS and thumbnails (or a worker without them) plays its top MP4."""
    refs = parsed(page.render([page.files_for(completed(), "old.mp4")]))
    assert refs.values("section", "data-master") == []
    assert refs.values("section", "data-vtt") == []
    assert refs.values("video", "poster") == []
    assert refs.values("a", "href") == ["clip/720p.mp4", "clip/1080p.mp4"]


def test_a_file_name_cannot_inject_markup() -> None:
    html = page.render([page.files_for(completed(), '<script>alert("x")</script>.mp4')])
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert" in html


def test_no_completed_job_is_a_page_that_says_so() -> None:
    assert "nothing to play" in page.render([])


@pytest.mark.parametrize(
    "key",
    [
        "transcoded/hls/u1/clip/../../../../etc/passwd",
        "transcoded/hls/u1/clip/",
        "transcoded/hls/u1/clip/./x",
        "transcoded/hls/u1/other/master.m3u8",
    ],
)
def test_a_listed_key_never_lands_outside_its_folder(key: str) -> None:
    files = page.files_for(completed(**FULL), "clip.mov")
    with pytest.raises(page.UnsafeKey):
        files.hls_path(key)


def test_write_puts_the_page_and_everything_it_loads_next_to_each_other(tmp_path: Path) -> None:
    written = page.write(tmp_path, [page.files_for(completed(**FULL), "clip.mov")])
    assert written == tmp_path / "index.html"
    refs = parsed(written.read_text())
    for asset in [*refs.values("script", "src"), "player.css", "LICENSE.hls.js.txt"]:
        assert asset is not None
        assert (tmp_path / asset).stat().st_size > 0, asset
    assert "Apache License" in (tmp_path / "LICENSE.hls.js.txt").read_text()


def test_the_shipped_hls_js_is_the_version_the_browser_test_pins() -> None:
    pinned = json.loads((ROOT / "tests/browser/package.json").read_text())["devDependencies"]
    shipped = (ROOT / "transcoder/ops/player/hls.light.min.js").read_text()
    # The build embeds its version as its only quoted "X.Y.Z" string.
    versions = set(re.findall(r'"([0-9]+\.[0-9]+\.[0-9]+)"', shipped))
    assert versions == {pinned["hls.js"]}, "refresh with `make hls-js` (player/README.md)"
    readme = (ROOT / "transcoder/ops/player/README.md").read_text()
    assert f"hls.js {pinned['hls.js']}" in readme
