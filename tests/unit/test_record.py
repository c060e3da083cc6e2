"""The job record's codec: boto3's TypeSerializer/TypeDeserializer, numbers exact, nothing lost."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes import SOURCE, job, record_for
from pydantic import ValidationError

from transcoder.domain.record import JobRecord, RecordInvalid, from_item, to_item


def test_a_record_round_trips_through_the_item_form() -> None:
    record = record_for(job(), source=SOURCE.model_copy(update={"audio_codec": None}))
    assert from_item(to_item(record)) == record
    assert to_item(record)["pk"] == {"S": "USER#u1"}
    assert to_item(record)["source"]["M"]["audio_codec"] == {"NULL": True}


def test_integers_beyond_a_double_come_back_exactly() -> None:
    item = to_item(record_for(job()))
    item["attempts"] = {"N": "9007199254740993"}
    assert from_item(item).attempts == 9007199254740993
    assert to_item(from_item(item))["attempts"] == {"N": "9007199254740993"}


def test_floats_are_stored_as_their_shortest_repr() -> None:
    record = record_for(job(), lease_expires_at=1767225600.123)
    assert to_item(record)["lease_expires_at"] == {"N": "1767225600.123"}


def test_nan_is_refused_not_stored() -> None:
    with pytest.raises(ValidationError):
        JobRecord(user_id="u", video_id="v", status="QUEUED", lease_expires_at=float("nan"))


def test_attributes_of_a_newer_release_are_kept_on_rewrite() -> None:
    item = to_item(record_for(job()))
    item["priority"] = {"M": {"level": {"N": "3"}, "why": {"S": "vip"}}}
    record = from_item(item)
    assert record.extras() == {"priority": {"level": 3, "why": "vip"}}
    assert to_item(record.model_copy(update={"progress": 5}))["priority"] == item["priority"]


def test_timestamps_are_sortable_strings_with_milliseconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    item = to_item(record_for(job(), updated_at=moment))
    assert item["updated_at"] == {"S": "2026-01-02T03:04:05.678Z"}


def test_an_item_that_does_not_parse_names_its_record() -> None:
    item = to_item(record_for(job()))
    item["status"] = {"S": "EXPLODED"}
    with pytest.raises(RecordInvalid, match="u1/v1"):
        from_item(item)
