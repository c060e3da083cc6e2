"""S3 notifications, as S3 delivers them to Lambda or through EventBridge, normalised to uploads.

Both shapes carry the object key URL-encoded the way HTML forms encode it (``+`` is a space,
``%2B`` a plus, ``%C3%A9`` an ``é``; ``/`` is left alone), so keys are decoded with
``unquote_plus`` as UTF-8, strictly: a key that does not decode is rejected, never guessed at.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from transcoder.domain.job import isoformat, utcnow

HEX = re.compile(r"^[0-9A-Fa-f]{1,64}$")


@dataclass(frozen=True, slots=True)
class Upload:
    """One object-created notification, normalised from S3 or EventBridge."""

    bucket: str
    key: str  # decoded; the raw event value when ``problem`` says it could not be decoded
    size: int
    etag: str | None
    version_id: str | None
    sequencer: str | None = None  # zero-padded upper-case hex: compares as a string
    problem: str | None = None
    event_time: datetime | None = None  # when S3 finished the request (orders across keys)
    removed: bool = False  # an ObjectRemoved event: the upload was deleted


def _event_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def _name(container: Any) -> Any:
    return container.get("name") if isinstance(container, Mapping) else None


def decode_key(encoded: str) -> tuple[str, str | None]:
    """The key as stored in S3, or the encoded key and why it could not be decoded."""
    try:
        return unquote_plus(encoded, encoding="utf-8", errors="strict"), None
    except UnicodeDecodeError:
        return encoded, "the key is not valid UTF-8 once percent-decoded"


def sequencer(value: Any) -> str | None:
    """S3's per-key event order: hex of varying length, compared after left-padding with zeros."""
    if isinstance(value, str) and HEX.fullmatch(value):
        return value.upper().rjust(64, "0")
    return None


def _version(value: Any) -> str | None:
    # Unversioned buckets send no version id; suspended versioning sends "null" for every upload,
    # which must not make two uploads of one key the same job.
    return value if isinstance(value, str) and value not in ("", "null") else None


def _upload(
    bucket: Any, obj: Any, fields: tuple[str, str], when: Any, removed: bool = False
) -> Upload | str:
    if not isinstance(obj, Mapping) or not isinstance(bucket, str) or not bucket:
        return "malformed record: no bucket or object"
    size, encoded = obj.get("size", 0 if removed else None), obj.get("key")
    if not isinstance(encoded, str) or not isinstance(size, int) or isinstance(size, bool):
        return "malformed record: no key or size"
    etag = obj.get(fields[0])
    etag = etag.strip('"') if isinstance(etag, str) and etag.strip('"') else None
    version = _version(obj.get(fields[1]))
    if etag is None and version is None and not removed:
        return "malformed record: neither an ETag nor a version id"
    key, problem = decode_key(encoded)
    order = sequencer(obj.get("sequencer"))
    return Upload(bucket, key, size, etag, version, order, problem, _event_time(when), removed)


def _from_s3_record(record: Any) -> Upload | str:
    if not isinstance(record, Mapping):
        return "malformed record"
    name = str(record.get("eventName", ""))
    removed = name.startswith("ObjectRemoved:")
    if record.get("eventSource", "aws:s3") != "aws:s3" or not (
        removed or name.startswith("ObjectCreated:")
    ):
        return f"not an object-created or -removed record: {record.get('eventSource')} {name}"
    s3 = record.get("s3")
    if not isinstance(s3, Mapping):
        return "malformed record: no s3 field"
    fields = ("eTag", "versionId")
    return _upload(
        _name(s3.get("bucket")), s3.get("object"), fields, record.get("eventTime"), removed
    )


def _from_eventbridge(event: Mapping[str, Any]) -> Upload | str:
    kind = event.get("detail-type")
    if kind not in ("Object Created", "Object Deleted"):
        return f"EventBridge {kind!r} event"
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return "malformed EventBridge event: no detail"
    fields = ("etag", "version-id")
    removed = kind == "Object Deleted"
    return _upload(
        _name(detail.get("bucket")), detail.get("object"), fields, event.get("time"), removed
    )


def uploads_from_event(event: Any) -> tuple[list[Upload], list[str]]:
    """S3 notification (``Records``) or EventBridge ``Object Created``/``Object Deleted`` ->
    uploads (deletions have ``removed``), and notes on what was ignored. Never raises."""
    if not isinstance(event, Mapping):
        return [], [f"not an S3 or EventBridge event: a JSON {type(event).__name__}"]
    if event.get("Event") == "s3:TestEvent":
        return [], ["s3:TestEvent"]
    if event.get("source") == "aws.s3":
        parsed = [_from_eventbridge(event)]
    elif isinstance(event.get("Records"), list):
        parsed = [_from_s3_record(record) for record in event["Records"]]
    else:
        parsed = ["not an S3 or EventBridge event"]
    uploads = [p for p in parsed if isinstance(p, Upload)]
    return uploads, [p for p in parsed if isinstance(p, str)]


def s3_event_for(bucket: str, key: str, head: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The event S3 would deliver to Lambda for an object, built from its HeadObject response.

    Local runs (``transcoder submit``, ``transcoder demo``) invoke the handler with this so they
    exercise the production path, key encoding included.
    """
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": int(head.get("ContentLength", 0)),
        "eTag": str(head.get("ETag", "")).strip('"'),
        "sequencer": f"{time.time_ns():018X}",
    }
    if head.get("VersionId"):
        obj["versionId"] = head["VersionId"]
    request_id = uuid.uuid4().hex[:16].upper()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": isoformat(utcnow()),
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": request_id},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "raw-uploads",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "local"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }
