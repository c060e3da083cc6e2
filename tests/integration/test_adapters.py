"""The adapters against the emulator over real HTTP, with the production aiobotocore clients."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from fakes import SOURCE
from records import poke_arguments

from transcoder.aws.clients import Clients
from transcoder.aws.queue import JobQueue
from transcoder.aws.status import JobStore
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.errors import InputRejected, LeaseLost
from transcoder.domain.job import ErrorInfo, JobMessage, Published, RawKey, Reason, Status
from transcoder.domain.record import record_key
from transcoder.domain.transitions import Lease, Refusal, Verdict
from transcoder.ops.bootstrap import Resources, bootstrap

MiB = 1024**2


def job(video: str = "v1", etag: str = "e1") -> JobMessage:
    return JobMessage.for_object(
        bucket="media",
        key=f"raw/u1/{video}.mp4",
        raw=RawKey("u1", video, "mp4"),
        etag=etag,
        version_id=None,
        trace_id="t",
    )


async def test_bootstrap_is_idempotent(clients: Clients, settings: Settings) -> None:
    first = await bootstrap(clients, settings)
    second = await bootstrap(clients, settings)
    assert first == second
    queue = JobQueue(clients.sqs, first.queue_url, first.dlq_url)
    assert await queue.max_receive_count(default=99) == 3


async def test_receive_extend_delete(clients: Clients, resources: Resources) -> None:
    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    await queue.send("hello")
    (delivery,) = await queue.receive(10, wait_s=1, visibility_s=30)
    assert delivery.body == "hello"
    assert delivery.receive_count == 1
    await queue.set_visibility(delivery, 120)
    assert (await queue.depth()).in_flight == 1
    await queue.delete(delivery)
    depth = await queue.depth()
    assert (depth.visible, depth.in_flight) == (0, 0)
    with pytest.raises(LeaseLost):
        await queue.set_visibility(delivery, 10)


async def test_redrive_to_the_dlq_after_three_receives(
    clients: Clients, resources: Resources
) -> None:
    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    await queue.send("doomed")
    for expected_count in (1, 2, 3):
        (delivery,) = await queue.receive(1, wait_s=1, visibility_s=30)
        assert delivery.receive_count == expected_count
        await queue.set_visibility(delivery, 0)
    assert await queue.receive(1, wait_s=1, visibility_s=30) == []
    dlq = JobQueue(clients.sqs, resources.dlq_url, None)
    (dead,) = await dlq.receive(1, wait_s=1, visibility_s=30)
    assert dead.body == "doomed"


async def test_poison_is_moved_to_the_dlq_with_its_reason(
    clients: Clients, resources: Resources
) -> None:
    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    await queue.send("{not json")
    (delivery,) = await queue.receive(1, wait_s=1, visibility_s=30)
    await queue.dead_letter(delivery, reason="invalid_message", detail="not JSON")
    assert (await queue.depth()).in_flight == 0
    response = await clients.sqs.receive_message(
        QueueUrl=resources.dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    (dead,) = response["Messages"]
    assert dead["Body"] == "{not json"
    assert dead["MessageAttributes"]["transcoder_reason"]["StringValue"] == "invalid_message"


async def test_claim_and_fenced_writes(clients: Clients, resources: Resources) -> None:
    store = JobStore(clients.dynamodb, resources.table)
    message = job()
    lease = await store.claim(message, owner="w1", lease_s=60)
    assert isinstance(lease, Lease)
    assert lease.attempt == 1
    # A second worker finds the live lease: held, nothing written.
    other = JobStore(clients.dynamodb, resources.table)
    refused = await other.claim(message, owner="w2", lease_s=60)
    assert isinstance(refused, Refusal) and refused.verdict is Verdict.HELD
    await store.renew(lease, lease_s=60, progress=40)
    record = await store.get("u1", "v1")
    assert record is not None
    assert (record.status, record.progress, record.lease_owner) == ("PROCESSING", 40, "w1")

    # The lease lapses (another writer's change: rev moves) and another worker takes over.
    await clients.dynamodb.update_item(
        **poke_arguments(resources.table, "u1", "v1", lease_expires_at=time.time() - 1)
    )
    takeover = await other.claim(message, owner="w2", lease_s=60)
    assert isinstance(takeover, Lease)
    assert takeover.attempt == 2
    # Our store still remembers attempt 1's record: the put is refused, re-decided, fenced off.
    with pytest.raises(LeaseLost):
        await store.mark_completed(lease, Published(renditions={}))
    error = ErrorInfo(code=Reason.NOT_A_VIDEO, message="text", retryable=False)
    await other.mark_failed(takeover, error)
    final = await store.get("u1", "v1")
    assert final is not None
    assert final.status == "FAILED"
    assert final.error is not None and final.error.code == "not_a_video"
    assert final.lease_owner is None
    assert final.rev == 5  # claim, renew, poke, claim, fail: every write bumps rev


async def test_status_index_lists_jobs_by_state(clients: Clients, resources: Resources) -> None:
    store = JobStore(clients.dynamodb, resources.table)
    for video in ("a1", "a2"):
        lease = await store.claim(job(video), owner="w", lease_s=60)
        assert isinstance(lease, Lease)
        await store.release(lease, None)
    queued = await store.list_by_status(Status.QUEUED)
    assert {r.video_id for r in queued} == {"a1", "a2"}
    assert await store.list_by_status(Status.COMPLETED) == []


async def test_a_write_applied_but_answered_lost_is_recognised(
    clients: Clients, resources: Resources
) -> None:
    """DynamoDB applied the put; its answer was lost; the SDK's retry then fails the condition."""
    store = JobStore(clients.dynamodb, resources.table)
    message = job("lost")
    original = clients.dynamodb.put_item

    async def applied_then_retried(**kwargs: Any) -> Any:
        await original(**kwargs)  # applied...
        return await original(**kwargs)  # ...and sent again: ConditionalCheckFailed

    with patch.object(clients.dynamodb, "put_item", applied_then_retried):
        lease = await store.claim(message, owner="w1", lease_s=60)
        assert isinstance(lease, Lease), lease  # our own lease, not "held"
        await store.mark_completed(lease, Published(renditions={}))  # not reported as lease_lost
    record = await store.get("u1", "lost")
    assert record is not None and record.status == "COMPLETED"


async def test_numbers_survive_the_table_exactly(clients: Clients, resources: Resources) -> None:
    store = JobStore(clients.dynamodb, resources.table)
    lease = await store.claim(job("exact"), owner="w1", lease_s=60)
    assert isinstance(lease, Lease)
    await clients.dynamodb.update_item(
        TableName=resources.table,
        Key=record_key("u1", "exact"),
        UpdateExpression="SET future_counter = :n, progress = :p",
        ExpressionAttributeValues={":n": {"N": "9007199254740993"}, ":p": {"N": "7"}},
    )
    record = await JobStore(clients.dynamodb, resources.table).get("u1", "exact")
    assert record is not None
    assert record.extras()["future_counter"] == 9007199254740993
    # A rewrite by this release keeps the attribute it does not know, digit for digit.
    other = JobStore(clients.dynamodb, resources.table)
    await other.get("u1", "exact")
    await other.renew(lease, lease_s=60, progress=8)
    item = await clients.dynamodb.get_item(
        TableName=resources.table, Key=record_key("u1", "exact"), ConsistentRead=True
    )
    assert item["Item"]["future_counter"] == {"N": "9007199254740993"}


async def test_multipart_upload_is_verified_and_presigned_get_serves_ranges(
    clients: Clients, resources: Resources, tmp_path: Path
) -> None:
    storage = Storage(
        clients.s3, resources.bucket, multipart_threshold_bytes=5 * MiB, part_bytes=5 * MiB
    )
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(12 * MiB))
    uploaded = await storage.upload(path, "transcoded/720p/u/v.mp4")
    assert uploaded.parts == 3
    assert uploaded.size_bytes == 12 * MiB
    info = await storage.head("transcoded/720p/u/v.mp4")
    assert info.size_bytes == 12 * MiB

    url = await storage.presign_get("transcoded/720p/u/v.mp4", ttl_s=60)
    request = urllib.request.Request(url, headers={"Range": "bytes=100-199"})
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())
    assert body == path.read_bytes()[100:200]


async def test_keys_under_a_prefix_are_listed_across_pages_and_deleted_in_batches(
    clients: Clients, resources: Resources, tmp_path: Path
) -> None:
    storage = Storage(clients.s3, resources.bucket)
    path = tmp_path / "seg.m4s"
    path.write_bytes(b"segment")
    prefix = "transcoded/hls/u/v/"
    keys = [f"{prefix}720p/seg_{n:05d}.m4s" for n in range(1003)]  # more than a page
    await asyncio.gather(*(storage.upload(path, key) for key in keys))
    await storage.upload(path, "transcoded/hls/u/v2/720p/seg_00000.m4s")  # another video

    assert sorted(await storage.list_keys(prefix)) == keys
    await storage.delete([*keys[1:], f"{prefix}gone.m4s"])  # two batches; a missing key is fine
    assert await storage.list_keys(prefix) == keys[:1]
    assert await storage.list_keys("transcoded/hls/u/v2/") == [
        "transcoded/hls/u/v2/720p/seg_00000.m4s"
    ]


async def test_head_of_a_missing_source_is_a_permanent_rejection(
    clients: Clients, resources: Resources
) -> None:
    storage = Storage(clients.s3, resources.bucket)
    with pytest.raises(InputRejected) as caught:
        await storage.head("raw/u/missing.mp4")
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND


async def test_a_read_answered_after_a_write_never_makes_the_worker_lose_its_lease(
    clients: Clients, resources: Resources
) -> None:
    """The demo's poller and the worker share one store: a status read issued before the claim
    but answered after it must not make the next heartbeat believe the lease is gone."""
    store = JobStore(clients.dynamodb, resources.table)
    message = job("race")
    queued = await store.claim(message, owner="w0", lease_s=60)
    assert isinstance(queued, Lease)
    await store.release(queued, None)  # QUEUED, as the enqueue Lambda leaves it
    original = clients.dynamodb.get_item
    answered = asyncio.Event()

    async def slow_get(**kwargs: Any) -> Any:
        response = await original(**kwargs)  # read now...
        await answered.wait()  # ...answered only after the claim below
        return response

    with patch.object(clients.dynamodb, "get_item", slow_get):
        poll = asyncio.ensure_future(store.get("u1", "race"))
        await asyncio.sleep(0.05)
    lease = await store.claim(message, owner="w1", lease_s=60)
    assert isinstance(lease, Lease)
    answered.set()
    stale = await poll
    assert stale is not None and stale.status == "QUEUED"
    await store.record_source(lease, SOURCE)  # not LeaseLost
    await store.renew(lease, lease_s=60, progress=10)
