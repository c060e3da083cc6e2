"""Publishing a checked HLS stream: layout keys, content types, master last, no stale segments."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from fakes import FakeStorage
from test_hls import PLAN, SOURCE, write_stream

from transcoder.aws.storage import Uploaded
from transcoder.domain.errors import AwsUnavailable
from transcoder.domain.job import hls_prefix
from transcoder.media import hls
from transcoder.runtime import stream

PREFIX = hls_prefix("u1", "v1")


def checked(root: Path, durations: list[float]) -> list[hls.Variant]:
    for target in PLAN.targets:
        write_stream(root, target, durations)
    return hls.check(root, SOURCE, PLAN)


async def test_every_file_lands_at_its_layout_key_with_its_type_and_the_master_last(
    tmp_path: Path,
) -> None:
    storage = FakeStorage()

    record = await stream.publish(
        storage, checked(tmp_path, [2.0, 2.0, 1.0]), tmp_path, PREFIX, segment_s=2.0
    )

    assert storage.uploads[-1] == "transcoded/hls/u1/v1/master.m3u8"
    for name in ("360p", "720p"):
        folder = f"transcoded/hls/u1/v1/{name}/"
        playlist = storage.uploads.index(f"{folder}index.m3u8")
        # a media playlist goes up only once every file it names is there
        for media in ("init.mp4", "seg_00000.m4s", "seg_00001.m4s", "seg_00002.m4s"):
            assert storage.uploads.index(folder + media) < playlist
    types = {key.rsplit("/", 1)[1]: kind for key, kind in storage.content_types.items()}
    assert types == {
        "master.m3u8": "application/vnd.apple.mpegurl",
        "index.m3u8": "application/vnd.apple.mpegurl",
        "init.mp4": "video/mp4",
        "seg_00000.m4s": "video/iso.segment",
        "seg_00001.m4s": "video/iso.segment",
        "seg_00002.m4s": "video/iso.segment",
    }
    master = storage.objects["transcoded/hls/u1/v1/master.m3u8"].decode()
    assert "360p/index.m3u8\n" in master and "720p/index.m3u8\n" in master
    assert record.master_key == "transcoded/hls/u1/v1/master.m3u8"
    assert record.segment_s == 2.0
    low = record.variants["360p"]
    assert (low.playlist_key, low.segments) == ("transcoded/hls/u1/v1/360p/index.m3u8", 3)
    assert (low.width, low.height, low.codecs) == (640, 360, "avc1.64001f,mp4a.40.2")
    assert low.bandwidth >= low.average_bandwidth > 0


async def test_a_shorter_republish_leaves_no_stale_segments_or_renditions(tmp_path: Path) -> None:
    storage = FakeStorage()
    storage.objects["transcoded/hls/u1/v1/1080p/index.m3u8"] = b"old rendition"
    storage.objects["transcoded/hls/u1/v1/360p/seg_00007.m4s"] = b"old segment"
    storage.objects["transcoded/hls/u2/v1/360p/seg_00007.m4s"] = b"someone else's"

    await stream.publish(storage, checked(tmp_path, [2.0, 2.0, 1.0]), tmp_path, PREFIX, segment_s=2)

    left = sorted(key for key in storage.objects if key.startswith(PREFIX))
    files = ("index.m3u8", "init.mp4", "seg_00000.m4s", "seg_00001.m4s", "seg_00002.m4s")
    expected = [f"{PREFIX}{name}/{file}" for name in ("360p", "720p") for file in files]
    assert left == sorted([*expected, f"{PREFIX}master.m3u8"])
    assert "transcoded/hls/u2/v1/360p/seg_00007.m4s" in storage.objects


class CleanupFails(FakeStorage):
    async def delete(self, keys: list[str]) -> None:
        assert self.uploads[-1].endswith("master.m3u8")  # only once the new master is up
        raise AwsUnavailable("s3.delete_objects: throttled")


async def test_a_failed_cleanup_does_not_fail_a_published_stream(tmp_path: Path) -> None:
    storage = CleanupFails()
    storage.objects[f"{PREFIX}360p/seg_00009.m4s"] = b"old"

    record = await stream.publish(
        storage, checked(tmp_path, [2.0, 2.0, 1.0]), tmp_path, PREFIX, segment_s=2.0
    )

    assert record.master_key in storage.objects


class Counting(FakeStorage):
    """Counts the uploads in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = self.most = 0

    async def upload(self, path: Path, key: str, *, content_type: str = "video/mp4") -> Uploaded:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0)
            return await super().upload(path, key, content_type=content_type)
        finally:
            self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_uploads_are_bounded(tmp_path: Path, concurrency: int) -> None:
    for target in PLAN.targets:
        write_stream(tmp_path, target, [2.0] * 8 + [1.0])
    variants = hls.check(tmp_path, dataclasses.replace(SOURCE, duration_s=17.0), PLAN)
    storage = Counting()

    await stream.publish(
        storage, variants, tmp_path, PREFIX, segment_s=2.0, concurrency=concurrency
    )

    assert storage.most == concurrency
