"""Prometheus metrics and the small HTTP endpoint for ``/metrics``, ``/healthz`` and ``/readyz``.

The same ``Outcome`` value that labels a job's final log line labels ``transcoder_jobs_total``.
Histogram buckets reach 12 hours: a long 4K source is a real job, not an outlier.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LONG_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200)

JOBS = Counter("transcoder_jobs", "Jobs settled, by outcome", ["outcome"])
JOB_DURATION = Histogram(
    "transcoder_job_duration_seconds", "Receive to settle", ["outcome"], buckets=LONG_BUCKETS_S
)
STAGE_DURATION = Histogram(
    "transcoder_stage_duration_seconds", "Pipeline stage time", ["stage"], buckets=LONG_BUCKETS_S
)
FFMPEG_SPEED = Histogram(
    "transcoder_ffmpeg_speed_ratio",
    "Media seconds encoded per wall second",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 40),
)
SOURCE_BYTES = Counter("transcoder_source_bytes", "Size of sources transcoded")
SOURCE_READ_BYTES = Counter(
    "transcoder_source_read_bytes", "Bytes read from S3 sources (every range, re-reads included)"
)
SOURCE_READ_REQUESTS = Counter("transcoder_source_read_requests", "Ranged GETs of S3 sources")
OUTPUT_BYTES = Counter("transcoder_output_bytes", "Bytes of renditions uploaded")
IN_FLIGHT = Gauge("transcoder_jobs_in_flight", "Jobs this worker is running")
SLOTS = Gauge("transcoder_slots", "Jobs this worker may run at once")
QUEUE_MESSAGES = Gauge(
    "transcoder_queue_messages", "Approximate messages by queue and state", ["queue", "state"]
)
BACKLOG_PER_TASK = Gauge(
    "transcoder_backlog_per_task", "(visible + in flight) / running tasks (1 if unknown)"
)
HEARTBEATS = Counter("transcoder_heartbeats", "Liveness renewals, by result", ["result"])

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]


class Health:
    """The loop calls ``beat()`` every iteration; ``/healthz`` fails when beats stop."""

    def __init__(self, max_silence_s: float) -> None:
        self.max_silence_s = max_silence_s
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last_beat <= self.max_silence_s


class MetricsServer:
    """A tiny asyncio HTTP/1.0 server: no framework, no thread, owned by the worker's lifetime."""

    def __init__(self, health: Health, readiness: ReadinessCheck, host: str, port: int) -> None:
        self._health = health
        self._readiness = readiness
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            status, content_type, body = await self._route(path)
            head = f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        if path == "/healthz":
            ok = self._health.alive()
            body = json.dumps({"status": "ok" if ok else "stuck"}).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        if path == "/readyz":
            checks = await self._readiness()
            ok = all(value == "ok" for value in checks.values())
            body = json.dumps({"status": "ok" if ok else "not ready", "checks": checks}).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain", b"not found\n"
