"""End to end with events on: a real transcode ends in one ``Video Transcoded`` event whose keys
and sizes are the objects in S3, read from the app's queue the way an app reads it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import bootstrap
from transcoder.ops.demo import submit
from transcoder.runtime import app


async def subscribe(clients: Clients, bus: str) -> str:
    """An app queue with a rule on the bus matching source ``transcoder``."""
    name = f"app-inbox-{secrets.token_hex(4)}"
    url = (await clients.sqs.create_queue(QueueName=name))["QueueUrl"]
    attributes = await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    rule = f"video-ready-{secrets.token_hex(4)}"
    pattern = json.dumps({"source": ["transcoder"], "detail-type": ["Video Transcoded"]})
    await clients.events.put_rule(Name=rule, EventBusName=bus, EventPattern=pattern)
    target = {"Id": "app", "Arn": attributes["Attributes"]["QueueArn"]}
    await clients.events.put_targets(Rule=rule, EventBusName=bus, Targets=[target])
    return url


async def next_event(clients: Clients, url: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await clients.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            event: dict[str, Any] = json.loads(message["Body"])
            return event
    raise AssertionError(f"no event within {timeout_s} s")


def keys_and_sizes(detail: dict[str, Any]) -> dict[str, int | None]:
    """Every object the event names, with the size it gives (None: it gives none)."""
    named: dict[str, int | None] = {
        r["key"]: r["bytes"] for r in detail["renditions"].values() if r["status"] == "COMPLETED"
    }
    if detail["poster"]:
        named[detail["poster"]["key"]] = detail["poster"]["bytes"]
    if detail["thumbnails"]:
        named[detail["thumbnails"]["sprite_key"]] = None
        named[detail["thumbnails"]["vtt_key"]] = None
    if detail["hls"]:
        named[detail["hls"]["master_key"]] = None
    return named


async def test_a_real_transcode_is_announced_with_what_it_published(
    clients: Clients, settings: Settings, samples: dict[str, Path]
) -> None:
    settings = settings.model_copy(update={"event_bus": f"app-events-{secrets.token_hex(4)}"})
    await bootstrap(clients, settings)
    assert settings.event_bus is not None
    inbox = await subscribe(clients, settings.event_bus)
    services = await app.connect(clients, settings)
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        (job,) = await submit(clients, settings, [samples["bigbuckbunny"]], user_id="e2e")
        event = await next_event(clients, inbox)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert (event["source"], event["detail-type"]) == ("transcoder", "Video Transcoded")
    detail = event["detail"]
    assert (detail["user_id"], detail["video_id"]) == ("e2e", job.video_id)
    record = await services.store.get("e2e", job.video_id)
    assert record is not None and detail["job_id"] == record.job_id
    assert detail["event_id"] == f"{record.job_id}:COMPLETED:{record.rev}"
    named = keys_and_sizes(detail)
    assert "transcoded/720p/e2e/bigbuckbunny.mp4" in named
    for key, size in named.items():  # every object the app is told about is there, as told
        head = await clients.s3.head_object(Bucket=settings.bucket, Key=key)
        assert size is None or head["ContentLength"] == size, key
