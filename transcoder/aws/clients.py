"""The AWS edge: client construction and the translation of SDK errors into our exception tree.

Clients are built once per process by ``open_clients`` (called only from the CLI) with the same
settings everywhere: the standard AWS variables work unchanged, and a configured endpoint (moto,
LocalStack) switches S3 to path-style addressing so presigned URLs resolve on loopback.

``translated`` turns every SDK failure into a ``TranscoderError``::

    throttling, 5xx, transport errors,
    a streamed body cut short            -> AwsUnavailable   (aws_unavailable: AWS is struggling)
    any other ClientError                -> AwsError         (aws_error: AWS refused this request)

``AwsError`` is retryable *and* still a ``ClientError`` carrying the original response, so an
adapter that catches one specific code around the block (a failed condition, a dead receipt
handle, a 404) keeps working, while a code nobody handles reaches the worker as a retryable error
that names the AWS code instead of an anonymous ``internal_error``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from transcoder.config import Settings
from transcoder.domain.errors import AwsUnavailable, TranscoderError
from transcoder.domain.job import Reason

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient

THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "TooManyRequestsException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "KMS.ThrottlingException",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class AwsError(AwsUnavailable, ClientError):
    """A ``ClientError`` no adapter handled: retryable, reason ``aws_error``, the AWS code named.

    It counts towards the DLQ like any job failure (``aws_unavailable`` does not): a request AWS
    keeps refusing (AccessDenied, an emulator's InvalidRequest) must end in the DLQ, not loop.
    """

    default_reason = Reason.AWS_ERROR

    def __init__(self, operation: str, cause: ClientError) -> None:
        message = cause.response.get("Error", {}).get("Message", "")
        Exception.__init__(
            self, f"{operation}: {error_code(cause)} ({http_status(cause)}) {message}".rstrip()
        )
        self.reason = Reason.AWS_ERROR
        self.operation = operation
        self.response = cause.response
        self.operation_name = cause.operation_name

    def __reduce__(self) -> tuple[type[AwsError], tuple[str, ClientError]]:
        return type(self), (self.operation, ClientError(self.response, self.operation_name))


@contextlib.contextmanager
def translated(operation: str) -> Iterator[None]:
    """Turn every SDK failure into a retryable ``TranscoderError`` (see the module docstring).

    Callers that expect a specific ``ClientError`` (a failed condition, a missing key) catch it
    around this block, check ``error_code`` and raise the domain error themselves; whatever they
    re-raise is already an ``AwsError``.
    """
    try:
        yield
    except TranscoderError:
        raise
    except ClientError as exc:
        if error_code(exc) in THROTTLING or http_status(exc) >= 500:
            raise AwsUnavailable(f"{operation}: {error_code(exc)} ({http_status(exc)})") from exc
        raise AwsError(operation, exc) from exc
    except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
        raise AwsUnavailable(f"{operation}: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsUnavailable(f"{operation}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise AwsUnavailable(f"{operation}: {exc!r}") from exc
    except aiohttp.ClientError as exc:
        # A streamed body (GetObject) cut short is aiohttp's ClientPayloadError, raised while
        # reading ``Body``, past botocore's wrapping: S3 failing, never a bad object.
        raise AwsUnavailable(f"{operation}: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Clients:
    s3: S3Client
    sqs: SQSClient
    dynamodb: DynamoDBClient
    # EventBridge (job events; no stub package: typed by the one call it serves, aws.bus).
    events: Any = None


def client_config(settings: Settings, *, max_attempts: int | None = None) -> AioConfig:
    """One configuration for every client.

    The SDK's own retries (standard mode, ``sdk_max_attempts`` per call) sit under the worker's
    (docs/reliability.md, "Retries, layered"). Uploads always declare CRC32 (see ``storage``),
    whatever ``request_checksum_calculation`` says. Response checksums: against AWS the SDK's
    default stays (``when_supported``: every full GET that S3 answers with a full-object checksum
    is validated as it streams; S3 sends none for ranged GETs). Against an emulator
    (``endpoint_url`` set) validation happens only when a caller asks for it: some emulators
    answer a ranged GET with the whole object's checksum, which the SDK would then reject.
    """
    emulated = bool(settings.endpoint_url)
    s3_options = {"addressing_style": "path"} if emulated else {}
    return AioConfig(
        region_name=settings.region,
        response_checksum_validation="when_required" if emulated else None,
        # ``total_max_attempts`` counts the first call; botocore's ``max_attempts`` would count
        # retries only (max_attempts=1 is two calls), which the fault proxy showed.
        retries={
            "mode": "standard",
            "total_max_attempts": max_attempts or settings.sdk_max_attempts,
        },
        connect_timeout=5,
        read_timeout=settings.wait_time_s + 40,
        max_pool_connections=max(10, settings.upload_concurrency * settings.slots + 4),
        s3=s3_options,
        signature_version="s3v4",
    )


@contextlib.asynccontextmanager
async def open_clients(
    settings: Settings, *, max_attempts: int | None = None
) -> AsyncIterator[Clients]:
    """The process's clients, closed on exit."""
    session = get_session()
    config = client_config(settings, max_attempts=max_attempts)
    endpoint = settings.endpoint_url
    async with contextlib.AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(
            session.create_client("s3", endpoint_url=endpoint, config=config)
        )
        sqs = await stack.enter_async_context(
            session.create_client("sqs", endpoint_url=endpoint, config=config)
        )
        dynamodb = await stack.enter_async_context(
            session.create_client("dynamodb", endpoint_url=endpoint, config=config)
        )
        events = await stack.enter_async_context(
            session.create_client("events", endpoint_url=endpoint, config=config)
        )
        yield Clients(s3=s3, sqs=sqs, dynamodb=dynamodb, events=events)
