"""The conformance corpus: what each case is, and what the worker makes of it, end to end.

Every case is uploaded to ``raw/corpus/<case>.<ext>``, enqueued through the real enqueue handler,
and transcoded by one worker (``app.build_worker``) against the moto server, with the real
ffmpeg. The renditions are then downloaded and checked with ffprobe the way a viewer would
notice: codec, pixel format, displayed size, no upscaling, duration, audio/video sync, faststart,
colour, progressive frames, frame rate; each rendition's HLS stream is fetched as a player would
(master, media playlist, init, segments) and must match its MP4 (size, colour tags, upright,
duration, audio), every segment starting with a keyframe; the poster, sprite and WebVTT index
likewise (sizes, orientation, cues, tone mapping); the broken cases must be FAILED on their first
attempt with their reason code and publish nothing. A table of outcomes is printed (``pytest -s``
shows it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support import stills as seen

from samples import corpus as corpus_module
from samples.corpus import CASES, Case, ensure_corpus
from transcoder.aws.clients import Clients
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.errors import TranscoderError
from transcoder.domain.job import HlsRecord, hls_prefix, output_key
from transcoder.media import hls
from transcoder.media.verify import top_level_atoms
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import Submitted, submit, wait_for_terminal
from transcoder.runtime import app

E2E_TIMEOUT_S = 480
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.fail("ffmpeg/ffprobe are required for the corpus (apt-get install ffmpeg)")
    started = time.monotonic()
    paths = ensure_corpus()
    print(f"\n[corpus] {len(paths)} cases ready in {time.monotonic() - started:.1f} s")
    return paths


def ffprobe(path: Path) -> dict[str, Any]:
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    done = subprocess.run([*command, str(path)], capture_output=True, check=True, timeout=60)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def streams(info: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [s for s in info["streams"] if s["codec_type"] == kind]


def filter_log(path: Path, graph: str, *, audio: bool = False, stream: str | None = None) -> str:
    """Run a measuring filter over ``path``; return ffmpeg's log (where such filters report)."""
    select = ["-vn", "-af"] if audio else ["-an", "-vf"]
    mapping = ["-map", stream] if stream else []
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(path), *mapping, *select, graph]
    done = subprocess.run(
        [*command, "-f", "null", "-"], capture_output=True, timeout=120, check=True
    )
    return done.stderr.decode(errors="replace")


def mean_saturation(path: Path, seconds: float | None = None) -> float:
    head = f"trim=duration={seconds}," if seconds else ""
    graph = f"{head}format=yuv420p,signalstats,metadata=print:key=lavfi.signalstats.SATAVG"
    log = filter_log(path, graph)
    values = [float(v) for v in re.findall(r"SATAVG=([\d.]+)", log)]
    return sum(values) / max(1, len(values))


@pytest.fixture
def reference_saturation(samples: dict[str, Path]) -> float:
    """How colourful the SDR footage the HDR cases were made from is (the first 2 s)."""
    return mean_saturation(samples["bigbuckbunny"], seconds=2)


# --- the corpus itself --------------------------------------------------------------------------


def test_the_corpus_cases_are_what_they_claim(corpus: dict[str, Path]) -> None:
    def video(name: str) -> dict[str, Any]:
        return streams(ffprobe(corpus[name]), "video")[0]

    rotated = video("rotated_90")
    assert (rotated["width"], rotated["height"]) == (1920, 1080)
    assert rotated["side_data_list"][0]["rotation"] == -90  # a phone's "turn 90 clockwise"
    assert (video("portrait")["width"], video("portrait")["height"]) == (720, 1280)
    odd = video("odd_444")
    assert (odd["width"], odd["height"], odd["pix_fmt"]) == (853, 481, "yuv444p")
    assert odd["profile"] == "High 4:4:4 Predictive"
    assert (video("tiny")["width"], video("uhd_4k")["width"]) == (160, 3840)
    assert (video("fps60")["r_frame_rate"], video("fps120")["r_frame_rate"]) == ("60/1", "120/1")
    vfr = video("vfr")
    assert vfr["r_frame_rate"] == "30/1" and vfr["avg_frame_rate"] != "30/1"
    interlaced = ffprobe(corpus["interlaced_ts"])
    assert interlaced["format"]["format_name"] == "mpegts"
    assert streams(interlaced, "video")[0]["field_order"] == "tt"
    assert streams(interlaced, "video")[0]["sample_aspect_ratio"] == "64:45"
    assert "TFF:    50" in filter_log(corpus["interlaced_ts"], "idet")  # real combing, not a flag
    hdr = video("hdr10_hevc")
    assert (hdr["codec_name"], hdr["pix_fmt"], hdr["color_transfer"]) == (
        "hevc",
        "yuv420p10le",
        "smpte2084",
    )
    assert (hdr["color_primaries"], hdr["color_space"]) == ("bt2020", "bt2020nc")
    assert video("hlg_mov")["color_transfer"] == "arib-std-b67"
    assert (video("vp9_webm")["codec_name"], video("mpeg4_avi")["codec_name"]) == ("vp9", "mpeg4")
    assert ffprobe(corpus["mpeg2_ps"])["format"]["format_name"] == "mpeg"
    assert not streams(ffprobe(corpus["no_audio"]), "audio")
    assert top_level_atoms(corpus["moov_at_end"])[-1] == "moov"
    audio = streams(ffprobe(corpus["multi_audio"]), "audio")
    assert [a["disposition"]["default"] for a in audio] == [0, 1]
    assert corpus["empty"].stat().st_size == 0
    assert not streams(ffprobe(corpus["audio_only"]), "video")


def test_the_picture_checks_can_fail(corpus: dict[str, Path], reference_saturation: float) -> None:
    """The measures the end-to-end test relies on tell right from wrong on the sources."""
    # HDR shown without tone mapping is the washed-out picture users complain about.
    assert mean_saturation(corpus["hdr10_hevc"]) < 0.5 * reference_saturation
    # The first (non-default) audio track is silence.
    silent = filter_log(corpus["multi_audio"], "volumedetect", audio=True, stream="0:a:0")
    assert re.search(r"mean_volume: -(9\d|[1-9]\d\d)(\.\d)? dB", silent), silent[-300:]


def test_the_corpus_is_cached_built_once_and_atomic(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    build = corpus_module._build

    def counting(case: Case, sources: Any, root: Path) -> None:
        built.append(case.name)
        time.sleep(0.2)  # widen the race window
        build(case, sources, root)

    monkeypatch.setattr(corpus_module, "_build", counting)
    assert ensure_corpus() == corpus  # everything cached: nothing rebuilt
    assert built == []

    results: list[dict[str, Path]] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_corpus(["empty", "text"], tmp_path)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(built) == ["empty", "text"]  # built once, whoever asked first
    assert len(results) == 3 and all(r == results[0] for r in results)
    folder = results[0]["text"].parent
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "empty.mp4", "text.mp4"]
    with pytest.raises(ValueError, match="unknown corpus case"):
        ensure_corpus(["nope"], tmp_path)


# --- end to end through the worker --------------------------------------------------------------


class Outcomes:
    """Collects every mismatch so one run reports all of them, then the table."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.rows: list[str] = []

    def expect(self, condition: bool, case: str, what: str) -> None:
        if not condition:
            self.problems.append(f"{case}: {what}")


async def run_worker(
    services: app.Services, settings: Settings, jobs: Sequence[Submitted]
) -> list[dict[str, Any]]:
    """One worker until every job is terminal (bounded), then a clean stop."""
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        return await wait_for_terminal(services, jobs, timeout_s=E2E_TIMEOUT_S, live=False)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=120)


async def output_keys(clients: Clients, settings: Settings) -> set[str]:
    listed = await clients.s3.list_objects_v2(Bucket=settings.bucket, Prefix="transcoded/")
    return {item["Key"] for item in listed.get("Contents", [])}


def check_failed(case: Case, result: dict[str, Any], keys: set[str], out: Outcomes) -> None:
    error = result["error"] or {}
    out.expect(result["status"] == "FAILED", case.name, f"status {result['status']}")
    out.expect(error.get("code") == case.expect.reason, case.name, f"reason {error.get('code')}")
    # Decided on the first attempt (an empty upload is refused before any attempt, at enqueue).
    out.expect(result["attempts"] <= 1, case.name, f"{result['attempts']} attempts")
    written = [k for k in keys if f"/corpus/{case.name}." in k or f"/corpus/{case.name}/" in k]
    out.expect(not written, case.name, f"outputs written: {written}")
    out.rows.append(f"| {case.name} | FAILED `{error.get('code')}` | — |")


def check_video(case: Case, name: str, video: dict[str, Any], out: Outcomes) -> None:
    label = f"{case.name}/{name}"
    size = case.expect.renditions[name]
    out.expect(
        video["codec_name"] == "h264" and video["profile"] == "High", label, "not H.264 High"
    )
    out.expect(video["pix_fmt"] == "yuv420p", label, f"pix_fmt {video['pix_fmt']}")
    out.expect((video["width"], video["height"]) == size, label, f"size {video['width']}x...")
    out.expect(not video.get("side_data_list"), label, "rotation left in the output")
    out.expect(video.get("sample_aspect_ratio") == "1:1", label, "pixels not square")
    out.expect(video.get("field_order") == "progressive", label, f"{video.get('field_order')}")
    fps = float(eval_ratio(video["r_frame_rate"]))
    out.expect(abs(fps - (case.expect.fps or 0)) < 0.01, label, f"{fps} fps")
    transfer = video.get("color_transfer")
    if case.expect.bt709:
        tags = [video.get(k) for k in ("color_primaries", "color_transfer", "color_space")]
        out.expect(tags == ["bt709"] * 3, label, f"colour tags {tags}")
    out.expect(transfer not in HDR_TRANSFERS, label, f"transfer {transfer}")


def eval_ratio(text: str) -> float:
    numerator, _, denominator = text.partition("/")
    return float(numerator) / float(denominator or 1)


def check_timing(
    case: Case, name: str, info: dict[str, Any], source: dict[str, Any], out: Outcomes
) -> None:
    label = f"{case.name}/{name}"
    tolerance = max(0.1, 2 / max(float(source["fps"]), 1))
    duration = float(info["format"]["duration"])
    out.expect(abs(duration - source["duration_s"]) <= tolerance, label, f"duration {duration}")
    video = streams(info, "video")[0]
    audio = streams(info, "audio")
    out.expect(len(audio) == (1 if case.expect.audio else 0), label, f"{len(audio)} audio")
    for track in audio:
        start = abs(float(track["start_time"]) - float(video["start_time"]))
        end = abs(float(track["duration"]) - float(video["duration"]))
        out.expect(track["codec_name"] == "aac", label, "audio not AAC")
        out.expect(start <= 0.05 and end <= tolerance, label, f"A/V skew {start:.3f}/{end:.3f}s")


def check_pictures(case: Case, path: Path, reference_saturation: float, out: Outcomes) -> None:
    """What only decoding shows: combing, washed-out colour, the wrong audio track."""
    if case.name == "interlaced_ts":
        pattern = r"Multi frame detection: TFF:\s*(\d+) BFF:\s*(\d+)"
        found = re.search(pattern, filter_log(path, "idet"))
        combed = int(found.group(1)) + int(found.group(2)) if found else -1
        out.expect(0 <= combed <= 2, case.name, f"{combed} frames still interlaced")
    if case.expect.bt709:
        saturation = mean_saturation(path)
        vivid = saturation >= 0.75 * reference_saturation
        out.expect(vivid, case.name, f"washed out: saturation {saturation:.1f}")
    if case.name == "multi_audio":
        log = filter_log(path, "volumedetect", audio=True)
        found = re.search(r"mean_volume: (-?[\d.]+) dB", log)
        level = float(found.group(1)) if found else -999.0
        out.expect(level > -50, case.name, f"the silent, non-default track was used ({level} dB)")


def video_packets(path: Path) -> list[tuple[int, bool]]:
    """(byte position, keyframe) of every video packet, from ffprobe."""
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries"]
    command += ["packet=pos,flags", "-of", "csv=p=0", str(path)]
    done = subprocess.run(command, capture_output=True, check=True, timeout=60, text=True)
    rows = [line.split(",") for line in done.stdout.splitlines() if line.strip()]
    return [(int(pos), "K" in flags) for pos, flags, *_ in rows if pos.isdigit()]


async def check_hls_variant(
    case: Case, name: str, mp4: dict[str, Any], storage: Storage, folder: Path, out: Outcomes
) -> tuple[tuple[str, float], ...]:
    """Fetch one rendition's HLS as a player would; compare it with the MP4 rendition."""
    label = f"{case.name}/hls/{name}"
    prefix = f"{hls_prefix('corpus', case.name)}{name}/"
    local = folder / f"{case.name}-hls-{name}"
    local.mkdir()
    await storage.download(prefix + hls.PLAYLIST, local / hls.PLAYLIST)
    playlist = hls.parse_media_playlist((local / hls.PLAYLIST).read_text())
    out.expect(playlist.ended and playlist.map_uri == hls.INIT, label, "not a VOD fMP4 playlist")
    whole = local / "whole.mp4"  # init + segments: the byte stream a player's buffer holds
    starts = []
    with whole.open("wb") as joined:
        for uri in [hls.INIT, *(uri for uri, _ in playlist.segments)]:
            await storage.download(prefix + uri, local / uri)
            starts.append(joined.tell())
            joined.write((local / uri).read_bytes())
    packets = video_packets(whole)
    for number, start in enumerate(starts[1:]):
        first = next((key for pos, key in packets if pos >= start), False)
        out.expect(first, label, f"segment {number} does not start with a keyframe")
    info = ffprobe(whole)
    video = streams(info, "video")[0]
    keys = ("width", "height", "color_primaries", "color_transfer", "color_space", "pix_fmt")
    differ = {k: (video.get(k), mp4.get(k)) for k in keys if video.get(k) != mp4.get(k)}
    out.expect(not differ, label, f"HLS video differs from the MP4's: {differ}")
    out.expect(not video.get("side_data_list"), label, "rotation left in the HLS stream")
    total = sum(seconds for _, seconds in playlist.segments)
    out.expect(abs(total - float(mp4["duration"])) <= 0.1, label, f"EXTINFs add up to {total}")
    audio = len(streams(info, "audio"))
    out.expect(audio == (1 if case.expect.audio else 0), label, f"{audio} audio streams")
    return playlist.segments


async def check_hls(
    case: Case,
    record: HlsRecord | None,
    videos: dict[str, dict[str, Any]],
    storage: Storage,
    folder: Path,
    out: Outcomes,
) -> None:
    """Every produced rendition is in the master playlist and plays as HLS like its MP4."""
    if record is None:
        out.expect(False, case.name, "no HLS in the record")
        return
    prefix = hls_prefix("corpus", case.name)
    out.expect(record.master_key == prefix + hls.MASTER, case.name, f"master {record.master_key}")
    out.expect(sorted(record.variants) == sorted(videos), case.name, f"{sorted(record.variants)}")
    await storage.download(record.master_key, folder / f"{case.name}-master.m3u8")
    master = (folder / f"{case.name}-master.m3u8").read_text().splitlines()
    for name, mp4 in videos.items():
        await check_hls_variant(case, name, mp4, storage, folder, out)
        uri = f"{name}/{hls.PLAYLIST}"
        info = next((master[i - 1] for i, line in enumerate(master) if line == uri), "")
        label = f"{case.name}/hls/{name}"
        resolution = f"RESOLUTION={mp4['width']}x{mp4['height']}"
        out.expect(resolution in info and "BANDWIDTH=" in info, label, f"master says {info!r}")
        audio = "mp4a.40.2" in info
        out.expect('"avc1.64' in info and audio == case.expect.audio, label, f"codecs {info!r}")


async def check_completed(
    case: Case,
    result: dict[str, Any],
    storage: Storage,
    folder: Path,
    reference_saturation: float,
    out: Outcomes,
    hls_record: HlsRecord | None = None,
) -> None:
    status = f"status {result['status']} {result['error']}"
    out.expect(result["status"] == "COMPLETED", case.name, status)
    out.expect(result["attempts"] == 1, case.name, f"{result['attempts']} attempts")
    source = result["source"] or {}
    shown = (source.get("display_width", 0), source.get("display_height", 0))
    sizes = []
    videos: dict[str, dict[str, Any]] = {}
    for name, size in case.expect.renditions.items():
        record = result["renditions"].get(name, {})
        if size is None:
            out.expect(record.get("status") == "SKIPPED", case.name, f"{name} not skipped")
            out.expect("no upscaling" in record.get("reason", ""), case.name, f"{name} reason")
            continue
        key = output_key(name, "corpus", case.name)
        done = record.get("key") == key and record.get("status") == "COMPLETED"
        out.expect(done, case.name, f"{name} record {record}")
        path = folder / f"{case.name}-{name}.mp4"
        await storage.download(key, path)
        info = ffprobe(path)
        video = streams(info, "video")[0]
        check_video(case, name, video, out)
        check_timing(case, name, info, source, out)
        out.expect(min(size) <= min(shown) and max(size) <= max(shown), case.name, "upscaled")
        atoms = top_level_atoms(path)
        out.expect(atoms.index("moov") < atoms.index("mdat"), case.name, f"boxes {atoms}")
        check_pictures(case, path, reference_saturation, out)
        sizes.append(f"{name} {video['width']}x{video['height']}")
        videos[name] = video
    await check_hls(case, hls_record, videos, storage, folder, out)
    skipped = [n for n, s in case.expect.renditions.items() if s is None]
    detail = ", ".join(sizes) + (f"; {', '.join(skipped)} skipped" if skipped else "")
    out.rows.append(f"| {case.name} | COMPLETED | {detail} |")


async def check_stills(
    case: Case, services: app.Services, folder: Path, reference_saturation: float, out: Outcomes
) -> None:
    """Poster, sprite and VTT published, at the top rendition's size, upright, tone-mapped."""
    stored = await services.store.get("corpus", case.name)
    record = stored.model_dump(mode="json") if stored else {}
    top = max((size for size in case.expect.renditions.values() if size), key=min)
    try:
        found = await seen.download(services.storage, "corpus", case.name, folder)
    except TranscoderError as exc:
        out.expect(False, case.name, f"stills not published: {exc}")
        return
    tolerance = max(0.1, 2 / max(float(record["source"]["fps"]), 1))
    for problem in seen.problems(record, found, top, tolerance):
        out.expect(False, case.name, problem)
    if case.expect.bt709:  # tone-mapped like the MP4s: neither washed out nor crushed
        saturation = seen.picture_stat(found.poster, "SATAVG")
        luma = seen.picture_stat(found.poster, "YAVG")
        vivid = saturation >= 0.75 * reference_saturation and 48 <= luma <= 200
        out.expect(vivid, case.name, f"poster saturation {saturation:.1f}, luma {luma:.0f}")


@pytest.mark.slow
async def test_every_corpus_case_through_the_worker(
    corpus: dict[str, Path],
    clients: Clients,
    settings: Settings,
    resources: Resources,
    reference_saturation: float,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    jobs = await submit(clients, settings, [corpus[name] for name in CASES], user_id="corpus")
    assert [job.video_id for job in jobs] == list(CASES)
    services = await app.connect(clients, settings)
    results = await run_worker(services, settings.model_copy(update={"slots": 2}), jobs)
    elapsed_s = time.monotonic() - started
    keys = await output_keys(clients, settings)
    out = Outcomes()
    for case, result in zip(CASES.values(), results, strict=True):
        if case.expect.status == "FAILED":
            check_failed(case, result, keys, out)
        else:
            stored = await services.store.get("corpus", case.name)
            await check_completed(
                case,
                result,
                services.storage,
                tmp_path,
                reference_saturation,
                out,
                stored.hls if stored else None,
            )
            await check_stills(case, services, tmp_path, reference_saturation, out)
    print(f"\n[corpus] {len(jobs)} jobs through one worker in {elapsed_s:.1f} s")
    print("| case | outcome | renditions |\n|---|---|---|\n" + "\n".join(out.rows))
    assert not out.problems, "\n".join(out.problems)


@pytest.mark.parametrize(
    ("limits", "case", "reason"),
    [
        ({"max_input_duration_s": 1.5}, "tiny", "input_too_long"),
        ({"max_input_bytes": 10_000}, "tiny", "input_too_large"),
    ],
)
async def test_limits_are_permanent_failures_on_the_first_attempt(
    corpus: dict[str, Path],
    clients: Clients,
    settings: Settings,
    resources: Resources,
    limits: dict[str, Any],
    case: str,
    reason: str,
) -> None:
    # Submitted under the default limits (the enqueue handler lets it through); the worker's
    # own, stricter limits then refuse it before any ffmpeg work.
    jobs = await submit(clients, settings, [corpus[case]], user_id="corpus")
    services = await app.connect(clients, settings)
    [result] = await run_worker(services, settings.model_copy(update=limits), jobs)
    assert (result["status"], result["attempts"]) == ("FAILED", 1)
    assert result["error"]["code"] == reason
    assert not await output_keys(clients, settings)
