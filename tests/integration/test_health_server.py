"""The metrics/health endpoint as a process supervisor sees it: it binds where Settings say
(port 0: a free port), answers every path it knows and 404 otherwise, and stop() lets go of
the port. The endpoints' bodies are covered in test_metrics_endpoint.py."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from aiobotocore.session import get_session
from prometheus_client import CONTENT_TYPE_LATEST

from transcoder import metrics
from transcoder.aws.clients import Clients, client_config
from transcoder.aws.queue import JobQueue
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources
from transcoder.runtime import app


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def get(url: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(fetch, url)


async def all_ready() -> dict[str, str]:
    return {"queue": "ok", "table": "ok", "ffmpeg": "ok"}


async def table_down() -> dict[str, str]:
    return {"queue": "ok", "table": "error: ResourceNotFoundException", "ffmpeg": "ok"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refuses(port: int) -> bool:
    with socket.socket() as client:
        return client.connect_ex(("127.0.0.1", port)) != 0


async def test_port_zero_binds_a_free_port_and_stop_releases_it() -> None:
    server = metrics.MetricsServer(metrics.Health(60), all_ready, "127.0.0.1", 0)
    await server.start()
    port = server.port
    assert port > 0
    status, content_type, body = await get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    assert "transcoder_slots" in body
    status, content_type, body = await get(f"http://127.0.0.1:{port}/healthz?probe=docker")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert content_type.startswith("application/json")
    await server.stop()
    assert refuses(port)
    await server.stop()  # a second stop is harmless


async def test_a_configured_port_is_used_and_a_busy_one_fails_start() -> None:
    port = free_port()
    first = metrics.MetricsServer(metrics.Health(60), table_down, "127.0.0.1", port)
    await first.start()
    try:
        assert first.port == port
        status, _, body = await get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        assert json.loads(body) == {"status": "not ready", "checks": await table_down()}
        status, content_type, body = await get(f"http://127.0.0.1:{port}/favicon.ico")
        assert (status, body) == (404, "not found\n")
        assert content_type.startswith("text/plain")

        second = metrics.MetricsServer(metrics.Health(60), all_ready, "127.0.0.1", port)
        with pytest.raises(OSError, match=r"(?i)in use"):
            await second.start()
        await second.stop()
    finally:
        await first.stop()
    assert refuses(port)


async def test_stop_does_not_wait_forever_for_a_hung_readiness_check() -> None:
    entered = asyncio.Event()

    async def hung() -> dict[str, str]:
        entered.set()
        await asyncio.Event().wait()  # an AWS call that never answers
        return {}

    server = metrics.MetricsServer(metrics.Health(60), hung, "127.0.0.1", 0)
    await server.start()
    request = asyncio.create_task(get(f"http://127.0.0.1:{server.port}/readyz"))
    await entered.wait()
    await server.stop()  # returns once the shutdown timeout has passed, not never
    with pytest.raises(Exception):  # noqa: B017, PT011 - the client just sees the connection drop
        await request


async def test_readyz_reports_a_dependency_that_never_answers(
    clients: Clients, settings: Settings, resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that accepts connections and never replies makes /readyz say so, in time."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    monkeypatch.setattr(app, "READINESS_TIMEOUT_S", 0.5)
    services = await app.connect(clients, settings)
    async with get_session().create_client(
        "sqs", endpoint_url=url, config=client_config(settings, max_attempts=1)
    ) as hung_sqs:
        hung = replace(services, queue=JobQueue(hung_sqs, f"{url}/123/jobs", None))
        results = await app.readiness(hung)()
    silent.close()
    assert results["queue"] == "error: no answer in 0.5 s"
    assert (results["table"], results["ffmpeg"]) == ("ok", "ok")
