"""The fleet benchmark's pure parts: the run order, the paired ratios, the summary, where a run's
wall went, and the table (the runs need the emulator and ffmpeg: ``python -m benchmarks fleet``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.fleet import Options, worker_settings
from benchmarks.fleet_summary import (
    Run,
    busy_s,
    markdown,
    pair_ratios,
    phases,
    run_from,
    schedule,
    summarise,
)
from benchmarks.worker_runner import event_time


def _chunked(walls: dict[tuple[int, int], float], cpu_s: float = 200.0) -> list[Run]:
    return [
        Run("chunked", workers, rep, status="COMPLETED", wall_s=wall, cpu_s=cpu_s, parts=10)
        for (rep, workers), wall in walls.items()
    ]


def _at(second: float) -> str:
    return f"2026-12-02T19:00:{second:06.3f}Z"


def test_runs_alternate_one_and_two_workers_so_each_count_goes_first_in_turn() -> None:
    assert schedule(2) == [(0, 1), (0, 2), (1, 2), (1, 1)]
    assert schedule(1) == [(0, 1), (0, 2)]
    assert [n for _, n in schedule(3)] == [1, 2, 2, 1, 1, 2]


def test_each_ratio_pairs_runs_of_one_repetition_so_a_slower_machine_cancels_out() -> None:
    # The machine got 50 % slower in repetition 1: the paired ratios stay 1.9.
    runs = _chunked({(0, 1): 190.0, (0, 2): 100.0, (1, 2): 150.0, (1, 1): 285.0})
    assert pair_ratios(runs) == [1.9, 1.9]
    summary = summarise(runs)
    assert summary["speed_up"] == 1.9
    assert summary["efficiency"] == 0.95
    assert summary["target_met"] is True


def test_a_failed_run_leaves_its_pair_out_of_the_speed_up() -> None:
    runs = _chunked({(0, 1): 200.0, (0, 2): 125.0, (1, 2): 100.0, (1, 1): 300.0})
    runs[2].status = "FAILED"
    assert pair_ratios(runs) == [1.6]
    summary = summarise(runs)
    assert summary["speed_up"] == 1.6 and summary["target_met"] is False


def test_no_complete_pair_gives_no_speed_up_rather_than_a_made_up_one() -> None:
    summary = summarise(_chunked({(0, 1): 200.0}))
    assert summary["speed_up"] is None
    assert summary["efficiency"] is None
    assert summary["target_met"] is False


def test_chunked_on_one_worker_is_compared_with_the_single_pass() -> None:
    runs = _chunked({(0, 1): 220.0, (0, 2): 120.0}, cpu_s=210.0)
    runs.append(Run("single", 1, -1, status="COMPLETED", wall_s=200.0, cpu_s=200.0))
    summary = summarise(runs)
    assert summary["chunked_one_vs_single_wall"] == 1.1
    assert summary["chunked_one_vs_single_cpu"] == 1.05
    assert summary["single_wall_s"] == 200.0


def test_ffmpeg_busy_time_pairs_each_start_with_its_own_finish() -> None:
    events = [
        {"event": "ffmpeg.started", "pid": 1, "timestamp": _at(0)},
        {"event": "ffmpeg.started", "pid": 2, "timestamp": _at(1)},
        {"event": "ffmpeg.finished", "pid": 2, "timestamp": _at(3)},
        {"event": "ffmpeg.finished", "pid": 1, "timestamp": _at(10)},
        {"event": "ffmpeg.started", "pid": 3, "timestamp": _at(11)},  # still running: not counted
    ]
    assert busy_s(events) == 12.0


def test_a_runs_wall_splits_into_the_serial_ends_and_the_shared_middle() -> None:
    events: list[dict[str, Any]] = [
        {"event": "job.split", "timestamp": _at(4)},
        {"event": "job.part_encoded", "timestamp": _at(20)},
        {"event": "job.part_encoded", "timestamp": _at(50)},
    ]
    started_at = event_time({"timestamp": _at(0)})
    assert phases(events, started_at, 58.0) == {"split": 4.0, "parts": 46.0, "stitch": 8.0}
    assert phases(events[:1], started_at, 58.0) == {}  # no part encoded: not a chunked run


def test_the_workers_get_one_ffmpeg_thread_and_chunk_every_source_unless_single_pass() -> None:
    env = worker_settings("chunked", Options(chunk_s=10.0))
    assert env["TRANSCODER_FFMPEG_THREADS"] == "1"
    assert env["TRANSCODER_CHUNKING"] == "true"
    assert env["TRANSCODER_CHUNK_S"] == "10"
    assert env["TRANSCODER_CHUNK_THRESHOLD_S"] == "0"
    assert "TRANSCODER_HLS" not in env and "TRANSCODER_STILLS" not in env  # worker defaults
    assert worker_settings("single", Options())["TRANSCODER_CHUNKING"] == "false"


def test_the_table_shows_the_speed_up_the_verdict_and_every_run() -> None:
    runs = _chunked({(0, 1): 190.0, (0, 2): 110.0})
    runs[0].parts_by_worker, runs[1].parts_by_worker = [10], [6, 4]
    runs[1].worker_cpu_s = [110.0, 95.5]
    runs[1].phases_s = {"split": 3.0, "parts": 95.0, "stitch": 12.0}
    runs.append(Run("single", 1, -1, status="FAILED", problems=["1080p: frames"]))
    result: dict[str, Any] = {
        "source": {
            "size": "1920x1080",
            "fps": 25.0,
            "duration_s": 90.0,
            "renditions": ["720p", "1080p"],
            "chunk_s": 10.0,
            "threads": 1,
        },
        "summary": summarise(runs),
        "runs": [{**dataclasses.asdict(r), "valid": r.valid} for r in runs],
        "valid": False,
    }
    text = markdown(result)
    assert "**1.727x** (target 1.8x: NOT met)" in text
    assert "| chunked, rep 0 | 2 | 110.0 | 3.0 / 95.0 / 12.0 | 10 | 6, 4 |" in text
    assert "(110.0 + 95.5)" in text
    assert "| single pass | 1 |" in text and "INVALID: 1080p: frames" in text
    assert run_from(result["runs"][1]) == runs[1]
