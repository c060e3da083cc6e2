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
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
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


@pytest.fixture
async def played(
    samples: dict[str, Path],
    clients: Clients,
    settings: Settings,
    resources: Resources,
    tmp_path: Path,
) -> tuple[JobRecord, Path, dict[str, Any]]:
    """(record, --out DIR, what the browser saw) for one completed job."""
    require_browser()
    tree = tmp_path / "bucket"
    record = await asyncio.to_thread(player_outputs.build, samples["bigbuckbunny"], tree)
    await upload_tree(clients, settings.bucket, tree)
    out = tmp_path / "out"
    storage = Storage(clients.s3, settings.bucket)
    page = await export(clients.s3, storage, [(record, "bigbuckbunny.mp4")], out)
    assert page == out / "index.html"
    with serving(out) as url:
        completed = await asyncio.to_thread(
            subprocess.run,
            ["node", "player.mjs", url + "index.html", str(tmp_path / "chromium-profile")],
            cwd=BROWSER,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout)
    print(json.dumps({k: v for k, v in report.items() if k != "requests"}, indent=1))
    assert report.get("failure") is None, report["failure"]
    return record, out, report


def test_the_demo_page_plays_switches_renditions_and_previews(
    played: tuple[JobRecord, Path, dict[str, Any]],
) -> None:
    """One browser run (about 15 s), two groups of assertions."""
    record, _, report = played
    assert_plays_to_the_end_and_switches(record, report)
    assert_shows_poster_and_previews(record, report)


def assert_plays_to_the_end_and_switches(record: JobRecord, report: dict[str, Any]) -> None:
    assert record.hls is not None
    # Evidence first: this Chromium decodes H.264 High + AAC through Media Source Extensions.
    assert report["mode"] == "hls.js"
    assert report["mseSupport"] and all(report["mseSupport"].values()), report["mseSupport"]
    sizes = [(v.width, v.height) for v in record.hls.variants.values()]
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
    duration_s = next(iter(record.renditions.values())).duration_s or 0
    assert report["ended"] is True
    assert report["duration"] == pytest.approx(duration_s, abs=0.25)
    assert report["currentTime"] == pytest.approx(report["duration"], abs=0.1)
    assert report["decodedFrames"] > 0
    assert (report["errors"], report["mediaError"], report["pageErrors"]) == ([], None, [])
    assert report["consoleErrors"] == []
    bad = [r for r in report["requests"] if r["status"] >= 400]
    assert bad == []
    fetched = {r["url"].split("/hls/", 1)[-1] for r in report["requests"] if "/hls/" in r["url"]}
    low = next(iter(record.hls.variants))
    last = f"seg_{record.hls.variants[low].segments - 1:05d}.m4s"
    assert f"{low}/{last}" in fetched  # the lowest rendition, forced last, was played to its end


def assert_shows_poster_and_previews(record: JobRecord, report: dict[str, Any]) -> None:
    thumbs = record.thumbnails
    assert thumbs is not None
    duration_s = next(iter(record.renditions.values())).duration_s or 0
    poster = f"/{record.video_id}/poster.jpg"
    assert any(r["url"].endswith(poster) and r["status"] == 200 for r in report["requests"])
    assert report["cues"] == thumbs.count
    assert report["firstCue"]["start"] == 0
    assert report["lastCue"]["end"] == pytest.approx(duration_s, abs=0.05)
    assert report["sprite"] == {
        "loaded": True,
        "width": thumbs.columns * thumbs.tile_width,
        "height": thumbs.rows * thumbs.tile_height,
    }
    # Hovering the middle of the bar shows the tile for the middle of the video.
    hover = report["hover"]
    assert hover["visible"] is True
    assert "thumbnails/sprite.jpg" in hover["backgroundImage"]
    assert hover["cue"]["start"] <= duration_s / 2 < hover["cue"]["end"]
    assert (hover["cue"]["w"], hover["cue"]["h"]) == (thumbs.tile_width, thumbs.tile_height)
