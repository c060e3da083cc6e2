"""S3 and EventBridge events as AWS documents them: the S3 user guide's "Event message structure"
(S3 -> Lambda, event version 2.1) and "EventBridge event message structure" (``Object Created``)."""

from __future__ import annotations

from typing import Any

ETAG = "b21b84d653bb07b05b1e6b33684dc11b"


def s3_record(
    key: str,
    *,
    bucket: str = "media-bucket",
    size: int = 1305107,
    etag: str = ETAG,
    version_id: str | None = None,
    seq: str = "0C0F6F405D6ED209E1",
    event_name: str = "ObjectCreated:Put",
) -> dict[str, Any]:
    """One record exactly as S3 sends it to Lambda; ``key`` is given already URL-encoded."""
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": etag, "sequencer": seq}
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2019-09-03T19:37:27.192Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAINPONIXQXHT3IKHL2"},
        "requestParameters": {"sourceIPAddress": "205.255.255.255"},
        "responseElements": {
            "x-amz-request-id": "D82B88E5F771F645",
            "x-amz-id-2": "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QB"
            "U0Wo=",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "828aa6fc-f7b5-4305-8584-487c791949c1",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3I5XTEXAMAI3E"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def eventbridge_event(
    key: str,
    *,
    bucket: str = "media-bucket",
    size: int = 5,
    etag: str = ETAG,
    version_id: str | None = "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
    seq: str = "00617F08299329D189",
    detail_type: str = "Object Created",
) -> dict[str, Any]:
    """An S3 event as EventBridge delivers it to Lambda; ``key`` given URL-encoded."""
    obj: dict[str, Any] = {"key": key, "size": size, "etag": etag, "sequencer": seq}
    if version_id is not None:
        obj["version-id"] = version_id
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "ca-central-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }


TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2014-10-13T15:57:02.089Z",
    "Bucket": "media-bucket",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


def upload_event(key: str) -> dict[str, Any]:
    """An EventBridge ``Object Created`` event for ``key``, as the sampler counts uploads."""
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "media"}, "object": {"key": key, "size": 10}},
    }
