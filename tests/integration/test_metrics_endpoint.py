"""/metrics, /healthz and /readyz as an operator or a scraper sees them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from transcoder import metrics
from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources
from transcoder.runtime import app


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(fetch, url)


async def test_endpoints_report_health_readiness_and_queue_depth(
    clients: Clients, settings: Settings, resources: Resources
) -> None:
    services = await app.connect(clients, settings)
    await services.queue.send("waiting")
    health = metrics.Health(max_silence_s=60)
    async with app.background(settings, services, health) as server:
        base = f"http://127.0.0.1:{server.port}"
        await asyncio.sleep(0.3)  # the depth poller's first pass
        status, body = await get(f"{base}/metrics")
        assert status == 200
        assert 'transcoder_queue_messages{queue="jobs",state="visible"} 1.0' in body
        assert "transcoder_jobs_total" in body or "transcoder_jobs_created" in body

        status, body = await get(f"{base}/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")

        status, body = await get(f"{base}/readyz")
        assert status == 200
        assert json.loads(body)["checks"] == {"queue": "ok", "table": "ok", "ffmpeg": "ok"}

        health.max_silence_s = 0.0  # the loop stopped beating
        await asyncio.sleep(0.01)
        status, body = await get(f"{base}/healthz")
        assert (status, json.loads(body)["status"]) == (503, "stuck")

        status, _ = await get(f"{base}/nothing")
        assert status == 404


async def test_readyz_names_the_dependency_that_is_down(
    clients: Clients, settings: Settings, resources: Resources
) -> None:
    services = await app.connect(clients, settings)
    await clients.dynamodb.delete_table(TableName=settings.table)
    check = app.readiness(services)
    results = await check()
    assert results["queue"] == "ok"
    assert results["table"].startswith("error")
