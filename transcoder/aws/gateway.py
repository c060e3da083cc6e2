"""The source gateway: ffprobe and ffmpeg read the upload from 127.0.0.1; the worker reads S3.

The first design handed ffmpeg a presigned URL. Three things were wrong with that:

- **Bytes.** libavformat opens ``Range: bytes=0-`` and hangs up when it seeks (an MP4 whose
  ``moov`` is at the end). By then S3 and the socket buffers have sent megabytes it never reads.
  ffprobe and ffmpeg each do it: the benchmark measured 1.53 x the object per job. Here S3 is read
  in bounded ranges: one block after each (re)connection, doubling while the reader keeps reading,
  up to ``max_run_bytes``. Blocks already read (ffprobe's head and ``moov``) are served again from
  a small cache when ffmpeg opens the same places.
- **Credentials.** A presigned URL lives no longer than the credentials that signed it, and task
  role credentials rotate. A long job that reconnects after that gets 403. The gateway signs each
  range with the SDK's current credentials.
- **Integrity.** Every range is pinned to the version or ETag the job started from. An upload
  replaced mid-job fails as ``source_changed`` instead of splicing two files.

Each connection serves one range request (``Connection: close``, as libavformat asks). A request
for another path gets 404. The server binds to 127.0.0.1 on a port chosen at run time, and lives
only as long as the ``async with`` around the job.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

from transcoder import metrics
from transcoder.domain.errors import AwsUnavailable, InputRejected, TranscoderError
from transcoder.domain.job import Reason
from transcoder.logs import get_logger


class RangeReader(Protocol):
    """What the gateway needs of object storage (``transcoder.aws.storage.Storage``)."""

    async def read_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> bytes: ...


log = get_logger(__name__)

MiB = 1024**2
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
HEADER_LIMIT_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
FETCH_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    block_bytes: int = 256 * 1024  # the first read after each (re)connection
    max_run_bytes: int = 1 * MiB  # reads double up to this while the reader keeps going
    # Recently read blocks: ffprobe reads up to its 5 MB probesize plus the index (the moov, or
    # the end of a program stream for its duration) and ffmpeg then reads the same places again.
    # 6 MiB keeps a 30 s 1080p job at 1.006 x the object (as 8 MiB did, with 2 MiB less RSS).
    cache_bytes: int = 6 * MiB
    # One ranged GET, the SDK's own retries included (settings.source_read_timeout_s).
    read_timeout_s: float = 10.0


class RangeNotSatisfiable(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range`` header -> inclusive (start, end), None for the whole object.

    Only single ranges exist in libavformat's requests; a suffix (``bytes=-N``) is honoured too.
    """
    if not header:
        return None
    match = RANGE.match(header.strip())
    if match is None:
        return None  # unsupported form (several ranges): RFC 9110 lets us send the whole object
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(header)
    return start, end


class BlockCache:
    """Least recently used blocks of one object, at most ``limit_bytes`` in all."""

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._blocks: OrderedDict[int, memoryview] = OrderedDict()
        self._bytes = 0

    def get(self, index: int) -> memoryview | None:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
        return block

    def clear(self) -> None:
        self._blocks.clear()
        self._bytes = 0

    def has(self, index: int) -> bool:
        return index in self._blocks

    def put(self, index: int, block: memoryview) -> None:
        old = self._blocks.pop(index, None)
        self._bytes += len(block) - (len(old) if old is not None else 0)
        self._blocks[index] = block
        while self._bytes > self._limit and self._blocks:
            _, evicted = self._blocks.popitem(last=False)
            self._bytes -= len(evicted)


class SourceGateway:
    """Serves one S3 object over HTTP on loopback, for the duration of one job.

    ``async with SourceGateway(...) as url`` gives the URL to hand to ffprobe and ffmpeg. Once a
    read fails for good (the object replaced or deleted, S3 down past its retries and deadline),
    ``failure`` holds it and ``failed`` is set: some byte they asked for was not served, so their
    verdict, whatever it says, is not about the media.
    """

    def __init__(
        self,
        storage: RangeReader,
        key: str,
        *,
        size_bytes: int,
        etag: str | None = None,
        version_id: str | None = None,
        config: GatewayConfig | None = None,
    ) -> None:
        self._storage = storage
        self._key = key
        self._size = size_bytes
        self._etag = etag
        self._version_id = version_id
        self._config = config or GatewayConfig()
        self._cache = BlockCache(self._config.cache_bytes)
        self._path = f"/{secrets.token_urlsafe(12)}/{quote(key.rsplit('/', 1)[-1])}"
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._pending: dict[int, asyncio.Task[tuple[int, memoryview]]] = {}
        self.failure: TranscoderError | None = None
        self.failed = asyncio.Event()  # set with ``failure``: the stage must stop
        self.bytes_read = 0
        self.requests = 0

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(
            self._serve, host="127.0.0.1", port=0, limit=HEADER_LIMIT_BYTES
        )
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}{self._path}"

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [*self._connections, *set(self._pending.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._cache.clear()  # the buffers go now, whatever still refers to the gateway
        log.info(
            "source.read",
            key=self._key,
            bytes=self.bytes_read,
            requests=self.requests,
            of_size=round(self.bytes_read / max(self._size, 1), 3),
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the reader hung up (it seeks by reconnecting) or sent garbage
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # The job is over (the gateway is closing). Ending normally rather than cancelled
            # keeps asyncio's server callback from logging the cancellation as an error.
            pass
        finally:
            self._connections.discard(task)
            # Not awaiting ``wait_closed``: after a hang-up it raises the reset, whose traceback
            # would tie this frame (and so the gateway and its cache) into asyncio's reference
            # cycle of transport, protocol and exception, freed only by a full GC pass. Worker
            # RSS grew by about 8 MiB per 30 s job until one ran.
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        method, path, headers = _request(head)
        if path != self._path:
            return _respond(writer, 404, "Not Found")
        if method not in ("GET", "HEAD"):
            return _respond(writer, 405, "Method Not Allowed")
        try:
            span = parse_range(headers.get("range"), self._size)
        except RangeNotSatisfiable:
            unsatisfiable = {"Content-Range": f"bytes */{self._size}"}
            return _respond(writer, 416, "Range Not Satisfiable", unsatisfiable)
        start, end = span if span is not None else (0, self._size - 1)
        if method == "HEAD":
            return _respond(writer, 200, "OK", {"Content-Length": str(self._size)})
        # The first run is read before the status line, so a missing or replaced object, or S3
        # being down, is an HTTP status ffmpeg understands rather than a connection cut short.
        first, count = start // self._config.block_bytes, 1
        try:
            data = await self._blocks(first, count)
        except TranscoderError as exc:
            return _respond(writer, *_status_of(exc))
        extra = {"Content-Length": str(end - start + 1)}
        if span is not None:
            extra["Content-Range"] = f"bytes {start}-{end}/{self._size}"
        status = (206, "Partial Content") if span is not None else (200, "OK")
        _respond(writer, *status, extra, close=False)
        stream = asyncio.ensure_future(self._stream(writer, data, first, count, start, end))
        del data  # the stream owns the run now (see the end of ``_stream``)
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({stream, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (stream, hangup):
                pending.cancel()
            await asyncio.gather(stream, hangup, return_exceptions=True)
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            raise ConnectionError from stream.exception()

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        data: memoryview,
        first: int,
        count: int,
        start: int,
        end: int,
    ) -> None:
        """Write ``start..end``: the run already read, then the next ones, one read ahead."""
        block = self._config.block_bytes
        max_blocks = max(1, self._config.max_run_bytes // block)
        offset, ahead = start, None
        try:
            while True:
                run_start = first * block
                piece = data[offset - run_start : end + 1 - run_start]
                if not piece:
                    raise ConnectionError(f"no bytes for offset {offset} in run {first}")
                first, count = first + count, min(count * 2, max_blocks)
                if first * block <= end and offset > start:  # sequential reading: read ahead
                    ahead = asyncio.ensure_future(self._blocks(first, count))
                writer.write(piece)
                await writer.drain()
                offset += len(piece)
                if offset > end:
                    return
                data = await ahead if ahead is not None else await self._blocks(first, count)
                ahead = None
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            # A hang-up's exception keeps this frame alive in a reference cycle until the next
            # full GC pass: it must not keep the run with it.
            data = piece = memoryview(b"")
            ahead = None

    async def _blocks(self, first: int, count: int) -> memoryview:
        """Blocks ``first .. first+count-1`` as one buffer, from the cache or S3.

        A block another connection is already reading is waited for, not read twice: ffprobe
        hangs up and reconnects while its last read is still arriving.
        """
        block = self._config.block_bytes
        indices = range(first, min(first + count, -(-self._size // block)))
        absent = [i for i in indices if not self._cache.has(i) and i not in self._pending]
        if absent and len(absent) == len(indices):  # streaming on: one read, no copy
            return (await asyncio.shield(self._fetch(first, indices[-1])))[1]
        if absent:
            self._fetch(absent[0], absent[-1])
        parts: list[memoryview] = []
        for i in indices:
            part = self._cache.get(i)
            if part is None:
                task = self._pending.get(i) or self._fetch(i, i)  # or evicted meanwhile
                # Shielded: a reader hanging up must not abort a read others may be waiting for.
                low, data = await asyncio.shield(task)
                part = data[(i - low) * block : (i - low + 1) * block]
            parts.append(part)
        return parts[0] if len(parts) == 1 else memoryview(b"".join(parts))

    def _fetch(self, low: int, high: int) -> asyncio.Task[tuple[int, memoryview]]:
        """Start reading blocks ``low..high`` in one request; they go to the cache when read."""
        block = self._config.block_bytes

        async def read() -> tuple[int, memoryview]:
            try:
                data = await self._read(low * block, min((high + 1) * block, self._size) - 1)
                for i in range(low, high + 1):
                    self._cache.put(i, data[(i - low) * block : (i - low + 1) * block])
                return low, data
            finally:
                for i in range(low, high + 1):
                    if self._pending.get(i) is task:
                        del self._pending[i]

        task = asyncio.ensure_future(read())
        task.add_done_callback(_retrieve)
        for i in range(low, high + 1):
            self._pending[i] = task
        return task

    async def _read(self, start: int, end: int) -> memoryview:
        """One ranged GET, retried: a body that breaks off is read again, up to a point."""
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                data = await self._read_once(start, end)
            except InputRejected as exc:
                self._fail(exc, start, end)
                raise
            except AwsUnavailable as exc:
                if attempt == FETCH_ATTEMPTS:
                    self._fail(exc, start, end)
                    raise
                log.warning("source.read_retry", key=self._key, attempt=attempt, error=str(exc))
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            self.requests += 1
            self.bytes_read += len(data)
            metrics.SOURCE_READ_BYTES.inc(len(data))
            metrics.SOURCE_READ_REQUESTS.inc()
            return memoryview(data)
        raise AssertionError("unreachable")

    async def _read_once(self, start: int, end: int) -> bytes:
        """One GET, the SDK's retries included, within ``read_timeout_s``.

        Without the deadline a hung S3 holds each try for the SDK's read timeout times its
        attempts, and ffmpeg (reconnecting to us) waits minutes for a stage already lost.
        """
        try:
            async with asyncio.timeout(self._config.read_timeout_s):
                return await self._storage.read_range(
                    self._key, start, end, version_id=self._version_id, if_match=self._etag
                )
        except TimeoutError:
            raise AwsUnavailable(
                f"s3.get_object: no answer within {self._config.read_timeout_s:g} s"
            ) from None

    def _fail(self, exc: TranscoderError, start: int, end: int) -> None:
        """Record a read that failed for good: no verdict on the media can rest on it now."""
        if self.failure is None or (self.failure.retryable and not exc.retryable):
            self.failure = exc  # a replaced or deleted object says more than S3 being down
        self.failed.set()
        log.warning(
            "source.read_failed",
            key=self._key,
            range=f"{start}-{end}",
            code=exc.reason.value,
            error=str(exc),
        )


def _retrieve(task: asyncio.Task[tuple[int, memoryview]]) -> None:
    """Mark a read's failure as seen: its waiters may all have hung up."""
    if not task.cancelled():
        task.exception()


def _request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ConnectionError(f"not an HTTP request line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


def _status_of(exc: TranscoderError) -> tuple[int, str]:
    if exc.reason is Reason.SOURCE_CHANGED:
        return 412, "Precondition Failed"
    if exc.reason is Reason.SOURCE_NOT_FOUND:
        return 404, "Not Found"
    return 503, "Service Unavailable"  # libavformat reconnects on 5xx


def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    phrase: str,
    headers: dict[str, str] | None = None,
    *,
    close: bool = True,
) -> None:
    fields = {"Accept-Ranges": "bytes", "Connection": "close", **(headers or {})}
    if close and "Content-Length" not in fields:
        fields["Content-Length"] = "0"
    if status < 300:
        fields.setdefault("Content-Type", "application/octet-stream")
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in fields.items()), "", ""]
    writer.write("\r\n".join(lines).encode("latin-1"))
