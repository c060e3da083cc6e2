"""``transcoder demo`` and ``transcoder submit``: uploads through the production enqueue path.

Each file is uploaded to ``raw/{user}/{videoId}{ext}``; then the real enqueue Lambda handler is
invoked with the exact event S3 would send for that object (built from its HeadObject), so a local
run exercises the same code as production. The demo then runs a worker until every job is
``COMPLETED`` or ``FAILED``, and reports each file. On a terminal the progress is a live table
(``transcoder.ops.board``) and the worker's logs go to a file; with ``--json`` or through a pipe it
is one summary line on stderr per change, as it always was.

With ``--out DIR`` the demo then downloads every completed job's outputs (MP4s, poster, sprite and
VTT, the whole HLS tree) as its job record names them, and writes a player page next to them
(``transcoder.ops.page``).
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from enqueue_lambda.handler import EnqueueConfig, build, s3_event_for
from transcoder.aws.clients import Clients
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.job import Status
from transcoder.domain.record import JobRecord
from transcoder.logs import get_logger
from transcoder.ops import page
from transcoder.ops.board import Board, Lines, Tracked, View, logs_to
from transcoder.runtime import app

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)
TERMINAL = (Status.COMPLETED.value, Status.FAILED.value)


@dataclass(frozen=True, slots=True)
class Submitted:
    file: str
    user_id: str
    video_id: str
    key: str


def video_id_for(path: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-_")[:100] or "video"
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}-{n}", n + 1
    taken.add(candidate)
    return candidate


async def submit(
    clients: Clients,
    settings: Settings,
    files: Sequence[Path],
    *,
    user_id: str,
    on_enqueued: Callable[[Submitted], None] | None = None,
) -> list[Submitted]:
    """Upload each file under ``raw/{user_id}/`` and invoke the enqueue handler for it."""
    services = await app.connect(clients, settings)
    enqueuer = build(
        EnqueueConfig(
            table=settings.table,
            queue_url=services.queue.url,
            max_input_bytes=settings.max_input_bytes,
            # Every rung of this worker's ladder (TRANSCODER_LADDER), as the Lambda's
            # TRANSCODER_RENDITIONS would be set beside it: a custom ladder works locally too.
            renditions=tuple(rung.name for rung in settings.ladder),
            event_bus=settings.event_bus,
        ),
        endpoint_url=settings.endpoint_url,
        region=settings.region,
    )
    taken: set[str] = set()
    submitted = []
    for path in files:
        video_id = video_id_for(path, taken)
        key = f"raw/{user_id}/{video_id}{path.suffix}"
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        await services.storage.upload(path, key, content_type=content_type)
        head = await clients.s3.head_object(Bucket=settings.bucket, Key=key)
        event = s3_event_for(settings.bucket, key, dict(head), settings.region)
        report = await asyncio.to_thread(enqueuer.handle, event)
        log.info(
            "demo.enqueued",
            file=str(path),
            key=key,
            via="enqueue_lambda.handler",
            **report.as_dict(),
        )
        submitted.append(Submitted(str(path), user_id, video_id, key))
        if on_enqueued is not None:
            on_enqueued(submitted[-1])
    return submitted


def summary(job: Submitted, record: dict[str, Any] | None) -> dict[str, Any]:
    record = record or {}
    error = record.get("error")
    renditions = {
        name: {
            field: value.get(field)
            for field in ("status", "key", "width", "height", "duration_s", "bytes", "reason")
            if value.get(field) is not None
        }
        for name, value in sorted((record.get("renditions") or {}).items())
    }
    return {
        "file": job.file,
        "video_id": job.video_id,
        "job_id": record.get("job_id"),
        "status": record.get("status", "UNKNOWN"),
        "attempts": int(record.get("attempts", 0)),
        "error": {"code": error["code"], "message": error["message"]} if error else None,
        "renditions": renditions,
        "hls": (record.get("hls") or {}).get("master_key"),
        "poster": (record.get("poster") or {}).get("key"),
        "thumbnails": (record.get("thumbnails") or {}).get("count"),
        "source": record.get("source"),
    }


async def wait_for_terminal(
    services: app.Services,
    jobs: Sequence[Submitted],
    *,
    timeout_s: float,
    live: bool,
    view: View | None = None,
) -> list[dict[str, Any]]:
    """Poll the job records until each is terminal; ``live``: show them (default: summary lines)."""
    shown = (view or Lines(as_json=False)) if live else None
    deadline = time.monotonic() + timeout_s
    while True:
        found = [await services.store.get(j.user_id, j.video_id) for j in jobs]
        records = [r.model_dump(mode="json", exclude_none=True) if r else None for r in found]
        if shown is not None:
            shown.update(
                [Tracked(j.file, j.video_id, r) for j, r in zip(jobs, records, strict=True)]
            )
        states = [(r or {}).get("status", "?") for r in records]
        if all(s in TERMINAL for s in states) or time.monotonic() > deadline:
            return [summary(j, r) for j, r in zip(jobs, records, strict=True)]
        await asyncio.sleep(0.5)


async def export(
    s3: S3Client, storage: Storage, videos: Sequence[tuple[JobRecord, str]], out: Path
) -> Path:
    """Download each completed job's outputs into ``out`` and write the player page; its path.

    The local layout keeps every relative reference working (``transcoder.ops.page``). The HLS
    tree is whatever the bucket holds under the record's HLS prefix (playlists, init segments,
    media segments), listed rather than rebuilt from the playlists.
    """
    files = [page.files_for(record, title) for record, title in videos]
    wanted: list[tuple[str, str]] = []
    for video in files:
        wanted += video.objects
        if video.hls_tree is not None:
            keys = await listed(s3, storage.bucket, video.hls_tree[0])
            # A key ending in "/" is a folder marker some S3 tools create, not a file.
            wanted += [(key, video.hls_path(key)) for key in keys if not key.endswith("/")]
    at_once = asyncio.Semaphore(8)

    async def fetch(key: str, path: str) -> None:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        async with at_once:
            await storage.download(key, target)

    await asyncio.gather(*(fetch(key, path) for key, path in wanted))
    log.info("demo.exported", out=str(out), videos=len(files), objects=len(wanted))
    return page.write(out, files)


async def listed(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    async for response in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        keys += [item["Key"] for item in response.get("Contents", []) if "Key" in item]
    return keys


async def download(
    clients: Clients,
    services: app.Services,
    jobs: Sequence[Submitted],
    results: list[dict[str, Any]],
    out: Path,
) -> Path:
    """``--out``: every completed job's outputs and the player page; the page's path."""
    done = []
    for job, result in zip(jobs, results, strict=True):
        record = await services.store.get(job.user_id, job.video_id)
        if record is None or record.status is not Status.COMPLETED:
            continue
        done.append((record, Path(job.file).name))
        for name, rendition in result["renditions"].items():
            if rendition.get("status") == "COMPLETED" and rendition.get("key"):
                rendition["path"] = str(out / job.video_id / f"{name}.mp4")
    return await export(clients.s3, services.storage, done, out)


async def run_demo(
    clients: Clients,
    settings: Settings,
    files: Sequence[Path],
    *,
    out: Path | None,
    timeout_s: float,
    view: View | None = None,
) -> list[dict[str, Any]]:
    """Bootstrap, submit, run one worker until every job is terminal; return the job summaries."""
    from transcoder.ops.bootstrap import bootstrap

    shown = view or Lines(as_json=False)
    tracked = [Tracked(str(f)) for f in files]

    def enqueued(job: Submitted) -> None:
        index = next(i for i, t in enumerate(tracked) if t.video_id is None)
        tracked[index] = Tracked(job.file, job.video_id)
        shown.update(tracked)

    await bootstrap(clients, settings)
    jobs = await submit(clients, settings, files, user_id="demo", on_enqueued=enqueued)
    services = await app.connect(clients, settings)
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    worker_task = asyncio.create_task(worker.run(stop))
    try:
        results = await wait_for_terminal(
            services, jobs, timeout_s=timeout_s, live=True, view=shown
        )
    finally:
        stop.set()
        await worker_task
    if out is not None:
        await download(clients, services, jobs, results, out)
    return results


@contextlib.contextmanager
def demo_view(files: Sequence[Path], *, as_json: bool, verbose: bool) -> Iterator[View]:
    """``--json`` or not a terminal: summary lines, as always. A terminal: the live board, with the
    logs in a file (its path printed) unless ``verbose``."""
    if as_json or not sys.stdout.isatty():
        yield Lines(as_json=as_json)
        return
    log_path = None if verbose else log_file()
    with Board(Console(), [str(f) for f in files], log_path) as board, logs_to(log_path):
        yield board


def log_file() -> Path:
    """Where a terminal demo's logs go: a new file under the system temp dir."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"transcoder-demo-{stamp}.log"
