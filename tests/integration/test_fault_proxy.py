"""The fault proxy against the emulator: each fault is what the SDK would see from AWS.

Real aiobotocore clients talk to moto through ``tests/faults/proxy.py``. An injected error must
reach botocore as the same ``ClientError`` (code, HTTP status) AWS would send, botocore's own
retries must treat it as AWS's (a throttled call retried, then answered), and the transport faults
must surface as the SDK's transport errors, which ``translated`` maps to ``AwsUnavailable``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from faults.proxy import (
    DYNAMODB_THROTTLING,
    DYNAMODB_THROUGHPUT,
    S3_INTERNAL_ERROR,
    S3_SLOW_DOWN,
    SQS_THROTTLING,
    SQS_UNAVAILABLE,
    AwsFault,
    FaultProxy,
    Rule,
    classify,
)

from transcoder.aws.clients import translated
from transcoder.config import Settings
from transcoder.domain.errors import AwsUnavailable
from transcoder.ops.bootstrap import Resources

BODY = bytes(range(256)) * 1024  # 256 KiB


@pytest.fixture
async def proxy(aws_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(aws_endpoint, seed=7) as running:
        yield running


@contextlib.asynccontextmanager
async def client(service: Any, url: str, *, attempts: int = 1, read_timeout_s: float = 10) -> Any:
    config = AioConfig(
        region_name="us-east-1",
        retries={"mode": "standard", "total_max_attempts": attempts},
        read_timeout=read_timeout_s,
        connect_timeout=2,
        s3={"addressing_style": "path"},
        response_checksum_validation="when_required",
    )
    async with get_session().create_client(service, endpoint_url=url, config=config) as made:
        yield made


async def put_source(url: str, settings: Settings) -> None:
    async with client("s3", url) as s3:
        await s3.put_object(Bucket=settings.bucket, Key="raw/u/v.mp4", Body=BODY)


async def read_whole(s3: Any, bucket: str) -> bytes:
    answer = await s3.get_object(Bucket=bucket, Key="raw/u/v.mp4")
    async with answer["Body"] as body:
        data: bytes = await body.read()
    return data


def code_of(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def test_requests_are_told_apart_as_the_sdk_sends_them() -> None:
    dynamo = classify("POST", "/", {"x-amz-target": "DynamoDB_20120810.PutItem"}, {})
    sqs = classify("POST", "/", {"x-amz-target": "AmazonSQS.ReceiveMessage"}, {})
    auth = {"authorization": "AWS4-HMAC-SHA256 Credential=k/20261202/us-east-1/s3/aws4_request"}
    part = classify("PUT", "/b/raw/k.mp4", auth, {"partNumber": "1", "uploadId": "x"})
    presigned = classify(
        "GET", "/b/k", {}, {"X-Amz-Credential": "k/20261202/us-east-1/s3/aws4_request"}
    )
    assert (dynamo.service, dynamo.operation) == ("dynamodb", "PutItem")
    assert (sqs.service, sqs.operation) == ("sqs", "ReceiveMessage")
    assert (part.service, part.operation) == ("s3", "UploadPart")
    assert (presigned.service, presigned.operation) == ("s3", "GetObject")


@pytest.mark.parametrize("fault", [S3_SLOW_DOWN, S3_INTERNAL_ERROR])
async def test_s3_errors_arrive_as_aws_sends_them_and_the_sdk_retries_them(
    proxy: FaultProxy, resources: Resources, settings: Settings, fault: AwsFault
) -> None:
    await put_source(proxy.url, settings)
    proxy.add(Rule("error", "s3", "GetObject", error=fault, count=1))
    async with client("s3", proxy.url) as s3:
        with pytest.raises(ClientError) as raised:
            await s3.get_object(Bucket=settings.bucket, Key="raw/u/v.mp4", Range="bytes=0-9")
    assert code_of(raised.value) == (fault.code, fault.status)
    proxy.add(Rule("error", "s3", "GetObject", error=fault, count=2))
    async with client("s3", proxy.url, attempts=3) as s3:
        answer = await s3.get_object(Bucket=settings.bucket, Key="raw/u/v.mp4", Range="bytes=0-9")
        assert await answer["Body"].read() == BODY[:10]
    assert proxy.injected[("error", "s3", "GetObject")] == 3


@pytest.mark.parametrize("fault", [DYNAMODB_THROTTLING, DYNAMODB_THROUGHPUT])
async def test_dynamodb_throttling_is_json_shaped_and_retried_by_the_sdk(
    proxy: FaultProxy, resources: Resources, settings: Settings, fault: AwsFault
) -> None:
    item = {"pk": {"S": "USER#u"}, "sk": {"S": "VIDEO#v"}}
    proxy.add(Rule("error", "dynamodb", "PutItem", error=fault, count=1))
    async with client("dynamodb", proxy.url) as dynamodb:
        with pytest.raises(ClientError) as raised:
            await dynamodb.put_item(TableName=settings.table, Item=item)
        assert code_of(raised.value) == (fault.code, 400)
        proxy.add(Rule("error", "dynamodb", "PutItem", error=fault, count=1))
        with pytest.raises(AwsUnavailable), translated("dynamodb.put_item"):
            await dynamodb.put_item(TableName=settings.table, Item=item)
    proxy.add(Rule("error", "dynamodb", "PutItem", error=fault, count=2))
    async with client("dynamodb", proxy.url, attempts=3) as dynamodb:
        await dynamodb.put_item(TableName=settings.table, Item=item)
        got = await dynamodb.get_item(TableName=settings.table, Key=item)
    assert got["Item"] == item


@pytest.mark.parametrize("fault", [SQS_THROTTLING, SQS_UNAVAILABLE])
async def test_sqs_json_errors_name_the_code_and_are_retried_by_the_sdk(
    proxy: FaultProxy, resources: Resources, fault: AwsFault
) -> None:
    proxy.add(Rule("error", "sqs", "SendMessage", error=fault, count=1))
    async with client("sqs", proxy.url) as sqs:
        with pytest.raises(ClientError) as raised:
            await sqs.send_message(QueueUrl=resources.queue_url, MessageBody="x")
    assert code_of(raised.value) == (fault.code, fault.status)
    proxy.add(Rule("error", "sqs", "SendMessage", error=fault, count=2))
    async with client("sqs", proxy.url, attempts=3) as sqs:
        sent = await sqs.send_message(QueueUrl=resources.queue_url, MessageBody="x")
    assert sent["MessageId"]
    assert proxy.injected[("error", "sqs", "SendMessage")] == 3


async def test_what_passes_through_is_unchanged(
    proxy: FaultProxy, resources: Resources, settings: Settings
) -> None:
    await put_source(proxy.url, settings)
    async with client("s3", proxy.url) as s3:
        head = await s3.head_object(Bucket=settings.bucket, Key="raw/u/v.mp4")
        assert head["ContentLength"] == len(BODY)
        assert await read_whole(s3, settings.bucket) == BODY
    assert proxy.seen[("s3", "HeadObject")] == 1


async def test_an_answer_lost_after_the_write_was_applied(
    proxy: FaultProxy, resources: Resources, settings: Settings
) -> None:
    item = {"pk": {"S": "USER#lost"}, "sk": {"S": "VIDEO#answer"}}
    proxy.add(Rule("error_after", "dynamodb", "PutItem", error=DYNAMODB_THROTTLING, count=1))
    async with client("dynamodb", proxy.url) as dynamodb:
        with pytest.raises(ClientError):
            await dynamodb.put_item(TableName=settings.table, Item=item)
        got = await dynamodb.get_item(TableName=settings.table, Key=item)
    assert got["Item"] == item  # the caller saw a throttle, yet the write happened


async def test_connection_reset_mid_request_is_a_transport_error(
    proxy: FaultProxy, resources: Resources, settings: Settings
) -> None:
    # aiohttp itself sends an idempotent request again once when a kept-alive connection drops,
    # under botocore's retries: two resets reach the SDK as one failed attempt.
    rule = proxy.add(Rule("reset_request", "s3", "PutObject", after_bytes=1024, count=2))
    async with client("s3", proxy.url) as s3:
        await s3.list_objects_v2(Bucket=settings.bucket)  # a kept-alive connection
        with pytest.raises(AwsUnavailable), translated("s3.put_object"):
            await s3.put_object(Bucket=settings.bucket, Key="raw/u/reset.mp4", Body=BODY)
    async with client("s3", proxy.url) as s3:
        with pytest.raises(ClientError):  # nothing reached the emulator
            await s3.head_object(Bucket=settings.bucket, Key="raw/u/reset.mp4")
    assert rule.fired >= 1


@pytest.mark.parametrize("fault", ["reset_response", "truncate"])
async def test_a_body_cut_short_is_an_error_never_short_data(
    proxy: FaultProxy, resources: Resources, settings: Settings, fault: Any
) -> None:
    await put_source(proxy.url, settings)
    proxy.add(Rule(fault, "s3", "GetObject", after_bytes=4096, count=1))
    async with client("s3", proxy.url) as s3:
        with pytest.raises(AwsUnavailable), translated("s3.get_object"):
            await read_whole(s3, settings.bucket)
    assert proxy.injected[(fault, "s3", "GetObject")] == 1


async def test_a_reset_json_answer_is_retried_by_the_sdk(
    proxy: FaultProxy, resources: Resources
) -> None:
    proxy.add(Rule("reset_response", "sqs", "GetQueueAttributes", after_bytes=5, count=1))
    async with client("sqs", proxy.url, attempts=2) as sqs:
        answer = await sqs.get_queue_attributes(
            QueueUrl=resources.queue_url, AttributeNames=["QueueArn"]
        )
    assert answer["Attributes"]["QueueArn"]
    assert proxy.injected[("reset_response", "sqs", "GetQueueAttributes")] == 1


async def test_latency_delays_and_a_hang_times_out(
    proxy: FaultProxy, resources: Resources, settings: Settings
) -> None:
    proxy.add(Rule("latency", "dynamodb", "DescribeTable", delay_s=0.3, count=1))
    proxy.add(Rule("hang", "dynamodb", "DescribeTable", count=1))
    async with client("dynamodb", proxy.url, read_timeout_s=1) as dynamodb:
        described = await dynamodb.describe_table(TableName=settings.table)
        assert described["Table"]["TableName"] == settings.table
        with pytest.raises(AwsUnavailable), translated("dynamodb.describe_table"):
            await dynamodb.describe_table(TableName=settings.table)
    assert proxy.injected[("latency", "dynamodb", "DescribeTable")] == 1
    assert proxy.injected[("hang", "dynamodb", "DescribeTable")] == 1


async def test_probability_and_skip_are_seeded(
    proxy: FaultProxy, resources: Resources, settings: Settings
) -> None:
    rule = proxy.add(Rule("error", "dynamodb", "DescribeTable", probability=0.5, skip=2))
    async with client("dynamodb", proxy.url) as dynamodb:
        outcomes = []
        for _ in range(12):
            try:
                await dynamodb.describe_table(TableName=settings.table)
                outcomes.append(True)
            except ClientError:
                outcomes.append(False)
    assert outcomes[:2] == [True, True]
    assert 0 < rule.fired < 10 and outcomes.count(False) == rule.fired
