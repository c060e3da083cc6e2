"""What the worker does with messages it must not trust, or cannot understand yet (fakes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import BUCKET, FakePipeline, FakeQueue, FakeStorage, FakeStore, delivery, job
from test_worker_outcomes import make_worker, run_until_settled

from transcoder.domain.job import JobMessage, RawKey, Reason, Status
from transcoder.domain.rungs import DEFAULT_LADDER
from transcoder.media.ffmpeg import EncodeOptions
from transcoder.runtime.decision import Label, Poison
from transcoder.runtime.pipeline import Pipeline, PipelineConfig


def pipeline_config(scratch: Path) -> PipelineConfig:
    return PipelineConfig(
        ladder=DEFAULT_LADDER,
        encode=EncodeOptions(preset="veryfast", audio_bitrate_kbps=128, threads=1),
        scratch_dir=scratch,
        max_input_bytes=10**9,
        max_input_duration_s=3600,
        max_fps=60,
        gop_s=2,
        presign_ttl_s=600,
        ffprobe_timeout_s=30,
    )


def body_with(**changes: Any) -> str:
    return json.dumps({**job().model_dump(mode="json"), **changes})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            JobMessage.for_object(
                bucket="someone-elses",
                key="raw/u1/v1.mp4",
                raw=RawKey("u1", "v1", "mp4"),
                etag="e",
                version_id=None,
                trace_id="t",
            ).model_dump_json(),
            "is not this worker's",
        ),
        (
            JobMessage.for_object(
                bucket=BUCKET,
                key="transcoded/720p/u1/v1.mp4",
                raw=RawKey("u1", "v1", "mp4"),
                etag="e",
                version_id=None,
                trace_id="t",
            ).model_dump_json(),
            "is not raw/",
        ),
        (
            JobMessage.for_object(
                bucket=BUCKET,
                key="raw/u2/v9.mp4",
                raw=RawKey("u1", "v1", "mp4"),
                etag="e",
                version_id=None,
                trace_id="t",
            ).model_dump_json(),
            "names u2/v9",
        ),
        ("[1, 2]", "not a job message"),
    ],
    ids=["other-bucket", "outside-raw", "ids-disagree", "a-list"],
)
async def test_an_untrusted_message_is_poison_with_a_reason(body: str, problem: str) -> None:
    queue, store, pipeline = FakeQueue([delivery(body)]), FakeStore(), FakePipeline()
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    (settled,) = worker.settled
    assert settled.label is Label.POISON
    assert isinstance(settled.outcome, Poison)
    assert problem in settled.outcome.error.message
    assert queue.calls == [("dead_letter", Reason.INVALID_MESSAGE)]
    assert store.calls == [] and pipeline.runs == 0


async def test_a_message_from_a_newer_producer_waits_for_a_newer_worker() -> None:
    queue, store, pipeline = (
        FakeQueue([delivery(body_with(version=3, codec="av1"))]),
        FakeStore(),
        FakePipeline(),
    )
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert [s.label for s in worker.settled] == [Label.POSTPONED]
    assert queue.calls == [("visibility", 300)]
    assert store.calls == [] and pipeline.runs == 0


async def test_an_extra_optional_field_from_a_newer_producer_is_ignored() -> None:
    queue, store, pipeline = (
        FakeQueue([delivery(body_with(priority="high"))]),
        FakeStore(),
        FakePipeline(),
    )
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert [s.label for s in worker.settled] == [Label.COMPLETED]


async def test_an_unknown_rendition_fails_permanently_on_the_first_attempt(tmp_path: Path) -> None:
    message = job().model_copy(update={"renditions": ("720p", "2160p")})
    storage = FakeStorage({message.key: b"x" * 100})
    config = pipeline_config(tmp_path)
    queue, store = FakeQueue([delivery(message.model_dump_json())]), FakeStore()
    worker = make_worker(queue, store, Pipeline(storage, config))  # the real pipeline
    await run_until_settled(worker)
    assert [s.label for s in worker.settled] == [Label.FAILED]
    record = store.get()
    assert record is not None and record.status is Status.FAILED
    assert record.error is not None and record.error.code == Reason.UNKNOWN_RENDITION
    assert "2160p" in record.error.message
    assert queue.calls == [("delete", "m1")]


async def test_a_deleted_upload_is_failed_before_anything_is_read(tmp_path: Path) -> None:
    message = job()
    storage = FakeStorage({})  # the key is gone
    config = pipeline_config(tmp_path)
    queue, store = FakeQueue([delivery(message.model_dump_json())]), FakeStore()
    worker = make_worker(queue, store, Pipeline(storage, config))
    await run_until_settled(worker)
    record = store.get()
    assert record is not None and record.error is not None
    assert (record.status, record.error.code) == (Status.FAILED, Reason.SOURCE_DELETED)
    assert storage.objects == {}  # nothing published
