"""HLS and stills derived from finished MP4s (a stitched job's path) pass the gates a single
pass's own pass, with the same segments: real ffmpeg, real footage, the real ``Publisher``
(with an in-memory storage).

Each clip is encoded twice with the worker's command line: once as a single pass writes it (MP4s,
HLS and stills from one ffmpeg), once MP4s only, from which ``derive`` makes the rest; and once
chunked and stitched (``chunks``, ``stitch``), the case derive is for.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fakes import FakeStorage, job

from transcoder.domain.job import hls_prefix, poster_key, thumbnails_prefix
from transcoder.domain.rungs import Rung
from transcoder.media import derive, encoder, hls, ladder, probe, stills, verify
from transcoder.media.chunks import audio_args, chunk_args, plan_chunks
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.progress import Progress
from transcoder.media.stitch import chunk_outputs, chunk_path, stitch
from transcoder.runtime.pipeline import source_facts
from transcoder.runtime.publish import Encoded, Publisher

LADDER = (
    Rung(name="180p", short_side=180, crf=30, maxrate_kbps=400, bufsize_kbps=800),
    Rung(name="360p", short_side=360, crf=30, maxrate_kbps=1000, bufsize_kbps=2000),
)


def run(args: list[str]) -> None:
    args = [arg for arg in args if arg not in ("-progress", "pipe:1")]
    subprocess.run(["nice", "-n", "10", *args], check=True, capture_output=True, timeout=120)


async def planned(source: Path) -> tuple[probe.MediaInfo, ladder.Plan]:
    media = probe.parse(await probe.run(str(source), timeout_s=30), size_bytes=1)
    return media, ladder.plan(media, LADDER, ("180p", "360p"), max_fps=60, gop_s=2.0)


def single_pass(
    source: Path, media: probe.MediaInfo, plan: ladder.Plan, scratch: Path
) -> tuple[hls.HlsOutput, stills.Stills]:
    """MP4s, HLS and stills from one ffmpeg, as ``pipeline._encode`` runs it."""
    scratch.mkdir(exist_ok=True)
    outputs = {target.name: scratch / f"{target.name}.mp4" for target in plan.targets}
    output = hls.HlsOutput(scratch / "hls", hls.hls_time_s(plan, media.fps))
    output.prepare(plan)
    still = stills.plan(media.duration_s, plan, verify.tolerance_s(media), scratch)
    run(build_args(str(source), plan, outputs, EncodeOptions(), hls_output=output, stills=still))
    still.files.vtt.write_text(stills.vtt_text(still))
    return output, still


def mp4s(source: Path, plan: ladder.Plan, scratch: Path) -> dict[str, Path]:
    """The renditions alone (what a stitch step leaves)."""
    scratch.mkdir(exist_ok=True)
    outputs = {target.name: scratch / f"{target.name}.mp4" for target in plan.targets}
    run(build_args(str(source), plan, outputs, EncodeOptions()))
    return outputs


def frames(path: Path) -> int:
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets"]
    command += ["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    return int(done.stdout.strip())


@pytest.mark.parametrize("clip", ["bigbuckbunny", "bikes"])  # with audio; video only
async def test_derived_hls_and_stills_pass_the_gates_as_the_single_pass_does(
    samples: dict[str, Path], tmp_path: Path, clip: str
) -> None:
    media, plan = await planned(samples[clip])
    single_hls, single_stills = single_pass(samples[clip], media, plan, tmp_path / "single")
    outputs = mp4s(samples[clip], plan, tmp_path / "derived")
    progress = Progress(duration_s=media.duration_s)

    output, still = await derive.derive(
        plan, media, outputs, tmp_path / "derived", hls=True, stills=True, progress=progress
    )

    assert output is not None and still is not None
    tolerance_s = verify.tolerance_s(media)
    stills.check(single_stills, tolerance_s)
    stills.check(still, tolerance_s)  # raises OutputInvalid naming every problem
    assert still == stills.plan(media.duration_s, plan, tolerance_s, tmp_path / "derived")
    theirs = hls.check(single_hls.folder, media, plan)
    ours = hls.check(output.folder, media, plan)
    for mine, single in zip(ours, theirs, strict=True):
        assert (mine.name, mine.segments, mine.duration_s, mine.codecs) == (
            single.name,
            single.segments,
            single.duration_s,
            single.codecs,
        )
        assert (mine.width, mine.height, mine.frame_rate) == (
            single.width,
            single.height,
            single.frame_rate,
        )
        # the same cuts: every segment holds the same GOP as the single pass's
        playlist = hls.parse_media_playlist((mine.folder / hls.PLAYLIST).read_text())
        expected = hls.parse_media_playlist((single.folder / hls.PLAYLIST).read_text())
        assert playlist == expected
    # progress is the stage's: every frame decoded, the whole duration
    assert progress.frame == frames(outputs[plan.targets[0].name])
    assert progress.out_time_s == pytest.approx(media.duration_s, abs=0.2)


async def test_the_stills_alone_report_progress_through_the_whole_decode(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    """The image outputs are stamped 0 s, 1 s, 2 s: without the null output ffmpeg's -progress
    would stop at a few frames and the stall detector would kill a long job's stills."""
    media, plan = await planned(samples["bigbuckbunny"])
    outputs = mp4s(samples["bigbuckbunny"], plan, tmp_path)
    progress = Progress(duration_s=media.duration_s)

    output, still = await derive.derive(
        plan, media, outputs, tmp_path, hls=False, stills=True, progress=progress
    )

    assert output is None and still is not None
    assert progress.frame == frames(outputs["180p"]) > 100
    assert progress.out_time_s > media.duration_s - 0.5
    assert not (tmp_path / "hls").exists()


async def test_a_derived_job_passes_the_publisher_and_is_published_at_the_layout_keys(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    media, plan = await planned(samples["bigbuckbunny"])
    outputs = mp4s(samples["bigbuckbunny"], plan, tmp_path)
    progress = Progress(duration_s=media.duration_s)
    output, still = await derive.derive(
        plan, media, outputs, tmp_path, hls=True, stills=True, progress=progress
    )
    encoded = Encoded(
        media, plan, source_facts(media), outputs, 1.0, hls_output=output, stills=still
    )
    storage = FakeStorage()
    message = job("bunny", "derive")

    published = await Publisher(storage, ffprobe_timeout_s=30).publish(
        message, encoded, progress, []
    )

    assert published.hls is not None and published.poster is not None
    assert published.thumbnails is not None and published.thumbnails.count == 6
    assert sorted(published.hls.variants) == ["180p", "360p"]
    prefix = hls_prefix("derive", "bunny")
    assert published.hls.master_key == f"{prefix}master.m3u8"
    streamed = [key for key in storage.uploads if key.startswith(prefix)]
    assert streamed[-1] == f"{prefix}master.m3u8"  # last, as for a single pass
    for name in ("180p", "360p"):
        for key in ("index.m3u8", "init.mp4", "seg_00000.m4s", "seg_00002.m4s"):
            assert f"{prefix}{name}/{key}" in storage.objects
    assert poster_key("derive", "bunny") in storage.objects
    thumbnails = thumbnails_prefix("derive", "bunny")
    assert storage.content_types[f"{thumbnails}thumbnails.vtt"] == stills.VTT_TYPE


async def stitched(
    source: Path, media: probe.MediaInfo, plan: ladder.Plan, work: Path
) -> dict[str, Path]:
    """The renditions encoded in 4 s chunks and stitched, as issue 15's assembly step has them."""
    chunks = plan_chunks(media, plan, 4.0)
    names = [target.name for target in plan.targets]
    options = EncodeOptions(threads=1)
    for chunk in chunks.chunks:
        args = chunk_args(
            str(source), plan, chunks, chunk, chunk_outputs(work, names, chunk.index), options
        )
        await encoder.run(args, Progress())
    audio = work / "audio.m4a"
    await encoder.run(audio_args(str(source), plan, audio, options), Progress())
    outputs = {name: work / f"{name}.mp4" for name in names}
    for name, path in outputs.items():
        files = [chunk_path(work, name, chunk.index) for chunk in chunks.chunks]
        await stitch(chunks, name, files, audio, path)
    return outputs


async def test_derived_from_stitched_renditions_the_stream_has_the_single_pass_segments(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "bbb-12s.mp4"  # three chunks of 4 s
    looped = ["nice", "-n", "10", "ffmpeg", "-nostdin", "-v", "error", "-stream_loop", "-1"]
    looped += ["-i", str(samples["bigbuckbunny"]), "-t", "12", "-c:v", "libx264"]
    subprocess.run([*looped, "-preset", "ultrafast", "-c:a", "aac", str(source)], check=True)
    media, plan = await planned(source)
    single_hls, _ = single_pass(source, media, plan, tmp_path / "single")
    work = tmp_path / "stitched"
    work.mkdir()
    outputs = await stitched(source, media, plan, work)

    output, still = await derive.derive(
        plan, media, outputs, work, hls=True, stills=True, progress=Progress()
    )

    assert output is not None and still is not None
    stills.check(still, verify.tolerance_s(media))
    for mine, single in zip(
        hls.check(output.folder, media, plan),
        hls.check(single_hls.folder, media, plan),
        strict=True,
    ):
        assert mine.segments == single.segments == 6
        ours = hls.parse_media_playlist((mine.folder / hls.PLAYLIST).read_text())
        theirs = hls.parse_media_playlist((single.folder / hls.PLAYLIST).read_text())
        assert [uri for uri, _ in ours.segments] == [uri for uri, _ in theirs.segments]
        for (_, length), (_, expected) in zip(ours.segments, theirs.segments, strict=True):
            assert length == pytest.approx(expected, abs=0.001)


async def test_a_long_video_s_sprite_from_keyframes_alone_is_the_full_decode_s(
    tmp_path: Path,
) -> None:
    """104 s at 25 fps: 2 s tiles, one GOP each, so tile k is the keyframe at 2k s either way."""
    source = tmp_path / "pattern.mp4"
    pattern = ["nice", "-n", "10", "ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi"]
    pattern += ["-i", "testsrc2=s=320x180:r=25:d=104", "-c:v", "libx264", "-preset", "ultrafast"]
    subprocess.run([*pattern, str(source)], check=True, timeout=120)
    media, plan = await planned(source)
    outputs = mp4s(source, plan, tmp_path / "mp4")
    progress = Progress(duration_s=media.duration_s)

    _, still = await derive.derive(
        plan, media, outputs, tmp_path, hls=False, stills=True, progress=progress
    )

    assert still is not None and still.interval_s == 2 and still.count == 52
    stills.check(still, verify.tolerance_s(media))
    assert progress.frame == 52  # the decoder gave the keyframes alone: 2600 frames / 50
    full = stills.plan(media.duration_s, plan, verify.tolerance_s(media), tmp_path / "full")
    (tmp_path / "full").mkdir()
    run(derive.stills_args(plan, full, outputs[plan.targets[0].name]))
    assert still.files.sprite.read_bytes() == full.files.sprite.read_bytes()
