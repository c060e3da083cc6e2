"""The demo's player page, played in a real browser: Debian's headless Chromium.

One completed job's outputs (``tests/support/player_outputs.py``: real footage through plain
ffmpeg, in the worker's layout) are uploaded to the emulator, exported by the demo's own ``--out``
code, served on 127.0.0.1 and opened by ``tests/browser/player.mjs`` (playwright-core). The user
would notice each assertion: the video starts, plays to its end without a media error, the
picture changes size when a rendition is forced, and the scrubbing previews show.

Needs ``/usr/bin/chromium`` and ``tests/browser/node_modules`` (``make browser`` installs both).
Without them the test skips on a developer machine and fails in CI (``CI`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support import player_outputs

from transcoder.aws.clients import Clients
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.record import JobRecord
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import export

BROWSER = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.slow


def require_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if not (BROWSER / "node_modules" / "playwright-core").is_dir():
        missing.append(f"{BROWSER}/node_modules (npm ci --prefix {BROWSER})")
    if not missing:
        return
    reason = "the browser test needs " + ", ".join(missing) + "; `make browser` installs them"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(root: Path) -> Iterator[str]:
    """``python -m http.server -d root -b 127.0.0.1`` on a free port, stopped at the end."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def upload_tree(clients: Clients, bucket: str, tree: Path) -> None:
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        await clients.s3.put_object(
            Bucket=bucket,
            Key=path.relative_to(tree).as_posix(),
            Body=path.read_bytes(),
            ContentType=player_outputs.content_type(path),
        )


@pytest.fixture(scope="session")
def browser() -> None:
    """Chromium, node and the driver's packages, checked before any footage is fetched."""
    require_browser()


@pytest.fixture(scope="module")
def outputs(
    browser: None, samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, JobRecord]:
    """One completed job's objects (a folder whose paths are the S3 keys) and its record."""
    tree = tmp_path_factory.mktemp("bucket")
    return tree, player_outputs.build(samples["bigbuckbunny"], tree)


@pytest.fixture
async def player_dir(
    outputs: tuple[Path, JobRecord],
    clients: Clients,
    settings: Settings,
    resources: Resources,
    tmp_path: Path,
) -> Path:
    """A ``transcoder demo --out`` DIR for one completed job, made by the demo's own export.

    The outputs come from ``player_outputs`` (plain ffmpeg, the worker's layout) until the worker
    makes them; the assertions below read what to expect from DIR, so a real demo run can replace
    this fixture as it is.
    """
    tree, record = outputs
    await upload_tree(clients, settings.bucket, tree)
    out = tmp_path / "out"
    storage = Storage(clients.s3, settings.bucket)
    page = await export(clients.s3, storage, [(record, "bigbuckbunny.mp4")], out)
    assert page == out / "index.html"
    return out


async def play(out: Path, scratch: Path, *options: str) -> dict[str, Any]:
    """Serve ``out`` on 127.0.0.1 and run the browser driver over its page; what it saw."""
    with serving(out) as url:
        completed = await asyncio.to_thread(
            subprocess.run,
            [
                *("node", "player.mjs", url + "index.html"),
                *(str(scratch / "chromium-profile"), "--screenshot", str(scratch / "player.png")),
                *options,
            ],
            cwd=BROWSER,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout)
    print(json.dumps({k: v for k, v in report.items() if k != "requests"}, indent=1))
    assert report.get("failure") is None, f"after {report['steps']}: {report['failure']}"
    return report


@dataclass(frozen=True, slots=True)
class Expected:
    """What the page's first video should show, read from the files in DIR."""

    poster: str
    sizes: list[tuple[int, int]]  # the master playlist's variants, in its order
    duration_s: float  # the first variant's EXTINF sum
    last_segment: str  # the first variant's last segment, as "{variant folder}/{name}"
    cues: list[tuple[float, float, int, int, int, int]]  # start, end, x, y, w, h


class FirstVideo(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.setdefault(tag, dict(attrs))


def seconds(stamp: str) -> float:
    total = 0.0
    for part in stamp.split(":"):
        total = total * 60 + float(part)
    return total


def expected(out: Path) -> Expected:
    page = FirstVideo()
    page.feed((out / "index.html").read_text())
    section, video = page.found["section"], page.found["video"]
    master = out / str(section["data-master"])
    lines = master.read_text().splitlines()
    sizes, uris = [], []
    for line, uri in itertools.pairwise(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            width, height = re.findall(r"RESOLUTION=(\d+)x(\d+)", line)[0]
            sizes.append((int(width), int(height)))
            uris.append(uri)
    playlist = (master.parent / uris[0]).read_text().splitlines()
    duration_s = sum(
        float(line[8:].split(",")[0]) for line in playlist if line.startswith("#EXTINF:")
    )
    last = [line for line in playlist if line and not line.startswith("#")][-1]
    vtt = (out / str(section["data-vtt"])).read_text().splitlines()
    cues = []
    for timing, payload in itertools.pairwise(vtt):
        if "-->" in timing:
            start, end = (seconds(t) for t in timing.split("-->"))
            x, y, w, h = (int(v) for v in payload.split("#xywh=")[1].split(","))
            cues.append((start, end, x, y, w, h))
    return Expected(
        poster=str(video["poster"]),
        sizes=sizes,
        duration_s=duration_s,
        last_segment=f"{Path(uris[0]).parent.name}/{last}",
        cues=cues,
    )


async def test_the_demo_page_plays_switches_renditions_and_previews(
    player_dir: Path, tmp_path: Path
) -> None:
    """One browser run (about 15 s), two groups of assertions."""
    report = await play(player_dir, tmp_path)
    facts = expected(player_dir)
    assert_plays_to_the_end_and_switches(facts, report)
    assert_shows_poster_and_previews(facts, report)


async def test_without_media_source_extensions_the_page_plays_through_native_hls(
    player_dir: Path, tmp_path: Path
) -> None:
    """Where hls.js cannot run (no MSE, as on iOS Safari) the browser's own HLS plays the master
    playlist; Debian's Chromium has native HLS too, so hiding MSE exercises that branch here."""
    report = await play(player_dir, tmp_path, "--without-mse")
    facts = expected(player_dir)
    assert report["mode"] == "native HLS"
    assert report["src"].endswith("/hls/master.m3u8")
    assert report["pickerDisabled"] is True  # the browser picks the level itself
    assert (report["videoWidth"], report["videoHeight"]) in facts.sizes
    assert report["startedAt"] > 0
    assert report["ended"] is True
    assert report["duration"] == pytest.approx(facts.duration_s, abs=0.25)
    assert report["decodedFrames"] > 0
    assert (report["errors"], report["mediaError"], report["pageErrors"]) == ([], None, [])
    assert [r for r in report["requests"] if r["status"] >= 400] == []
    assert report["sprite"]["loaded"] is True  # the previews do not depend on hls.js


def assert_plays_to_the_end_and_switches(facts: Expected, report: dict[str, Any]) -> None:
    # Evidence first: this Chromium decodes H.264 High + AAC through Media Source Extensions.
    assert report["mode"] == "hls.js"
    assert report["mseSupport"] and all(report["mseSupport"].values()), report["mseSupport"]
    sizes = facts.sizes
    assert len(sizes) >= 2, "the switch needs two renditions"
    assert [(level["width"], level["height"]) for level in report["levels"]] == sizes
    assert report["pickerOptions"][0] == "auto"
    assert len(report["pickerOptions"]) == 1 + len(sizes)
    assert report["startedAt"] > 0
    # Forced top, then lowest: the decoded picture and the page's readout follow each time.
    seen = [(s["videoWidth"], s["videoHeight"]) for s in report["switches"]]
    assert seen == [sizes[-1], sizes[0]]
    assert [s["hlsLevel"] for s in report["switches"]] == [len(sizes) - 1, 0]
    assert all(f"{w}x{h}" in s["shown"] for s, (w, h) in zip(report["switches"], seen, strict=True))
    # Played to the end, through real segments, with no media error.
    assert report["ended"] is True
    assert report["duration"] == pytest.approx(facts.duration_s, abs=0.25)
    assert report["currentTime"] == pytest.approx(report["duration"], abs=0.1)
    assert report["decodedFrames"] > 0
    assert (report["errors"], report["mediaError"], report["pageErrors"]) == ([], None, [])
    assert report["consoleErrors"] == []
    assert [r for r in report["requests"] if r["status"] >= 400] == []
    fetched = {r["url"] for r in report["requests"] if r["status"] == 200}
    # The lowest rendition, forced last, was played through its last segment.
    assert any(url.endswith("/" + facts.last_segment) for url in fetched), facts.last_segment


def assert_shows_poster_and_previews(facts: Expected, report: dict[str, Any]) -> None:
    assert any(
        r["url"].endswith("/" + facts.poster) and r["status"] == 200 for r in report["requests"]
    )
    assert report["cues"] == len(facts.cues)
    assert report["firstCue"]["start"] == 0
    assert report["lastCue"]["end"] == pytest.approx(facts.duration_s, abs=0.25)
    sprite = report["sprite"]
    assert sprite["loaded"] is True
    # The sprite holds every tile the cues point into.
    assert sprite["width"] >= max(x + w for _, _, x, _, w, _ in facts.cues)
    assert sprite["height"] >= max(y + h for _, _, _, y, _, h in facts.cues)
    # Hovering the middle of the bar shows the tile for the middle of the video.
    hover = report["hover"]
    assert hover["visible"] is True
    assert "sprite" in hover["backgroundImage"]
    middle = next(c for c in facts.cues if c[0] <= report["duration"] / 2 < c[1])
    cue = hover["cue"]
    assert (cue["start"], cue["end"], cue["x"], cue["y"], cue["w"], cue["h"]) == middle
