"""The job contract: the message schema, content identity, key parsing, record attribute values."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from transcoder.domain.job import (
    InvalidKeyError,
    JobMessage,
    RawKey,
    Reason,
    derive_job_id,
    newer_schema,
    output_key,
    parse_raw_key,
    raw_ids,
)

EXTENSIONS = frozenset({"mp4", "mov", "mpg"})


def message(**overrides: object) -> JobMessage:
    fields: dict[str, object] = {
        "bucket": "media",
        "key": "raw/u1/v1.mp4",
        "raw": RawKey("u1", "v1", "mp4"),
        "etag": '"abc123"',
        "version_id": None,
        "trace_id": "t-1",
    }
    fields.update(overrides)
    return JobMessage.for_object(**fields)  # type: ignore[arg-type]


def test_job_id_is_the_content_identity() -> None:
    first = derive_job_id("media", "raw/u/v.mp4", version_id=None, etag='"e1"')
    assert first == derive_job_id("media", "raw/u/v.mp4", version_id=None, etag="e1")
    assert first != derive_job_id("media", "raw/u/v.mp4", version_id=None, etag="e2")
    assert first != derive_job_id("media", "raw/u/v.mp4", version_id="v1", etag="e1")
    with pytest.raises(ValueError, match="version id or ETag"):
        derive_job_id("media", "raw/u/v.mp4", version_id=None, etag=None)


def test_message_round_trips_through_json() -> None:
    original = message()
    parsed = JobMessage.model_validate_json(original.model_dump_json())
    assert parsed == original
    assert parsed.renditions == ("720p", "1080p")
    assert parsed.source_etag == "abc123"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": 0}, "greater than or equal to 1"),
        ({"job_id": "0" * 32}, "job_id does not match"),
        ({"renditions": ["720p", "720p"]}, "without duplicates"),
        ({"renditions": ["hd"]}, "not of the form"),
        ({"user_id": "../etc"}, "String should match pattern"),
    ],
)
def test_anything_else_is_a_poison_pill(change: dict[str, object], problem: str) -> None:
    body = json.loads(message().model_dump_json())
    body.update(change)
    with pytest.raises(ValidationError, match=problem):
        JobMessage.model_validate(body)


def test_parse_raw_key_accepts_the_documented_layout() -> None:
    assert parse_raw_key("raw/user_1/clip-01.MP4", EXTENSIONS) == RawKey("user_1", "clip-01", "mp4")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("uploads/u/v.mp4", Reason.INVALID_KEY),
        ("raw/../x.mp4", Reason.INVALID_KEY),
        ("raw/u/v/w.mp4", Reason.INVALID_KEY),
        ("raw/u/.mp4", Reason.INVALID_KEY),
        ("raw//v.mp4", Reason.INVALID_KEY),
        ("raw/u/" + "v" * 129 + ".mp4", Reason.INVALID_KEY),
        ("raw/u/my video.mp4", Reason.INVALID_KEY),
        ("raw/u/v.exe", Reason.UNSUPPORTED_EXTENSION),
        ("raw/u/v", Reason.UNSUPPORTED_EXTENSION),
    ],
)
def test_parse_raw_key_rejects_hostile_keys(key: str, reason: Reason) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        parse_raw_key(key, EXTENSIONS)
    assert caught.value.reason is reason


def test_extension_rejections_keep_the_ids_to_record_under() -> None:
    with pytest.raises(InvalidKeyError) as caught:
        parse_raw_key("raw/u1/v1.exe", EXTENSIONS)
    assert caught.value.ids == ("u1", "v1")


def test_output_key_layout() -> None:
    assert output_key("720p", "u1", "v1") == "transcoded/720p/u1/v1.mp4"


def test_a_newer_producers_message_is_not_poison() -> None:
    """Schema evolution: an extra optional field is ignored; a newer version is recognised."""
    original = message()
    body = original.model_dump(mode="json")
    with_extra = JobMessage.model_validate_json(json.dumps({**body, "priority": "high"}))
    assert with_extra == original
    assert newer_schema(json.dumps({**body, "version": 3})) == 3
    assert newer_schema(json.dumps(body)) is None
    assert newer_schema("not json") is None
    assert newer_schema('["a list"]') is None


def test_the_same_bytes_uploaded_again_is_a_new_job_on_an_unversioned_bucket() -> None:
    first = derive_job_id("m", "raw/u/v.mp4", version_id=None, etag="e", sequencer="0A")
    again = derive_job_id("m", "raw/u/v.mp4", version_id=None, etag="e", sequencer="0B")
    padded = derive_job_id("m", "raw/u/v.mp4", version_id=None, etag="e", sequencer="000A")
    assert first != again
    assert first == padded  # a duplicated notification (however padded) is the same job
    assert derive_job_id("m", "raw/u/v.mp4", version_id=None, etag="e") != first


def test_raw_ids_are_the_ones_the_key_names() -> None:
    assert raw_ids("raw/u1/v1.mp4") == ("u1", "v1")
    assert raw_ids("raw/u1/v1") == ("u1", "v1")
    assert raw_ids("transcoded/u1/v1.mp4") is None
    assert raw_ids("raw/u1/sub/v1.mp4") is None
