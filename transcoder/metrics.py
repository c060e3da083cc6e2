"""Prometheus metrics and the HTTP endpoint for ``/metrics``, ``/healthz`` and ``/readyz``.

The same ``Outcome`` value that labels a job's final log line labels ``transcoder_jobs_total``.
Histogram buckets reach 12 hours: a long 4K source is a real job, not an outlier.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
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
# Deliveries given back to the queue to be tried again, by cause: the reason code of the error
# (``aws_unavailable`` in a brownout, ``stalled``, ``lease_lost``...), or the outcome's label when
# it has none (``held``). ``transcoder_jobs_total{outcome="retry"}`` says how many; this says why.
RETRIES = Counter(
    "transcoder_retries", "Deliveries given back to be tried again, by cause", ["cause", "outcome"]
)
HEARTBEATS = Counter("transcoder_heartbeats", "Liveness renewals, by result", ["result"])
# Job events put on the EventBridge bus (TRANSCODER_EVENT_BUS), by detail type and result:
# ``published``, or ``failed`` when every bounded retry was refused (the job is settled anyway).
EVENTS = Counter(
    "transcoder_events", "Job events sent to EventBridge, by result", ["detail_type", "result"]
)

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
    """``/metrics``, ``/healthz`` and ``/readyz`` on aiohttp, owned by the worker's lifetime.

    It runs on the worker's event loop (no thread): ``/healthz`` answers only while the loop
    does, which is what it is for. Any other path is 404; ``port`` is the bound port (the
    configured one, or the free one the OS picked for port 0).
    """

    # How long stop() lets a request in progress (a slow /readyz) finish before closing it.
    SHUTDOWN_TIMEOUT_S = 2.0

    def __init__(self, health: Health, readiness: ReadinessCheck, host: str, port: int) -> None:
        self._health = health
        self._readiness = readiness
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        assert self._runner is not None and self._runner.addresses, "server not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_route("*", "/{path:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok = self._health.alive()
        return web.json_response({"status": "ok" if ok else "stuck"}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = await self._readiness()
        ok = all(value == "ok" for value in checks.values())
        body = {"status": "ok" if ok else "not ready", "checks": checks}
        return web.json_response(body, status=200 if ok else 503)

    async def _not_found(self, _: web.Request) -> web.Response:
        return web.Response(status=404, text="not found\n")
