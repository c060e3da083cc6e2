"""The job contract: the message schema, content identity, key parsing, record attribute values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from transcoder.domain.job import (
    InvalidKeyError,
    JobMessage,
    RawKey,
    Reason,
    derive_job_id,
    from_attr,
    output_key,
    parse_raw_key,
    to_attr,
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
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"version": 2}, "Input should be 1"),
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


def test_attribute_values_round_trip() -> None:
    value = {
        "n": 3,
        "f": 2.5,
        "s": "x",
        "b": True,
        "none": None,
        "list": [1, "a"],
        "nested": {"k": 1},
    }
    assert from_attr(to_attr(value)) == value
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert to_attr(moment) == {"S": "2026-01-02T03:04:05.678Z"}
