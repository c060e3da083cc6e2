"""The AWS edge: client construction and the translation of SDK errors into our exception tree.

Clients are built once per process by ``open_clients`` (called only from the CLI) with the same
settings everywhere: the standard AWS variables work unchanged, and a configured endpoint (moto,
LocalStack) switches S3 to path-style addressing so presigned URLs resolve on loopback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


@contextlib.contextmanager
def translated(operation: str) -> Iterator[None]:
    """Turn transport failures, throttling and 5xx into ``AwsUnavailable``; let others through.

    Callers that expect a specific ``ClientError`` (a failed condition, a missing key) catch it
    inside this block and raise the domain error themselves.
    """
    try:
        yield
    except TranscoderError:
        raise
    except ClientError as exc:
        if error_code(exc) in THROTTLING or http_status(exc) >= 500:
            raise AwsUnavailable(f"{operation}: {error_code(exc)} ({http_status(exc)})") from exc
        raise
    except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
        raise AwsUnavailable(f"{operation}: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsUnavailable(f"{operation}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise AwsUnavailable(f"{operation}: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Clients:
    s3: S3Client
    sqs: SQSClient
    dynamodb: DynamoDBClient


def client_config(settings: Settings, *, max_attempts: int | None = None) -> AioConfig:
    """The SDK's settings; its own retries (standard mode, ``sdk_max_attempts`` per call) sit
    under the worker's (docs/reliability.md, "Retries, layered")."""
    s3_options = {"addressing_style": "path"} if settings.endpoint_url else {}
    return AioConfig(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": max_attempts or settings.sdk_max_attempts},
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
        yield Clients(s3=s3, sqs=sqs, dynamodb=dynamodb)
