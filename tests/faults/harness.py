"""Real worker processes (``python -m transcoder worker``) against the emulator, and their traces.

A ``Fleet`` bootstraps fresh resources (random names) with short timeouts, starts worker
processes whose only configuration is the environment (as in production), submits uploads through
the production enqueue handler, and reads back what a user or an operator would see: the job
record, the rendition objects, the jobs queue and the DLQ. Each worker writes its JSON log lines to
its own file, which the scenarios read to check what a worker decided (``job.settled``) and
whether it ever started ffmpeg.

Signals are sent the way ECS sends them: SIGTERM to the worker process alone (``docker stop``),
SIGKILL to the whole process group (the container dies: the worker and its ffmpeg together).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from transcoder.aws.clients import Clients
from transcoder.aws.queue import Depth, JobQueue
from transcoder.aws.status import JobStore
from transcoder.config import Settings
from transcoder.domain.job import output_key
from transcoder.domain.record import JobRecord, record_key
from transcoder.domain.record import value as to_attr
from transcoder.ops.bootstrap import Resources, bootstrap
from transcoder.ops.demo import Submitted, submit

# Short timeouts so that every fault plays out in seconds (VT 6 s, heartbeat 1 s, stall 3 s).
FAULT_SETTINGS: dict[str, Any] = {
    "visibility_timeout_s": 6,
    "heartbeat_interval_s": 1.0,
    "stall_timeout_s": 3.0,
    "shutdown_grace_s": 5.0,
    "wait_time_s": 1,
    "retry_base_s": 1.0,
    "retry_max_s": 2.0,
    "ffmpeg_threads": 1,
    "x264_preset": "veryfast",
    "log_level": "debug",
}
# The settings a worker process receives as TRANSCODER_<NAME>.
FORWARDED = (
    "bucket",
    "queue",
    "dead_letter_queue",
    "table",
    "region",
    "endpoint_url",
    "wait_time_s",
    "visibility_timeout_s",
    "max_receive_count",
    "retry_base_s",
    "retry_max_s",
    "slots",
    "ffmpeg_threads",
    "x264_preset",
    "scratch_dir",
    "heartbeat_interval_s",
    "stall_timeout_s",
    "max_job_duration_s",
    "shutdown_grace_s",
    "metrics_host",
    "metrics_port",
    "queue_poll_interval_s",
    "log_level",
    "sdk_max_attempts",
    "source_read_timeout_s",
    "chunking",
    "hls",
    "stills",
    "chunk_s",
    "chunk_threshold_s",
    "chunk_postroll_frames",
    "chunk_warmup_frames",
)
TERMINAL = ("COMPLETED", "FAILED")


class WorkerProcess:
    """One ``transcoder worker`` process in its own process group, logging to a file."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "transcoder", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a container
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def events(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Parsed JSON log lines, optionally only those with this event and these fields."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event is not None and entry.get("event") != event:
                continue
            if all(entry.get(k) == v for k, v in fields.items()):
                found.append(entry)
        return found

    def outcomes(self, job_id: str | None = None) -> list[str]:
        settled = self.events("job.settled", **({"job_id": job_id} if job_id else {}))
        return [str(e["outcome"]) for e in settled]

    async def wait_for(self, event: str, timeout_s: float = 60, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(event, **fields)
            if found:
                return found[0]
            if not self.alive:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{self.name}: no {event} {fields} within {timeout_s} s (alive={self.alive}); "
            f"log tail:\n{self.tail()}"
        )

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ffmpeg(self) -> list[psutil.Process]:
        """The ffmpeg processes this worker is running now."""
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(self.pid).children(recursive=True)
            return [c for c in children if _name(c) == "ffmpeg"]
        return []

    def terminate(self) -> None:
        """SIGTERM to the worker only, as ECS does before ``stopTimeout``."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the whole group: the container dies, ffmpeg with it."""
        self._signal_group(signal.SIGKILL)

    def freeze(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_group(signal.SIGCONT)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def wait_exit(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.popen.poll()

    def close(self) -> None:
        if self.alive:
            self.kill()
            self.popen.wait(timeout=10)
        self._log.close()


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def lambda_record(message: dict[str, Any]) -> dict[str, Any]:
    """An SQS message in the shape Lambda's SQS event source delivers it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: {"stringValue": value.get("StringValue"), "dataType": value.get("DataType")}
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "eventSource": "aws:sqs",
    }


def settings_env(settings: Settings) -> dict[str, str]:
    env = {}
    for name in FORWARDED:
        value = getattr(settings, name)
        if value is not None:
            env[f"TRANSCODER_{name.upper()}"] = str(value)
    return env


class Fleet:
    """Fresh resources plus the worker processes of one scenario."""

    def __init__(
        self, settings: Settings, clients: Clients, resources: Resources, logs: Path
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.resources = resources
        self.logs = logs
        self.queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
        self.store = JobStore(clients.dynamodb, resources.table)
        self.workers: list[WorkerProcess] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, clients: Clients, tmp_path: Path, **overrides: Any
    ) -> AsyncIterator[Fleet]:
        """Bootstrap with the fault timeouts (plus ``overrides``); stop every worker on exit."""
        fleet_settings = settings.model_copy(update={**FAULT_SETTINGS, **overrides})
        resources = await bootstrap(clients, fleet_settings)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        fleet = cls(fleet_settings, clients, resources, logs)
        try:
            yield fleet
        finally:
            await fleet.stop_all()

    # ------------------------------------------------------------------ workers

    def env(
        self, worker_id: str, extra: dict[str, str] | None = None, **overrides: Any
    ) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCODER_")}
        env = {**base, **settings_env(self.settings.model_copy(update=overrides))}
        env.update(
            TRANSCODER_WORKER_ID=worker_id,
            TRANSCODER_METRICS_PORT="0",
            TRANSCODER_LOG_JSON="true",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra or {})
        return env

    def start(
        self, name: str | None = None, *, extra_env: dict[str, str] | None = None, **overrides: Any
    ) -> WorkerProcess:
        name = name or f"w{len(self.workers) + 1}"
        worker_id = f"{name}-{len(self.workers) + 1}-{self.settings.worker_id}"
        process = WorkerProcess(
            name, self.env(worker_id, extra_env, **overrides), self.logs / f"{name}.log"
        )
        self.workers.append(process)
        return process

    async def stop_all(self, timeout_s: float | None = None) -> None:
        alive = [w for w in self.workers if w.alive]
        for worker in alive:
            worker.terminate()
        wait_s = timeout_s or self.settings.shutdown_grace_s + 10
        await asyncio.gather(*(w.wait_exit(wait_s) for w in alive))
        for worker in self.workers:
            worker.close()

    def outcomes(self, job_id: str) -> list[str]:
        """Every settlement of this job, across all the workers' logs."""
        return [o for w in self.workers for o in w.outcomes(job_id)]

    def started_ffmpeg(self, job_id: str) -> int:
        return sum(len(w.events("ffmpeg.started", job_id=job_id)) for w in self.workers)

    # --------------------------------------------------------------------- jobs

    async def submit(self, *files: Path, user: str = "faults") -> list[Submitted]:
        return await submit(self.clients, self.settings, list(files), user_id=user)

    async def record(self, job: Submitted) -> dict[str, Any]:
        record: JobRecord | None = await self.store.get(job.user_id, job.video_id)
        assert record is not None, f"no record for {job.video_id}"
        return record.model_dump(mode="json", exclude_none=True)

    async def wait_until(
        self, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float
    ) -> float:
        """Poll ``check`` until it holds; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await check():
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        logs = "\n".join(f"--- {w.name}\n{w.tail(15)}" for w in self.workers)
        raise AssertionError(f"not within {timeout_s} s: {what}\n{logs}")

    async def wait_for_status(
        self, job: Submitted, *statuses: str, timeout_s: float = 90
    ) -> dict[str, Any]:
        async def reached() -> bool:
            return (await self.record(job)).get("status") in statuses

        await self.wait_until(f"{job.video_id} in {statuses}", reached, timeout_s)
        return await self.record(job)

    async def wait_for_progress(self, job: Submitted, percent: int, timeout_s: float = 60) -> None:
        async def reached() -> bool:
            record = await self.record(job)
            return (
                record.get("status") == "PROCESSING" and int(record.get("progress", 0)) >= percent
            )

        await self.wait_until(f"{job.video_id} at {percent}%", reached, timeout_s)

    async def outputs(self, job: Submitted) -> dict[str, dict[str, Any]]:
        """The rendition objects of this job that exist in S3: key -> size, ETag, LastModified."""
        found = {}
        for rung in self.settings.ladder:
            key = output_key(rung.name, job.user_id, job.video_id)
            with contextlib.suppress(Exception):
                head = await self.clients.s3.head_object(Bucket=self.settings.bucket, Key=key)
                found[key] = {
                    "size": head["ContentLength"],
                    "etag": head["ETag"],
                    "modified": head["LastModified"],
                }
        return found

    async def depth(self) -> Depth:
        return await self.queue.depth()

    async def dlq_depth(self) -> Depth:
        return await self.queue.depth(self.resources.dlq_url)

    async def drained(self) -> bool:
        """No message left in the jobs queue: none visible, none in flight, none delayed.

        Asked twice, 1.2 s apart: moto's counters can all read 0 for an instant while a delayed
        message turns visible.
        """
        for attempt in range(2):
            depth = await self.depth()
            if (depth.visible, depth.in_flight, depth.delayed) != (0, 0, 0):
                return False
            if attempt == 0:
                await asyncio.sleep(1.2)
        return True

    def dlq_holds(self, count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            depth = await self.dlq_depth()
            return depth.visible + depth.in_flight == count

        return check

    async def dead_letters(self, hold_s: int = 1) -> list[dict[str, Any]]:
        """Receive what is in the DLQ (it becomes visible again after ``hold_s``)."""
        response = await self.clients.sqs.receive_message(
            QueueUrl=self.resources.dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=hold_s,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        return [dict(m) for m in response.get("Messages", [])]

    async def run_dlq_handler(self) -> dict[str, Any]:
        """Hand the DLQ's messages to the dead-letter Lambda handler as its SQS trigger would:
        one batch, and the messages it did not report as failures are deleted."""
        from enqueue_lambda.dlq import build

        handler = build(
            self.settings.table,
            endpoint_url=self.settings.endpoint_url,
            region=self.settings.region,
        )
        messages = await self.dead_letters(hold_s=30)
        result: dict[str, Any] = await asyncio.to_thread(
            handler.handle, {"Records": [lambda_record(m) for m in messages]}
        )
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                await self.clients.sqs.delete_message(
                    QueueUrl=self.resources.dlq_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return result

    async def resend(self, job: Submitted) -> None:
        """Send the job's message again (a duplicate, or a redelivery after a lost delete)."""
        await self.queue.send(str((await self.record(job))["message"]))

    async def rewrite_record(self, job: Submitted, update: str, **values: Any) -> None:
        """An unconditional write to the job record, as another worker or a test would make (it
        bumps ``rev``, as every real writer does)."""
        names = {"ExpressionAttributeNames": {"#status": "status"}} if "#status" in update else {}
        if update.startswith("SET ") and "rev" not in update:
            update = update.replace("SET ", "SET rev = rev + :bump_one, ", 1)
            values["bump_one"] = 1
        await self.clients.dynamodb.update_item(
            TableName=self.settings.table,
            Key=record_key(job.user_id, job.video_id),
            UpdateExpression=update,
            ExpressionAttributeValues={f":{k}": to_attr(v) for k, v in values.items()},
            **names,  # type: ignore[arg-type]
        )
