"""The demo's views as pure functions of job states: the live board, results, plain lines."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from transcoder.ops.board import (
    Lines,
    Tracked,
    bar,
    live_table,
    plain_table,
    result_table,
    row_for,
    stage_of,
)
from transcoder.ops.demo import Submitted, summary


def text_of(table: Table, width: int = 100) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    output = console.file
    assert isinstance(output, io.StringIO)
    return [line.rstrip() for line in output.getvalue().splitlines()]


def record(status: str, progress: int = 0, **extra: Any) -> dict[str, Any]:
    return {"status": status, "progress": progress, "attempts": 1, **extra}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (record("QUEUED"), ("queued", 0)),
        (record("PROCESSING", 0), ("probe", 0)),
        (record("PROCESSING", 42), ("transcode", 42)),
        (record("PROCESSING", 90), ("verify", 90)),
        (record("PROCESSING", 95), ("upload", 95)),
        (record("COMPLETED", 100), ("completed", 100)),
        (record("FAILED", 0), ("failed", 0)),
    ],
)
def test_each_record_state_is_a_stage(state: dict[str, Any], expected: tuple[str, int]) -> None:
    assert stage_of(state) == expected


def test_a_row_says_uploading_until_enqueued_then_notes_retries_and_failures() -> None:
    assert row_for(Tracked("/in/a.mp4")).stage == "upload"
    assert row_for(Tracked("/in/a.mp4", "a")).stage == "queued"  # enqueued, record not read yet
    retried = row_for(Tracked("/in/a.mp4", "a", record("PROCESSING", 30, attempts=2)))
    assert (retried.file, retried.stage, retried.percent, retried.note) == (
        "a.mp4",
        "transcode",
        30,
        "attempt 2",
    )
    failed = record("FAILED", error={"code": "not_a_video", "message": "no"})
    assert row_for(Tracked("/in/a.mp4", "a", failed)).note == "not_a_video"


def test_bars_are_proportional_and_clamped() -> None:
    assert bar(0, 10) == "░" * 10
    assert bar(42, 10) == "████░░░░░░"
    assert bar(100, 10) == bar(150, 10) == "█" * 10


def test_the_live_table_has_one_row_per_file_with_stage_bar_and_percent() -> None:
    tracked = [
        Tracked("/in/bikes.mp4", "bikes", record("PROCESSING", 50)),
        Tracked("/in/city.mpg", "city", record("COMPLETED", 100)),
        Tracked("/in/broken.mp4", "broken", record("FAILED", error={"code": "not_a_video"})),
        Tracked("/in/next.mov"),
    ]
    lines = text_of(live_table([row_for(t) for t in tracked]))
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == 4
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in body]
    assert cells[0] == ["bikes.mp4", "transcode", f"{bar(50)}  50%", ""]
    assert cells[1] == ["city.mpg", "completed", f"{bar(100)} 100%", ""]
    assert cells[2] == ["broken.mp4", "failed", f"{bar(0)}   0%", "not_a_video"]
    assert cells[3] == ["next.mov", "upload", f"{bar(0)}   0%", ""]


RESULTS: list[dict[str, Any]] = [
    {
        "file": "/in/bikes.mp4",
        "video_id": "bikes",
        "status": "COMPLETED",
        "attempts": 1,
        "error": None,
        "renditions": {
            "1080p": {"status": "SKIPPED"},
            "720p": {"status": "COMPLETED", "width": 640, "height": 272, "bytes": 563_200},
        },
    },
    {
        "file": "/in/broken.mp4",
        "video_id": "broken",
        "status": "FAILED",
        "attempts": 1,
        "error": {"code": "not_a_video", "message": "not a media file"},
        "renditions": {},
    },
]


def test_the_plain_results_keep_their_fixed_columns() -> None:
    assert plain_table(RESULTS).splitlines() == [
        "file                                     status     tries  renditions / error",
        "bikes.mp4                                COMPLETED      1  "
        "1080p skipped, 720p 640x272 550 KiB",
        "broken.mp4                               FAILED         1  not_a_video: not a media file",
    ]


def test_the_result_table_shows_each_file_with_its_renditions_or_error() -> None:
    text = "\n".join(text_of(result_table(RESULTS), width=120))
    assert "bikes.mp4" in text and "1080p skipped, 720p 640x272 550 KiB" in text
    assert "broken.mp4" in text and "not_a_video: not a media file" in text


def test_lines_print_one_summary_per_change_once_every_record_is_known(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = Lines(as_json=False)
    lines.update([Tracked("/in/a.mp4", "a", record("QUEUED")), Tracked("/in/b.mp4")])
    lines.update([Tracked("/in/a.mp4", "a", record("QUEUED")), Tracked("/in/b.mp4", "b")])
    for _ in range(2):
        lines.update(
            [
                Tracked("/in/a.mp4", "a", record("PROCESSING", 42)),
                Tracked("/in/b.mp4", "b", record("QUEUED")),
            ]
        )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "[demo] a: PROCESSING 42%  b: QUEUED\n"


def test_json_results_are_one_sorted_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    Lines(as_json=True).finish(RESULTS)
    out = capsys.readouterr().out
    assert out.splitlines() == [json.dumps(r, sort_keys=True) for r in RESULTS]


def test_the_json_summary_keeps_its_fields() -> None:
    job = Submitted("/in/a.mp4", "demo", "a", "raw/demo/a.mp4")
    stored = record("FAILED", job_id="j1", error={"code": "c", "message": "m", "retryable": False})
    assert summary(job, stored) == {
        "file": "/in/a.mp4",
        "video_id": "a",
        "job_id": "j1",
        "status": "FAILED",
        "attempts": 1,
        "error": {"code": "c", "message": "m"},
        "renditions": {},
        "hls": None,
        "poster": None,
        "thumbnails": None,
        "source": None,
    }


def test_a_result_names_the_player_outputs_the_job_published() -> None:
    stored = record(
        "COMPLETED",
        100,
        job_id="j1",
        renditions={"720p": {"status": "COMPLETED", "width": 1280, "height": 720, "bytes": 2048}},
        hls={"master_key": "transcoded/hls/demo/a/master.m3u8"},
        poster={"key": "transcoded/poster/demo/a.jpg"},
        thumbnails={"count": 6},
    )
    result = summary(Submitted("/in/a.mp4", "demo", "a", "raw/demo/a.mp4"), stored)
    assert (result["hls"], result["poster"], result["thumbnails"]) == (
        "transcoded/hls/demo/a/master.m3u8",
        "transcoded/poster/demo/a.jpg",
        6,
    )
    assert (
        plain_table([result])
        .splitlines()[1]
        .endswith("720p 1280x720 2 KiB; HLS, poster, 6 thumbnails")
    )
