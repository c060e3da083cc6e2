"""The FFmpeg argument builder: pure, compared to literal command lines."""

from __future__ import annotations

from pathlib import Path

from transcoder.media.ffmpeg import EncodeOptions, ProgressSample, build_args, parse_progress_block
from transcoder.media.ladder import ColourIn, Plan, Skipped, Target

T720 = Target("720p", 1280, 720, 23, 4500, 9000)
T1080 = Target("1080p", 1920, 1080, 23, 7800, 15600)
OUT = {"720p": Path("/scratch/720p.mp4"), "1080p": Path("/scratch/1080p.mp4")}
TAIL = [
    *("-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1", "-nostats"),
    *("-max_error_rate", "0.1", "-y"),
]


def test_two_renditions_one_decode_shared_audio_through_tee_from_a_presigned_url() -> None:
    plan = Plan((T720, T1080), (), 0, 1, None, 50, deinterlace=False)

    args = build_args(
        "https://s3.test/b/raw/u/v.mp4?X-Amz-Signature=abc", plan, OUT, EncodeOptions()
    )

    assert args == [
        "ffmpeg",
        *("-reconnect", "1", "-reconnect_delay_max", "10", "-reconnect_on_http_error", "5xx"),
        *("-reconnect_on_network_error", "1", "-rw_timeout", "30000000"),
        *("-i", "https://s3.test/b/raw/u/v.mp4?X-Amz-Signature=abc"),
        "-filter_complex",
        "[0:0]split=2[s0][s1];"
        "[s0]scale=1280:720[s2];[s2]setsar=1[s3];[s3]format=yuv420p[s4];"
        "[s1]scale=1920:1080[s5];[s5]setsar=1[s6];[s6]format=yuv420p[s7]",
        *("-map", "[s4]", "-map", "[s7]", "-map", "0:1", "-f", "tee"),
        *("-ac", "2", "-b:a", "128k", "-bufsize:v:0", "9000k", "-bufsize:v:1", "15600k"),
        *("-c:a", "aac", "-c:v", "libx264", "-crf:v:0", "23", "-crf:v:1", "23"),
        *("-flags", "+cgop", "-g", "50", "-keyint_min", "50"),
        *("-map_chapters", "-1", "-map_metadata", "-1"),
        *("-maxrate:v:0", "4500k", "-maxrate:v:1", "7800k", "-preset", "veryfast"),
        *("-profile:v", "high", "-sc_threshold", "0", "-threads", "0"),
        "[f=mp4:movflags=+faststart:select=\\'v:0,a\\']/scratch/720p.mp4"
        "|[f=mp4:movflags=+faststart:select=\\'v:1,a\\']/scratch/1080p.mp4",
        *TAIL,
    ]


def test_interlaced_high_rate_hdr_source_without_audio() -> None:
    plan = Plan(
        targets=(T720,),
        skipped=(Skipped("1080p", "source short side 720px < 1080px (no upscaling)"),),
        video_index=0,
        audio_index=None,
        output_fps=60.0,
        keyint=120,
        deinterlace=True,
        colour=ColourIn("smpte2084", "bt2020", "bt2020nc", tonemap=True),
    )
    options = EncodeOptions(preset="ultrafast", audio_bitrate_kbps=96, threads=2)

    args = build_args("/in/capture.ts", plan, {"720p": OUT["720p"]}, options)

    assert args == [
        *("ffmpeg", "-i", "/in/capture.ts"),
        "-filter_complex",
        "[0:0]bwdif=deint=interlaced:mode=send_frame:parity=auto[s0];"
        "[s0]fps=fps=60[s1];"
        "[s1]zscale=min=bt2020nc:npl=203:pin=bt2020:t=linear:tin=smpte2084[s2];"
        "[s2]format=pix_fmts=gbrpf32le[s3];"
        "[s3]zscale=p=bt709[s4];"
        "[s4]tonemap=desat=0:tonemap=mobius[s5];"
        "[s5]zscale=m=bt709:r=tv:t=bt709[s6];"
        "[s6]format=pix_fmts=yuv420p[s7];"
        "[s7]scale=1280:720[s8];[s8]setsar=1[s9];[s9]format=yuv420p[s10]",
        *("-map", "[s10]", "-f", "tee", "-bufsize:v:0", "9000k", "-c:v", "libx264"),
        *("-color_primaries", "bt709", "-color_range", "tv", "-color_trc", "bt709"),
        *("-colorspace", "bt709", "-crf:v:0", "23", "-flags", "+cgop"),
        *("-g", "120", "-keyint_min", "120", "-map_chapters", "-1", "-map_metadata", "-1"),
        *("-maxrate:v:0", "4500k", "-preset", "ultrafast", "-profile:v", "high"),
        *("-sc_threshold", "0", "-threads", "2"),
        "[f=mp4:movflags=+faststart:select=\\'v:0\\']/scratch/720p.mp4",
        *TAIL,
    ]


def test_bt2020_sdr_is_converted_without_tone_mapping_and_the_default_audio_is_mapped() -> None:
    plan = Plan(
        targets=(T720,),
        skipped=(),
        video_index=1,
        audio_index=3,
        output_fps=None,
        keyint=60,
        deinterlace=False,
        colour=ColourIn("bt2020-10", "bt2020", "bt2020nc", tonemap=False),
    )

    args = build_args("/in/a.mkv", plan, {"720p": OUT["720p"]}, EncodeOptions())

    assert args[:6] == [
        *("ffmpeg", "-i", "/in/a.mkv", "-filter_complex"),
        "[0:1]zscale=m=bt709:min=bt2020nc:p=bt709:pin=bt2020:r=tv:t=bt709:tin=bt2020-10[s0];"
        "[s0]format=pix_fmts=yuv420p[s1];"
        "[s1]scale=1280:720[s2];[s2]setsar=1[s3];[s3]format=yuv420p[s4]",
        "-map",
    ]
    assert args[6:10] == ["[s4]", "-map", "0:3", "-f"]
    assert "[f=mp4:movflags=+faststart:select=\\'v:0,a\\']/scratch/720p.mp4" in args


def test_progress_blocks_are_parsed() -> None:
    block = {"frame": "250", "out_time_us": "10000000", "speed": "2.5x", "progress": "continue"}
    assert parse_progress_block(block) == ProgressSample(250, 10.0, 2.5, done=False)
    done = {"frame": "N/A", "out_time_ms": "-5", "speed": "N/A", "progress": "end"}
    assert parse_progress_block(done) == ProgressSample(0, 0.0, None, done=True)
