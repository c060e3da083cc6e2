"""Run ffmpeg: a thin async shell that streams ``-progress`` into ``Progress`` and classifies exits.

Cancelling the coroutine kills ffmpeg (SIGKILL) and reaps it, so a cancelled job never leaves an
encoder running. stderr is kept as a bounded tail for the error message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from transcoder.logs import get_logger
from transcoder.media.ffmpeg import parse_progress_block
from transcoder.media.probe import classify_failure
from transcoder.media.progress import Progress

log = get_logger(__name__)


async def _read_progress(stream: asyncio.StreamReader, progress: Progress) -> None:
    fields: dict[str, str] = {}
    async for raw in stream:
        key, _, value = raw.decode(errors="replace").strip().partition("=")
        fields[key] = value
        if key == "progress":
            progress.update(parse_progress_block(fields))
            fields = {}


async def _read_tail(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    async for raw in stream:
        tail.append(raw.decode(errors="replace").rstrip())


async def run(args: list[str], progress: Progress) -> None:
    """Run the ffmpeg command; return on exit 0, raise a classified TranscoderError otherwise."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    log.info("ffmpeg.started", pid=process.pid)
    tail: deque[str] = deque(maxlen=40)
    assert process.stdout is not None and process.stderr is not None
    readers = asyncio.gather(
        _read_progress(process.stdout, progress), _read_tail(process.stderr, tail)
    )
    try:
        await readers
        returncode = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
            log.warning("ffmpeg.killed", pid=process.pid)
        readers.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await readers
    if returncode != 0:
        raise classify_failure("\n".join(tail), returncode, stage="transcode")
    log.info("ffmpeg.finished", pid=process.pid, frames=progress.frame, speed=progress.speed)
