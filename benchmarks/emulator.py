"""moto's server behind a counting WSGI layer: what each client read, request by request.

``python -m benchmarks.emulator --port N`` serves moto's app exactly as ``python -m moto.server``
does, wrapped in :class:`CountingApp`, which records every request (time, method, path, user
agent, status, response body bytes). Counting inside the emulator's process rather than in a
separate proxy is exact (body bytes, not TCP bytes) and adds no hop to the worker's traffic.

Two extra routes serve the harness: ``GET /__bench/requests`` returns the records as JSON and
``POST /__bench/reset`` forgets them. :class:`CountingEmulator` runs the server as a child process
on a free loopback port, like :class:`transcoder.ops.emulator.Emulator`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from transcoder.ops.emulator import Emulator

CONTROL_PREFIX = "/__bench/"
MAX_RECORDS = 200_000
PIECE_BYTES = 64 * 1024

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Request:
    """One request the emulator answered."""

    at: float  # epoch seconds when the request arrived
    method: str
    path: str
    agent: str
    status: int
    body_bytes: int

    @property
    def by_ffmpeg(self) -> bool:
        """libavformat's HTTP client (ffmpeg and ffprobe) says ``Lavf/<version>``."""
        return self.agent.startswith("Lavf")


class _Counted:
    """Wraps a WSGI response body: counts the bytes the server wrote, records on close.

    The body is handed to the server in ``PIECE_BYTES`` pieces, and a piece is counted only when
    the server asks for the next one, i.e. after its write to the socket returned. When a client
    hangs up mid-body (ffmpeg does when it seeks), the write fails, iteration stops, and the
    count holds what the kernel accepted: an upper bound of what crossed the wire, which exceeds
    what the client read by at most what sat in the socket buffers.
    """

    def __init__(self, body: Iterable[bytes], on_close: Callable[[int], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            for start in range(0, len(chunk), PIECE_BYTES):
                piece = chunk[start : start + PIECE_BYTES]
                yield piece
                self._sent += len(piece)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        self._on_close(self._sent)


class CountingApp:
    """WSGI middleware recording each request; serves the ``/__bench/`` control routes."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._records: deque[Request] = deque(maxlen=MAX_RECORDS)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(CONTROL_PREFIX):
            return self._control(path, start_response)
        arrived = time.time()
        status: list[int] = [0]

        def capture(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        def record(sent: int) -> None:
            request = Request(
                at=arrived,
                method=str(environ.get("REQUEST_METHOD", "")),
                path=path,
                agent=str(environ.get("HTTP_USER_AGENT", "")),
                status=status[0],
                body_bytes=sent,
            )
            with self._lock:
                self._records.append(request)

        return _Counted(self._app(environ, capture), record)

    def _control(self, path: str, start_response: StartResponse) -> list[bytes]:
        with self._lock:
            if path == f"{CONTROL_PREFIX}reset":
                self._records.clear()
                body = b"{}"
            else:
                body = json.dumps([asdict(r) for r in self._records]).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def serve(host: str, port: int) -> None:
    """Serve moto wrapped in :class:`CountingApp` until killed."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds queue URLs from it
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()


class CountingEmulator(Emulator):
    """The counting moto server as a child process on a free loopback port."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def _get(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"{self.url}/{path}", method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            body: bytes = response.read()
        return body

    def cpu(self) -> float:
        """CPU seconds the emulator process has used so far (it shares the machine)."""
        if self._process is None:
            return 0.0
        times = psutil.Process(self._process.pid).cpu_times()
        return float(times.user + times.system)

    def reset_counts(self) -> None:
        self._get(f"{CONTROL_PREFIX.strip('/')}/reset", method="POST")

    def requests(self) -> list[Request]:
        """Every request recorded since the last reset (bounded to ``MAX_RECORDS``)."""
        raw: list[dict[str, Any]] = json.loads(self._get(f"{CONTROL_PREFIX.strip('/')}/requests"))
        return [Request(**item) for item in raw]

    def __enter__(self) -> CountingEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
