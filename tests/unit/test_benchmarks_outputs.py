"""The outputs benchmark's pure parts: the order of the variants, the paired ratios, the noise
floor, the verdict and the table (the runs need ffmpeg: ``python -m benchmarks outputs``)."""

from __future__ import annotations

from typing import Any

from benchmarks.outputs import VARIANTS, Run, markdown, order, spread, summarise

MP4_BYTES = {"mp4": 10_000_000}
BOTH_BYTES = {"mp4": 10_000_000, "hls": 10_100_000, "poster": 200_000, "sprite": 30_000, "vtt": 900}


def _runs(mp4: list[float], both: list[float]) -> list[Run]:
    runs = [Run("mp4", rep, cpu_s=cpu, bytes=dict(MP4_BYTES)) for rep, cpu in enumerate(mp4)]
    runs += [Run("both", rep, cpu_s=cpu, bytes=dict(BOTH_BYTES)) for rep, cpu in enumerate(both)]
    return runs


def test_every_variant_takes_every_position_in_turn() -> None:
    orders = [order(rep) for rep in range(len(VARIANTS))]
    assert orders[0] == ("mp4", "hls", "stills", "both")
    for position in range(len(VARIANTS)):
        assert {o[position] for o in orders} == set(VARIANTS)


def test_each_ratio_is_paired_with_its_own_repetition_so_a_slower_machine_cancels_out() -> None:
    # The machine got 20 % slower in repetition 1: paired ratios stay 1.02, unpaired would not.
    summary = summarise(_runs(mp4=[100.0, 120.0, 101.0], both=[102.0, 122.4, 103.02]))
    both = summary["variants"]["both"]
    assert both["ratios"] == [1.02, 1.02, 1.02]
    assert both["ratio"] == 1.02
    assert summary["target_met"] is True
    assert summary["noise_floor"] == 0.198  # (120 - 100) / 101


def test_a_costlier_variant_misses_the_target_and_the_table_says_so() -> None:
    summary = summarise(_runs(mp4=[100.0, 100.0], both=[108.0, 110.0]))
    assert summary["variants"]["both"]["ratio"] == 1.09
    assert summary["target_met"] is False
    text = markdown(_result(summary))
    assert "**NOT met** (1.09x)" in text
    assert "| both | [108.0, 110.0] | **1.090x** [1.08, 1.1] |" in text


def test_bytes_are_reported_per_output_kind() -> None:
    summary = summarise(_runs(mp4=[100.0], both=[101.0]))
    assert summary["variants"]["both"]["bytes"] == BOTH_BYTES
    assert summary["variants"]["mp4"]["bytes"] == {**dict.fromkeys(BOTH_BYTES, 0), **MP4_BYTES}
    text = markdown(_result(summary))
    assert "| mp4 | [100.0] | 1 (baseline) | 9,766 KiB | - | - | - | - |" in text
    assert "| 9,766 KiB | 9,863 KiB | 195 KiB | 29 KiB | 900 B |" in text


def test_one_repetition_has_no_noise_floor() -> None:
    assert spread([100.0]) is None
    summary = summarise(_runs(mp4=[100.0], both=[101.0]))
    assert "noise floor (MP4-only spread) n/a (one repetition)" in markdown(_result(summary))


def _result(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": {
            "workload": "1080p-moov-end",
            "size": "1920x1080",
            "fps": 25.0,
            "duration_s": 30.0,
            "renditions": ["720p", "1080p"],
        },
        "summary": summary,
        "valid": True,
    }
