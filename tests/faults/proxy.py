"""A fault-injecting HTTP proxy in front of the AWS emulator, on a free loopback port.

Point ``AWS_ENDPOINT_URL`` / ``settings.endpoint_url`` at ``FaultProxy.url`` and every SDK call of
the worker (and of the Lambdas) passes through it. It tells the services apart the way they arrive
at one endpoint:

* DynamoDB and SQS speak the JSON protocol: ``X-Amz-Target: DynamoDB_20120810.PutItem`` and
  ``X-Amz-Target: AmazonSQS.ReceiveMessage`` name service and operation;
* S3 is REST, path-style against an emulator (``/bucket/key``): the operation comes from the method,
  the path and the query (``?uploads``, ``?partNumber=``), the service from the SigV4 credential
  scope (``Credential=.../us-east-1/s3/aws4_request``, header or presigned query).

A ``Rule`` says which requests it matches (service, operation, a predicate on the request) and
how often it fires (``skip`` the first matches, at most ``count`` times, with ``probability`` drawn
from the proxy's seeded RNG). Its ``fault`` is one of:

===================  ======================================================================
``error``            an AWS-shaped error, not forwarded (S3 XML, DynamoDB/SQS JSON bodies)
``error_after``      forwarded and applied by the emulator, then the answer replaced by the error
``reset_request``    part of the request read, then the connection reset (nothing forwarded)
``reset_response``   forwarded, headers and ``after_bytes`` of the body sent, then a reset
``truncate``         forwarded, the full ``Content-Length`` announced, ``after_bytes`` sent, a
                     clean close (the SDK sees a short body)
``latency``          ``delay_s`` of silence, then forwarded
``hang``             no answer until the client gives up or the proxy stops
===================  ======================================================================

``injected`` counts what fired, by (fault, service, operation); ``seen`` counts every request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import random
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

Service = Literal["s3", "sqs", "dynamodb", "other"]
Fault = Literal[
    "error", "error_after", "reset_request", "reset_response", "truncate", "latency", "hang"
]
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
MAX_BODY_BYTES = 1024**3


@dataclass(frozen=True, slots=True)
class AwsFault:
    """An error as the service would send it: HTTP status, code and message."""

    status: int
    code: str
    message: str = "injected by the fault proxy"


# What AWS answers, per service, for the faults the issue names.
S3_SLOW_DOWN = AwsFault(503, "SlowDown", "Please reduce your request rate.")
S3_INTERNAL_ERROR = AwsFault(500, "InternalError", "We encountered an internal error.")
DYNAMODB_THROTTLING = AwsFault(400, "ThrottlingException", "Rate of requests exceeds the allowed")
DYNAMODB_THROUGHPUT = AwsFault(
    400, "ProvisionedThroughputExceededException", "The level of configured provisioned throughput"
)
SQS_THROTTLING = AwsFault(400, "ThrottlingException", "Rate exceeded")
SQS_UNAVAILABLE = AwsFault(503, "ServiceUnavailable", "The request has failed due to a temporary")


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the proxy classified it."""

    service: Service
    operation: str
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes = b""  # read first for the JSON protocols only (S3 bodies stream through)

    @property
    def range_start(self) -> int | None:
        match = re.match(r"bytes=(\d+)-", self.headers.get("range", ""))
        return int(match.group(1)) if match else None


@dataclass(slots=True)
class Rule:
    """Which requests a fault hits and how often; ``active`` may be flipped by the test."""

    fault: Fault
    service: Service | None = None
    operation: str | None = None
    when: Callable[[Call], bool] | None = None
    error: AwsFault | None = None
    count: int | None = None
    probability: float = 1.0
    skip: int = 0
    after_bytes: int = 0
    delay_s: float = 0.0
    active: bool = True
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def matches(self, call: Call) -> bool:
        return (
            self.active
            and (self.service is None or self.service == call.service)
            and (self.operation is None or self.operation == call.operation)
            and (self.when is None or self.when(call))
        )

    def fires(self, rng: random.Random) -> bool:
        """Counted per match: the first ``skip`` pass, then ``count`` fire (each by chance)."""
        self.matched += 1
        if self.matched <= self.skip or (self.count is not None and self.fired >= self.count):
            return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


def sqs_message_bytes(call: Call) -> int:
    """A SendMessage's size as SQS counts it against MaximumMessageSize: the body plus every
    attribute's name, type and value."""
    request = json.loads(call.body or b"{}")
    size = len(str(request.get("MessageBody", "")).encode())
    for name, value in request.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(str(value.get("StringValue", "")).encode())
    return size


def sqs_too_long(limit_bytes: int) -> AwsFault:
    """SQS's refusal of a message over its queue's MaximumMessageSize."""
    return AwsFault(
        400,
        "InvalidParameterValue",
        f"One or more parameters are invalid. Reason: Message must be shorter than "
        f"{limit_bytes} bytes.",
    )


def classify(method: str, path: str, headers: dict[str, str], query: dict[str, str]) -> Call:
    """Service and operation of one request, as the SDK sent it to a single endpoint."""
    target = headers.get("x-amz-target", "")
    prefix, _, operation = target.partition(".")
    if prefix.startswith("DynamoDB_"):
        return Call("dynamodb", operation, method, path, headers, query)
    if prefix == "AmazonSQS":
        return Call("sqs", operation, method, path, headers, query)
    scope = SCOPE.search(
        headers.get("authorization", "") or f"Credential={query.get('X-Amz-Credential', '')}"
    )
    service = scope.group(1) if scope else ""
    if service == "s3" or (not service and not target):
        return Call("s3", s3_operation(method, path, query), method, path, headers, query)
    return Call("other", target or f"{method} {path}", method, path, headers, query)


def s3_operation(method: str, path: str, query: dict[str, str]) -> str:
    """The S3 REST operation of a path-style request (the ones this project uses)."""
    has_key = "/" in path.strip("/")
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in query else "PostObject"
    if method == "PUT":
        if not has_key:
            return "PutBucket" if not query else "PutBucketConfiguration"
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    return "GetObject" if has_key else "ListObjects"


def error_body(service: Service, fault: AwsFault) -> tuple[bytes, str, dict[str, str]]:
    """The error body, content type and headers each protocol uses."""
    if service in ("dynamodb", "sqs"):
        prefix = (
            "com.amazonaws.dynamodb.v20120810#" if service == "dynamodb" else "com.amazonaws.sqs#"
        )
        body = json.dumps({"__type": prefix + fault.code, "message": fault.message}).encode()
        headers = {"x-amzn-ErrorType": fault.code}
        if service == "sqs":
            # SQS JSON also names the code the query protocol used (botocore reads this header).
            headers["x-amzn-query-error"] = (
                f"{fault.code};{'Receiver' if fault.status >= 500 else 'Sender'}"
            )
        return body, "application/x-amz-json-1.0", headers
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
        "<RequestId>FAULTPROXY</RequestId></Error>"
    )
    return xml.encode(), "application/xml", {}


def default_error(service: Service) -> AwsFault:
    return {"s3": S3_SLOW_DOWN, "dynamodb": DYNAMODB_THROTTLING}.get(service, SQS_UNAVAILABLE)


def reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a dropped connection looks."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy:
    """The proxy: ``async with FaultProxy(upstream, seed=1) as proxy`` then use ``proxy.url``."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.rng = random.Random(seed)
        self.injected: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
        )
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _rule_for(self, call: Call) -> Rule | None:
        for rule in self.rules:
            if rule.matches(call) and rule.fires(self.rng):
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = classify(request.method, request.path, headers, dict(request.query))
        if call.service in ("sqs", "dynamodb"):
            call = dataclasses.replace(call, body=await request.read())
        self.seen[(call.service, call.operation)] += 1
        rule = self._rule_for(call)
        if rule is not None:
            self.injected[(rule.fault, call.service, call.operation)] += 1
            early = await self._before(rule, call, request)
            if early is not None:
                return early
        body = await request.read()
        upstream = await self._forward(request, body)
        if rule is not None and rule.fault == "error_after":
            return self._error(call, rule)
        if rule is not None and rule.fault in ("reset_response", "truncate"):
            return await self._cut(request, upstream, rule)
        return self._relay(upstream, head=request.method == "HEAD")

    async def _before(
        self, rule: Rule, call: Call, request: web.Request
    ) -> web.StreamResponse | None:
        """Faults that happen before the emulator sees the request (None: forward it)."""
        if rule.fault == "error":
            return self._error(call, rule)
        if rule.fault == "latency":
            await asyncio.sleep(rule.delay_s)
        elif rule.fault == "hang":
            await self._stopping.wait()
            reset(request)
            return web.Response(status=503)
        elif rule.fault == "reset_request":
            with contextlib.suppress(Exception):
                await request.content.read(rule.after_bytes or 1)
            reset(request)
            return web.Response(status=503)  # never sent: the connection is gone
        return None

    def _error(self, call: Call, rule: Rule) -> web.Response:
        fault = rule.error or default_error(call.service)
        body, content_type, headers = error_body(call.service, fault)
        return web.Response(
            status=fault.status, body=body, headers={**headers, "Content-Type": content_type}
        )

    async def _forward(self, request: web.Request, body: bytes) -> Upstream:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = request.host
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as response:
            data = await response.read()
            kept = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
            length = response.headers.get("Content-Length")
            return Upstream(response.status, kept, data, length)

    def _relay(self, upstream: Upstream, *, head: bool) -> web.Response:
        response = web.Response(status=upstream.status, body=None if head else upstream.body)
        if head and upstream.length is not None:  # a HEAD's length is the object's, not 0
            response.headers["Content-Length"] = upstream.length
        for name, value in upstream.headers:
            if name.lower() != "content-type":
                response.headers.add(name, value)
            else:
                response.content_type = value.split(";")[0]
                response.headers["Content-Type"] = value
        return response

    async def _cut(
        self, request: web.Request, upstream: Upstream, rule: Rule
    ) -> web.StreamResponse:
        """Announce the whole body, send ``after_bytes`` of it, then reset or close."""
        response = web.StreamResponse(status=upstream.status)
        for name, value in upstream.headers:
            response.headers.add(name, value)
        response.content_length = len(upstream.body)
        await response.prepare(request)
        await response.write(upstream.body[: rule.after_bytes])
        await asyncio.sleep(0.05)  # let the partial body leave before the connection ends
        if rule.fault == "reset_response":
            reset(request)
        elif request.transport is not None:
            request.transport.close()
        return response


@dataclass(frozen=True, slots=True)
class Upstream:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    length: str | None = None


@contextlib.asynccontextmanager
async def fault_proxy(upstream: str, *, seed: int = 0) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(upstream, seed=seed) as proxy:
        yield proxy
