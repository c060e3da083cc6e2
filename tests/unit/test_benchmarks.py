"""The benchmark harness's pure parts: parsing, counting, ratios, costs, targets."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest

from benchmarks import cost, quality
from benchmarks.control_plane import overheads
from benchmarks.emulator import PIECE_BYTES, CountingApp
from benchmarks.harness import order
from benchmarks.model import ControlPlane, Output, RunResult, SourceReads
from benchmarks.summary import overhead_percentiles, paired_ratio, ratios
from benchmarks.targets import control_target, source_targets, verdict
from benchmarks.worker_runner import event_time, stages

FFMPEG_STDERR = """\
[Parsed_libvmaf_10 @ 0x7fd840013e80] VMAF score: 91.155683
[Parsed_ssim_9 @ 0x7fd840013900] SSIM Y:0.979857 (16.958826) U:0.983246 (17.758696) \
V:0.987944 (19.187969) All:0.981770 (17.392086)
[Parsed_psnr_8 @ 0x7fd840013340] PSNR y:40.782477 u:45.598406 v:47.921001 average:42.009549 \
min:40.560444 max:44.607550
"""


def test_quality_scores_are_read_from_the_filters_summary_lines() -> None:
    scores = quality.parse_scores(FFMPEG_STDERR)
    assert scores == quality.Quality(psnr_db=40.782477, ssim=0.98177, vmaf=91.155683)


def test_missing_scores_are_none_not_zero() -> None:
    assert quality.parse_scores("no summary here") == quality.Quality(None, None, None)


def test_cost_of_a_busy_task_follows_cpu_seconds() -> None:
    # 60 CPU-s for one output minute on a 2 vCPU / 4 GB x86 task: 30 task-seconds.
    estimate = cost.estimate(cpu_s=60.0, wall_s=45.0, rendition_durations_s=[30.0, 30.0])
    assert estimate is not None
    task_hour = 2 * 0.04048 + 4 * 0.004445
    assert estimate.output_minutes == pytest.approx(1.0)
    assert estimate.busy["fargate-x86"] == pytest.approx(task_hour * 30 / 3600)
    assert estimate.wall["fargate-x86"] == pytest.approx(task_hour * 45 / 3600)
    assert estimate.busy["fargate-arm"] < estimate.busy["fargate-x86"]
    assert estimate.times_cheaper == pytest.approx(0.015 / estimate.busy["fargate-x86"])
    assert cost.estimate(1.0, 1.0, []) is None


def _run(runner: str, rep: int, cpu: float, wall: float, *, ok: bool = True) -> RunResult:
    return RunResult(runner, "w", rep, ok=ok, wall_s=wall, ffmpeg_cpu_s=cpu, outputs=[_output()])


def _output() -> Output:
    return Output("720p", 1280, 720, 2.0, 1000, 4000, valid=True)


def test_ratios_pair_runs_of_the_same_repetition() -> None:
    runs = [
        _run("W", 0, cpu=10.0, wall=5.0),
        _run("B0", 0, cpu=10.0, wall=4.0),
        _run("W", 1, cpu=22.0, wall=11.0),  # the machine got slower for rep 1: both sides
        _run("B0", 1, cpu=20.0, wall=10.0),
        _run("B0", 2, cpu=1.0, wall=1.0),  # no W in rep 2: not paired
    ]
    assert paired_ratio(runs, "W", "B0", lambda r: r.cpu_s) == pytest.approx(1.05)
    assert ratios(runs)["W/B0 wall"] == pytest.approx((1.25 + 1.1) / 2)
    assert ratios(runs)["B3/W wall"] is None


def test_invalid_runs_are_left_out_of_ratios() -> None:
    runs = [_run("W", 0, 1.0, 1.0, ok=False), _run("B0", 0, 1.0, 1.0)]
    assert paired_ratio(runs, "W", "B0", lambda r: r.cpu_s) is None


def test_interleaving_reverses_every_other_repetition() -> None:
    runners = ("W", "B0", "B1", "B3")
    assert [order(runners, rep) for rep in range(3)] == [
        runners,
        ("B3", "B1", "B0", "W"),
        runners,
    ]


def test_worker_stages_come_from_its_log_timestamps() -> None:
    events = {
        name: {"event": name, "timestamp": f"2026-01-01T00:00:{second:06.3f}Z"}
        for name, second in (
            ("job.claimed", 1.0),
            ("job.planned", 1.5),
            ("ffmpeg.started", 1.6),
            ("ffmpeg.finished", 9.6),
            ("job.transcoded", 10.0),
            ("job.settled", 10.25),
        )
    }
    start = event_time({"timestamp": "2026-01-01T00:00:00.750Z"})
    assert stages(events, start) == {
        "enqueue_receive_claim": 0.25,
        "probe": 0.5,
        "transcode": 8.0,
        "verify_upload": 0.4,
        "settle": 0.25,
    }


def _wsgi(body: list[bytes]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("206 Partial Content", [])
        return body

    return app


def _get(counting: CountingApp, path: str, agent: str, *, read_pieces: int | None) -> None:
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "HTTP_USER_AGENT": agent}
    body = counting(environ, lambda status, headers, exc_info=None: None)
    for taken, _piece in enumerate(body, start=1):
        if read_pieces is not None and taken >= read_pieces:
            break  # the client hung up: the server never asks for the next piece
    body.close()  # type: ignore[attr-defined]


def test_counting_app_counts_only_what_the_server_wrote() -> None:
    counting = CountingApp(_wsgi([b"x" * (3 * PIECE_BYTES + 10)]))
    _get(counting, "/bucket/raw/a.mp4", "Lavf/59.27.100", read_pieces=None)
    _get(counting, "/bucket/raw/a.mp4", "Lavf/59.27.100", read_pieces=2)
    records = counting._records
    assert [r.body_bytes for r in records] == [3 * PIECE_BYTES + 10, PIECE_BYTES]
    assert all(r.by_ffmpeg and r.status == 206 for r in records)


def test_control_plane_overhead_excludes_the_ffmpeg_inside_each_window() -> None:
    received = {"a": 10.0, "b": 20.0}
    deleted = {"a": 11.5, "b": 20.9}
    ffmpeg = [(10.2, 11.0), (20.1, 20.5)]
    ffprobe = [(10.05, 10.15), (11.1, 11.2), (20.6, 20.7)]
    overhead, without_probe, encode, probing = overheads(received, deleted, ffmpeg, ffprobe)
    assert overhead == pytest.approx([700.0, 500.0])
    assert without_probe == pytest.approx([500.0, 400.0])
    assert encode == pytest.approx([800.0, 400.0])
    assert probing == pytest.approx([200.0, 100.0])
    control = ControlPlane(2, 2, 3.0, tuple(overhead), tuple(without_probe), (), ())
    assert overhead_percentiles(control)["p50_ms"] == pytest.approx(600.0)
    assert verdict(control_target(control)) == "NOT met"


def test_source_targets_flag_big_stray_files_but_not_the_lock_file() -> None:
    reads = SourceReads(1000, 1020, 3, 1020, 3, 20, 1)
    clean = _run("W", 0, 1.0, 1.0)
    clean.source_reads = reads
    clean.files_on_disk = {"720p.mp4": 5000, "worker.lock": 0}
    clean.peak_python_rss_bytes = 80 * 1024 * 1024
    read, disk, rss = source_targets([clean], {"720p.mp4"})
    assert (read.met, disk.met, rss.met) == (True, True, True)
    clean.files_on_disk["source.mp4"] = 10_000_000
    assert source_targets([clean], {"720p.mp4"})[1].met is False
    assert math.isclose(float(read.value), 1.02)
