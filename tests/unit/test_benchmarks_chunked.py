"""The chunked benchmark's pure parts: reading the psnr/ssim stats files, the per-boundary seam
figures and the CPU ratios (the runs themselves need ffmpeg: ``python -m benchmarks chunked``)."""

from __future__ import annotations

from benchmarks.chunked import (
    _PSNR_Y,
    _SSIM_ALL,
    Options,
    Run,
    boundary_scores,
    per_frame,
    quality_summary,
    seam_profile,
    summarise,
    vmaf_frames,
)

PSNR_LOG = (
    "n:1 mse_avg:2.51 mse_y:3.01 mse_u:1.02 mse_v:1.50 psnr_avg:44.13 psnr_y:43.34 "
    "psnr_u:48.04 psnr_v:46.37\n"
    "n:2 mse_avg:0.00 mse_y:0.00 mse_u:0.00 mse_v:0.00 psnr_avg:inf psnr_y:inf psnr_u:inf "
    "psnr_v:inf\n"
)
SSIM_LOG = "n:1 Y:0.988 U:0.991 V:0.990 All:0.989123 (19.62)\nn:2 Y:1 U:1 V:1 All:1.000000 (inf)\n"


def test_stats_files_read_as_one_score_per_frame_with_identical_frames_capped() -> None:
    assert per_frame(PSNR_LOG, _PSNR_Y) == [43.34, 100.0]
    assert per_frame(SSIM_LOG, _SSIM_ALL) == [0.989123, 1.0]


def test_a_seam_is_a_boundary_where_chunked_falls_behind_single_more_than_on_average() -> None:
    single = [40.0] * 20
    chunked = [40.0] * 8 + [38.0] + [40.0] * 11  # one bad frame right at the boundary at 8
    assert boundary_scores(chunked, [8, 16]) == [39.5, 40.0]  # frames 6..9 and 14..17
    summary = quality_summary(
        {
            "single-psnr": single,
            "chunked-psnr": chunked,
            "single-ssim": [0.9] * 20,
            "chunked-ssim": [0.9] * 20,
        },
        [8, 16],
    )
    assert summary["psnr_chunked_minus_single"] == -0.1
    assert summary["psnr_worst_seam"] == -0.4  # -0.5 around frame 8, less the -0.1 average
    assert summary["ssim_worst_seam"] == 0.0


def test_the_main_length_is_paired_per_repetition_and_the_sweep_uses_the_median_single() -> None:
    runs = [
        Run("single", None, 0, cpu_s=100.0),
        Run("chunked", 6.0, 0, cpu_s=103.0, chunks=10),
        Run("chunked", 6.0, 1, cpu_s=98.0, chunks=10),
        Run("single", None, 1, cpu_s=90.0),  # the machine got faster: pairing absorbs it
        Run("chunked", 20.0, -1, cpu_s=95.0, chunks=3),
    ]
    summary = summarise(runs, Options(chunk_s=(6.0, 20.0), main_chunk_s=6.0, reps=2))
    assert summary["median_single_cpu_s"] == 95.0
    six, twenty = summary["by_chunk_s"]["6"], summary["by_chunk_s"]["20"]
    assert six["ratio"] == round((1.03 + 98 / 90) / 2, 4)
    assert six["ratio_kind"] == "median of paired repetitions"
    assert (twenty["ratio"], twenty["ratio_kind"]) == (1.0, "vs median single")


def test_vmaf_per_frame_comes_from_libvmafs_json_log_and_gets_its_own_seam_figure() -> None:
    log = (
        '{"version": "2.3.1", "frames": [{"frameNum": 0, "metrics": {"integer_motion": 0.0, '
        '"vmaf": 95.5}}, {"frameNum": 1, "metrics": {"vmaf": 94.25}}], "pooled_metrics": {}}'
    )
    assert vmaf_frames(log) == [95.5, 94.25]
    flat = [0.9] * 20
    summary = quality_summary(
        {
            "single-psnr": [40.0] * 20,
            "chunked-psnr": [40.0] * 20,
            "single-ssim": flat,
            "chunked-ssim": flat,
            "single-vmaf": [95.0] * 20,
            "chunked-vmaf": [95.0] * 8 + [91.0] + [95.0] * 11,
        },
        [8, 16],
    )
    assert summary["vmaf_chunked_minus_single"] == -0.2
    assert summary["vmaf_worst_seam"] == -0.8  # -1.0 around frame 8, less the -0.2 average
    assert "psnr_worst_seam" in summary


def test_the_seam_profile_averages_each_frame_offset_over_the_boundaries() -> None:
    single = [40.0] * 30
    chunked = [39.9] * 30  # -0.1 everywhere: the whole-stream difference, not a seam
    for boundary in (10, 20):
        chunked[boundary] -= 2.0  # the chunk's IDR
        chunked[boundary + 1] -= 1.0
    chunked[9] -= 0.6  # the last frame of the first chunk only
    profile = seam_profile(chunked, single, [10, 20], -0.1)
    assert profile["+0"] == -2.0
    assert profile["+1"] == -1.0
    assert profile["-1"] == -0.3  # -0.6 at one boundary of two
    assert profile["+2"] == profile["-3"] == 0.0
    assert list(profile) == ["-3", "-2", "-1", "+0", "+1", "+2", "+3", "+4", "+5", "+6"]
    summary = quality_summary(
        {
            "single-psnr": single,
            "chunked-psnr": chunked,
            "single-ssim": [0.9] * 30,
            "chunked-ssim": [0.9] * 30,
        },
        [10, 20],
    )
    # The benchmark measures the offset on the stream itself (the dips pull it down a little).
    offset = summary["psnr_chunked_minus_single"]
    assert offset == round(-0.1 - 6.6 / 30, 4)
    assert summary["psnr_seam_profile"] == seam_profile(chunked, single, [10, 20], offset)
    # Windows of frames 8..11 and 18..21, the -0.1 of every frame included.
    assert summary["psnr_mean_seam"] == round((-4.0 - 3.4) / 8 - offset, 4)
