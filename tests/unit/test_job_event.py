"""The job event: built from the record alone, and sent with bounded retries by both adapters.

What a consumer of the bus would notice: the detail type, the facts in the detail (keys, sizes,
the poster, the HLS master, the error), nulls where the record has nothing, the same event id on
a retried publication, and that a refused ``PutEvents`` entry is sent again (and only it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from botocore.exceptions import ClientError
from fakes import SOURCE, job, record_for

from enqueue_lambda import bus as lambda_bus
from transcoder import metrics
from transcoder.aws import bus as worker_bus
from transcoder.domain.event import (
    COMPLETED,
    FAILED,
    EventDetail,
    job_event,
    refused_entries,
)
from transcoder.domain.event import (
    SOURCE as EVENT_SOURCE,
)
from transcoder.domain.job import (
    ErrorInfo,
    HlsRecord,
    HlsVariant,
    PosterRecord,
    RenditionRecord,
    RenditionStatus,
    Status,
    ThumbnailsRecord,
    hls_prefix,
    output_key,
    poster_key,
    thumbnails_prefix,
)
from transcoder.domain.record import JobRecord

ENDED = datetime(2026, 12, 2, 3, 30, 0, 123000, tzinfo=UTC)
PREFIX = thumbnails_prefix("u1", "v1")


def completed() -> JobRecord:
    """A record as the worker's final write stores it, with every output."""
    variant = HlsVariant(
        playlist_key=f"{hls_prefix('u1', 'v1')}720p/index.m3u8",
        segments=3,
        bandwidth=2_000_000,
        codecs="avc1.64001f,mp4a.40.2",
        width=1280,
        height=720,
        bytes=1500,
    )
    return record_for(
        job(),
        status=Status.COMPLETED,
        attempts=2,
        rev=7,
        source=SOURCE,
        renditions={
            "720p": RenditionRecord(
                status=RenditionStatus.COMPLETED,
                key=output_key("720p", "u1", "v1"),
                width=1280,
                height=720,
                duration_s=5.0,
                bytes=123_456,
                bitrate_kbps=197,
                encode_s=1.5,
            ),
            "1080p": RenditionRecord(status=RenditionStatus.SKIPPED, reason="never upscaled"),
        },
        poster=PosterRecord(key=poster_key("u1", "v1"), width=1280, height=720, bytes=9000),
        thumbnails=ThumbnailsRecord(
            sprite_key=f"{PREFIX}sprite.jpg",
            vtt_key=f"{PREFIX}thumbnails.vtt",
            interval_s=1.0,
            count=5,
            tile_width=160,
            tile_height=90,
            columns=5,
            rows=1,
            bytes=4000,
        ),
        hls=HlsRecord(
            master_key=f"{hls_prefix('u1', 'v1')}master.m3u8",
            segment_s=2.0,
            variants={"720p": variant},
        ),
        completed_at=ENDED,
        lease_owner=None,
    )


def failed(**changes: Any) -> JobRecord:
    error = ErrorInfo(code="not_a_video", message="ffprobe found no streams", retryable=False)
    fields: dict[str, Any] = {"status": Status.FAILED, "error": error, "failed_at": ENDED}
    return record_for(job(), **{**fields, "attempts": 1, "rev": 3, **changes})


def detail_of(record: JobRecord) -> dict[str, Any]:
    event = job_event(record)
    assert event is not None
    parsed: dict[str, Any] = json.loads(event.entry("bus")["Detail"])
    return parsed


# ---------------------------------------------------------------------------- the builder


def test_a_completed_job_announces_every_output_with_keys_and_sizes() -> None:
    record = completed()
    event = job_event(record)
    assert event is not None
    entry = event.entry("arn:aws:events:us-east-1:123456789012:event-bus/app")
    assert entry["Source"] == EVENT_SOURCE == "transcoder"
    assert entry["DetailType"] == COMPLETED == "Video Transcoded"
    assert entry["EventBusName"] == "arn:aws:events:us-east-1:123456789012:event-bus/app"
    assert entry["Time"] == ENDED
    detail = json.loads(entry["Detail"])
    assert detail["schema_version"] == 1
    assert (detail["job_id"], detail["user_id"], detail["video_id"]) == (
        record.job_id,
        "u1",
        "v1",
    )
    assert detail["status"] == "COMPLETED"
    assert detail["source"]["key"] == "raw/u1/v1.mp4"
    assert (detail["source"]["width"], detail["source"]["height"]) == (1280, 720)
    assert detail["renditions"]["720p"] == {
        "status": "COMPLETED",
        "key": "transcoded/720p/u1/v1.mp4",
        "bytes": 123_456,
        "width": 1280,
        "height": 720,
        "duration_s": 5.0,
        "bitrate_kbps": 197,
        "reason": None,
    }
    assert detail["renditions"]["1080p"]["status"] == "SKIPPED"
    assert detail["poster"] == {
        "key": "transcoded/poster/u1/v1.jpg",
        "width": 1280,
        "height": 720,
        "bytes": 9000,
    }
    assert detail["thumbnails"]["vtt_key"] == "transcoded/thumbnails/u1/v1/thumbnails.vtt"
    assert detail["thumbnails"]["sprite_key"] == "transcoded/thumbnails/u1/v1/sprite.jpg"
    assert detail["hls"] == {
        "master_key": "transcoded/hls/u1/v1/master.m3u8",
        "renditions": ["720p"],
    }
    assert detail["error"] is None and detail["failed_at"] is None
    assert detail["completed_at"] == "2026-12-02T03:30:00.123Z"
    assert (detail["attempts"], detail["trace_id"]) == (2, "t")
    # Nothing internal leaks: no lease, no revision fields, no stored message.
    assert not {"lease_owner", "rev", "write_id", "message"} & set(detail)


def test_a_failed_job_announces_its_error() -> None:
    event = job_event(failed())
    assert event is not None and event.detail_type == FAILED == "Video Failed"
    detail = detail_of(failed())
    assert detail["status"] == "FAILED"
    assert detail["error"] == {
        "code": "not_a_video",
        "message": "ffprobe found no streams",
        "retryable": False,
    }
    assert detail["failed_at"] == "2026-12-02T03:30:00.123Z" and detail["completed_at"] is None
    assert detail["renditions"] == {}


def test_what_the_record_lacks_is_null_in_the_event() -> None:
    # A rejected upload: never probed, nothing produced, no poster, thumbnails or HLS.
    detail = detail_of(failed(source=None))
    assert detail["poster"] is None and detail["thumbnails"] is None and detail["hls"] is None
    assert detail["source"]["duration_s"] is None and detail["source"]["width"] is None
    assert detail["source"]["size_bytes"] == 1  # what S3 said at upload
    # A completed record from before poster/HLS existed announces the renditions alone.
    old = completed().model_copy(update={"poster": None, "thumbnails": None, "hls": None})
    assert detail_of(old)["hls"] is None and detail_of(old)["renditions"]["720p"]["key"]


@pytest.mark.parametrize("status", [Status.QUEUED, Status.PROCESSING])
def test_a_job_that_has_not_ended_announces_nothing(status: Status) -> None:
    assert job_event(record_for(job(), status=status)) is None


def test_a_retried_publication_has_the_same_event_id_and_a_later_end_a_new_one() -> None:
    first = detail_of(
        failed(error=ErrorInfo(code="retries_exhausted", message="x", retryable=True))
    )
    assert (
        first["event_id"]
        == detail_of(
            failed(error=ErrorInfo(code="retries_exhausted", message="x", retryable=True))
        )["event_id"]
    )
    later = detail_of(completed().model_copy(update={"rev": 12}))
    assert later["job_id"] == first["job_id"] and later["event_id"] != first["event_id"]


def test_refused_entries_are_read_from_the_answer_in_request_order() -> None:
    entries = [{"n": 1}, {"n": 2}, {"n": 3}]
    answer = {
        "FailedEntryCount": 1,
        "Entries": [{"EventId": "a"}, {"ErrorCode": "ThrottlingException"}, {"EventId": "c"}],
    }
    assert refused_entries(entries, answer) == [({"n": 2}, "ThrottlingException")]
    assert refused_entries(entries, {"FailedEntryCount": 0, "Entries": []}) == []
    assert len(refused_entries(entries, {"FailedEntryCount": 2})) == 3  # unreadable: all again


# ---------------------------------------------------------------------------- the adapters


class FlakyEvents:
    """PutEvents that answers with the scripted results in turn (a dict, or an exception)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[list[Mapping[str, Any]]] = []

    def answer(self, Entries: Sequence[Mapping[str, Any]]) -> Any:
        self.calls.append(list(Entries))
        result = self.answers.pop(0) if self.answers else {"FailedEntryCount": 0, "Entries": []}
        if isinstance(result, BaseException):
            raise result
        return result


class AsyncFlaky(FlakyEvents):
    async def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Any:
        if self.answers and self.answers[0] == "hang":
            await asyncio.sleep(3600)
        return self.answer(Entries)


class SyncFlaky(FlakyEvents):
    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Any:
        return self.answer(Entries)


THROTTLED = {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException"}]}
ACCEPTED = {"FailedEntryCount": 0, "Entries": [{"EventId": "e-1"}]}


def throttling() -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException"}}, "PutEvents")


async def no_wait(_: float) -> None:
    return None


def failures(detail_type: str) -> float:
    return float(metrics.EVENTS.labels(detail_type, "failed")._value.get())


async def test_the_worker_resends_a_refused_entry_until_it_is_accepted() -> None:
    client = AsyncFlaky(throttling(), THROTTLED, ACCEPTED)
    events = worker_bus.EventBus(client, "app-bus", sleep=no_wait)
    assert await events.publish(completed()) is True
    assert len(client.calls) == 3
    assert client.calls[0] == client.calls[2]  # the very same entry, sent again
    assert client.calls[2][0]["DetailType"] == "Video Transcoded"


async def test_the_worker_gives_up_after_its_tries_counts_and_logs_it() -> None:
    client = AsyncFlaky(*[THROTTLED] * 10)
    events = worker_bus.EventBus(client, "app-bus", attempts=3, sleep=no_wait)
    before = failures("Video Failed")
    with structlog.testing.capture_logs() as lines:
        assert await events.publish(failed()) is False  # never raises
    assert len(client.calls) == 3
    assert failures("Video Failed") == before + 1
    (gave_up,) = [line for line in lines if line["event"] == "event.publish_failed"]
    assert gave_up["job_id"] == failed().job_id and "ThrottlingException" in gave_up["error"]


async def test_a_bus_that_never_answers_does_not_hold_the_worker_past_its_bound() -> None:
    events = worker_bus.EventBus(AsyncFlaky("hang"), "app-bus", timeout_s=0.05)
    before = failures("Video Transcoded")
    assert await events.publish(completed()) is False
    assert failures("Video Transcoded") == before + 1


async def test_the_worker_publishes_nothing_for_a_record_that_has_not_ended() -> None:
    client = AsyncFlaky()
    events = worker_bus.EventBus(client, "app-bus")
    assert await events.publish(record_for(job(), status=Status.PROCESSING)) is True
    assert client.calls == []


def test_the_lambdas_resend_a_refused_entry_and_stop_at_their_deadline() -> None:
    client = SyncFlaky(throttling(), THROTTLED, ACCEPTED)
    slept: list[float] = []
    events = lambda_bus.EventBus(client, "app-bus", sleep=slept.append)
    assert events.publish([failed()]) == 0
    assert len(client.calls) == 3 and client.calls[0] == client.calls[2]
    assert slept == [0.2, 0.4]  # doubling back-off
    stubborn = SyncFlaky(*[THROTTLED] * 10)
    clock = iter(range(0, 100, 3))  # each try "takes" 3 s: the 8 s deadline ends it
    bounded = lambda_bus.EventBus(
        stubborn, "app-bus", attempts=10, sleep=lambda _: None, monotonic=lambda: next(clock)
    )
    assert bounded.publish([failed()]) == 1  # not sent, and never raised
    assert 1 < len(stubborn.calls) < 10


def test_the_lambdas_send_a_batch_ten_at_a_time_and_resend_only_what_was_refused() -> None:
    records = [failed(video_id=f"v{n}", job_id=f"{n:032x}") for n in range(12)]
    second_refused = {
        "FailedEntryCount": 1,
        "Entries": [{"EventId": "a"}, {"ErrorCode": "InternalFailure"}] + [{"EventId": "b"}] * 8,
    }
    client = SyncFlaky(second_refused, ACCEPTED, ACCEPTED)
    events = lambda_bus.EventBus(client, "app-bus", sleep=lambda _: None)
    assert events.publish([*records, record_for(job(), status=Status.QUEUED)]) == 0
    sizes = [len(call) for call in client.calls]
    assert sizes == [10, 1, 2]  # PutEvents takes 10; the refused entry alone; the last 2
    assert json.loads(client.calls[1][0]["Detail"])["video_id"] == "v1"


def test_the_lambdas_publisher_is_off_without_a_bus() -> None:
    assert lambda_bus.build(None) is None and lambda_bus.build("") is None


def test_the_documented_example_is_an_event_this_code_sends() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text("utf-8")
    section = doc.split("## Job events", 1)[1]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert (example["source"], example["detail-type"]) == (EVENT_SOURCE, COMPLETED)
    documented = EventDetail.model_validate(example["detail"])
    sent = detail_of(completed())
    assert set(example["detail"]) == set(sent)  # no field missing from the doc, none invented
    assert documented.hls is not None and documented.hls.master_key.endswith("master.m3u8")
