"""The enqueue Lambda without the emulator: event shapes as AWS documents them (built in
tests/support/events.py), key decoding, configuration and the report."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from support.events import ETAG, TEST_EVENT, eventbridge_event, s3_event, s3_record

from enqueue_lambda.config import DEFAULT_EXTENSIONS, ConfigError, table_from_env
from enqueue_lambda.events import Upload, decode_key, s3_event_for, sequencer, uploads_from_event
from enqueue_lambda.handler import EnqueueConfig, Report


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("raw/u1/my+holiday.mp4", "raw/u1/my holiday.mp4"),
        ("raw/u1/a%2Bb.mp4", "raw/u1/a+b.mp4"),
        ("raw/u1/vid%C3%A9o+%C3%A9t%C3%A9.mov", "raw/u1/vidéo été.mov"),
        ("raw/user%2D1/clip%5F01.MP4", "raw/user-1/clip_01.MP4"),
        ("raw/%E6%97%A5%E6%9C%AC/v.mp4", "raw/日本/v.mp4"),
        ("raw/u1/100%25.mp4", "raw/u1/100%.mp4"),
    ],
)
def test_keys_are_decoded_as_s3_encodes_them(encoded: str, decoded: str) -> None:
    (upload,), ignored = uploads_from_event(s3_event(s3_record(encoded)))
    assert (upload.key, upload.problem, ignored) == (decoded, None, [])
    (bridged,), _ = uploads_from_event(eventbridge_event(encoded))
    assert bridged.key == decoded


def test_a_key_that_is_not_utf8_is_flagged_not_raised() -> None:
    key, problem = decode_key("raw/u1/%FF%FE.mp4")
    assert key == "raw/u1/%FF%FE.mp4"
    assert problem is not None and "UTF-8" in problem


def test_s3_record_fields_are_normalised() -> None:
    record = s3_record("raw/u1/v1.mp4", etag=f'"{ETAG}"', version_id="3HL4kqtJlcpXroDTDmJ")
    (upload,), _ = uploads_from_event(s3_event(record))
    assert upload == Upload(
        bucket="media-bucket",
        key="raw/u1/v1.mp4",
        size=1305107,
        etag=ETAG,
        version_id="3HL4kqtJlcpXroDTDmJ",
        sequencer="0C0F6F405D6ED209E1".rjust(64, "0"),
        event_time=datetime(2019, 9, 3, 19, 37, 27, 192000, tzinfo=UTC),
    )


def test_eventbridge_object_created_is_an_upload() -> None:
    (upload,), ignored = uploads_from_event(eventbridge_event("raw/u1/v1.mp4"))
    assert ignored == []
    assert (upload.bucket, upload.size, upload.etag) == ("media-bucket", 5, ETAG)
    assert upload.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"


@pytest.mark.parametrize(
    "event",
    [
        TEST_EVENT,
        {"Records": [{"eventSource": "aws:sqs", "body": "{}"}]},
        {"hello": "world"},
        s3_event({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}),
    ],
    ids=["test-event", "sqs", "unknown", "malformed"],
)
def test_other_events_are_ignored_with_a_note(event: dict[str, Any]) -> None:
    uploads, ignored = uploads_from_event(event)
    assert uploads == []
    assert len(ignored) == 1


def test_multi_record_events_keep_every_record() -> None:
    records = [s3_record(f"raw/u1/v{i}.mp4") for i in range(10)]
    records.insert(3, s3_record("raw/u1/gone.mp4", event_name="ObjectRemoved:Delete"))
    records.insert(5, s3_record("raw/u1/x.mp4", event_name="ObjectRestore:Post"))
    uploads, ignored = uploads_from_event(s3_event(*records))
    assert [u.key for u in uploads if not u.removed] == [f"raw/u1/v{i}.mp4" for i in range(10)]
    assert [u.key for u in uploads if u.removed] == ["raw/u1/gone.mp4"]
    assert len(ignored) == 1


@pytest.mark.parametrize(
    "event",
    [
        s3_event(s3_record("raw/u1/v1.mp4", event_name="ObjectRemoved:Delete")),
        eventbridge_event("raw/u1/v1.mp4", detail_type="Object Deleted"),
    ],
    ids=["s3", "eventbridge"],
)
def test_deletions_are_read_from_both_event_shapes(event: dict[str, Any]) -> None:
    (upload,), ignored = uploads_from_event(event)
    assert ignored == []
    assert (upload.key, upload.removed) == ("raw/u1/v1.mp4", True)


def test_suspended_versioning_null_version_falls_back_to_the_etag() -> None:
    (upload,), _ = uploads_from_event(s3_event(s3_record("raw/u/v.mp4", version_id="null")))
    assert (upload.version_id, upload.etag) == (None, ETAG)


def test_local_event_round_trips_through_the_parser() -> None:
    head = {"ContentLength": 42, "ETag": f'"{ETAG}"'}
    event = s3_event_for("media-bucket", "raw/u1/my clip+1.mp4", head, "eu-west-1")
    assert event["Records"][0]["s3"]["object"]["key"] == "raw/u1/my+clip%2B1.mp4"
    (upload,), _ = uploads_from_event(event)
    assert (upload.key, upload.size, upload.etag) == ("raw/u1/my clip+1.mp4", 42, ETAG)


def test_sequencers_compare_as_padded_hex() -> None:
    short, long = sequencer("FF"), sequencer("0100")
    assert short is not None and long is not None and short < long
    assert sequencer("not hex") is None
    assert sequencer(None) is None


def test_config_from_env_defaults_and_overrides() -> None:
    base = {"TRANSCODER_TABLE": "jobs", "TRANSCODER_QUEUE_URL": "https://sqs.example/q"}
    assert EnqueueConfig.from_env(base).allowed_extensions == DEFAULT_EXTENSIONS
    config = EnqueueConfig.from_env(
        {
            **base,
            "TRANSCODER_ALLOWED_EXTENSIONS": "MP4, .mov",
            "TRANSCODER_MAX_INPUT_BYTES": "1000",
            "TRANSCODER_RENDITIONS": "720p",
        }
    )
    assert config.allowed_extensions == frozenset({"mp4", "mov"})
    assert (config.max_input_bytes, config.renditions) == (1000, ("720p",))


def test_config_errors_name_every_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        EnqueueConfig.from_env(
            {
                "TRANSCODER_QUEUE_URL": "jobs",
                "TRANSCODER_MAX_INPUT_BYTES": "-1",
                "TRANSCODER_ALLOWED_EXTENSIONS": "mp4,../x",
                "TRANSCODER_RENDITIONS": "720",
            }
        )
    message = str(caught.value)
    for name in (
        "TRANSCODER_TABLE",
        "TRANSCODER_QUEUE_URL",
        "TRANSCODER_MAX_INPUT_BYTES",
        "TRANSCODER_ALLOWED_EXTENSIONS",
        "TRANSCODER_RENDITIONS",
    ):
        assert name in message
    with pytest.raises(ConfigError, match="TRANSCODER_TABLE"):
        table_from_env({})


def test_a_misconfigured_lambda_fails_its_init_phase_with_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCODER_")}
    env.update(AWS_LAMBDA_FUNCTION_NAME="enqueue", TRANSCODER_QUEUE_URL="jobs")
    result = subprocess.run(
        [sys.executable, "-c", "import enqueue_lambda.handler"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ConfigError" in result.stderr
    assert "TRANSCODER_TABLE" in result.stderr and "TRANSCODER_QUEUE_URL" in result.stderr


def test_report_lists_every_outcome() -> None:
    assert set(Report().as_dict()) == {
        "queued",
        "duplicates",
        "held",
        "stale",
        "rejected",
        "deleted",
        "ignored",
        "errors",
    }
