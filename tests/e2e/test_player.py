"""The demo's player page, played in a real browser: Debian's headless Chromium.

``transcoder demo --out DIR`` runs for real on a sample clip (its own embedded emulator, the
enqueue handler, a worker, ffmpeg: the MP4s, HLS stream, poster and sprite the worker publishes),
with a two-rung ladder of small sizes so the clip has two renditions to switch between; DIR is
served on 127.0.0.1 and opened by ``tests/browser/player.mjs`` (playwright-core). The user would
notice each assertion: the video starts, plays to its end without a media error, the picture
changes size when a rendition is forced, and the scrubbing previews show.

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
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

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


# Two rungs below the clip's 720p, so the page has two renditions whatever the clip.
SMALL_LADDER = [
    {"name": "240p", "short_side": 240, "crf": 23, "maxrate_kbps": 600, "bufsize_kbps": 1200},
    {"name": "360p", "short_side": 360, "crf": 23, "maxrate_kbps": 1000, "bufsize_kbps": 2000},
]


@pytest.fixture(scope="session")
def browser() -> None:
    """Chromium, node and the driver's packages, checked before any footage is fetched."""
    require_browser()


@pytest.fixture(scope="module")
def player_dir(
    browser: None, samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """DIR as ``transcoder demo --out DIR bigbuckbunny.mp4`` leaves it, run as a user would."""
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSCODER_", "AWS_"))}
    env["TRANSCODER_LADDER"] = json.dumps(SMALL_LADDER)
    clip = str(samples["bigbuckbunny"])
    completed = subprocess.run(
        [sys.executable, "-m", "transcoder", "demo", "--json", "--out", str(out), clip],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    [result] = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    assert result["status"] == "COMPLETED", result
    assert (out / "index.html").is_file()
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
