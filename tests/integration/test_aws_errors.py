"""An AWS error code no adapter handles is a retryable job failure that names the code.

Before, such a ``ClientError`` (LocalStack's ``InvalidRequest`` on UploadPart, an
``AccessDenied``, a missing bucket) escaped the adapters raw and the worker recorded it as
``internal_error``. Now it is ``aws_error``: retryable, counted towards the DLQ, and the AWS code
is in the job record's message. Codes that adapters handle keep their meaning.
"""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from transcoder.aws.clients import AwsError, Clients, error_code, translated
from transcoder.aws.queue import Delivery, JobQueue
from transcoder.aws.status import JobStore
from transcoder.aws.storage import Storage
from transcoder.domain.errors import AwsUnavailable, InputRejected, LeaseLost, RetryableError
from transcoder.domain.job import Reason
from transcoder.ops.bootstrap import Resources
from transcoder.runtime.decision import error_info


def client_error(code: str, status: int, message: str = "nope") -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "UploadPart")  # type: ignore[arg-type]


def test_an_unknown_code_becomes_a_retryable_aws_error_naming_it() -> None:
    cause = client_error("InvalidRequest", 400, "Checksum Type mismatch")
    with pytest.raises(AwsError) as caught, translated("s3.upload_part"):
        raise cause
    exc = caught.value
    assert isinstance(exc, RetryableError) and exc.retryable
    assert exc.reason is Reason.AWS_ERROR
    assert str(exc) == "s3.upload_part: InvalidRequest (400) Checksum Type mismatch"
    assert exc.__cause__ is cause
    # Still a ClientError with the same response: adapters that check codes keep working.
    assert isinstance(exc, ClientError) and error_code(exc) == "InvalidRequest"
    info = error_info(exc)
    assert (info.code, info.retryable) == (Reason.AWS_ERROR, True)
    assert "InvalidRequest" in info.message
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
    assert (str(copy), error_code(copy)) == (str(exc), "InvalidRequest")


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("Whatever", 500)])
def test_throttling_and_5xx_stay_aws_unavailable(code: str, status: int) -> None:
    with pytest.raises(AwsUnavailable) as caught, translated("s3.put_object"):
        raise client_error(code, status)
    assert not isinstance(caught.value, AwsError)
    assert caught.value.reason is Reason.AWS_UNAVAILABLE


def test_nested_translation_keeps_the_first_error() -> None:
    with pytest.raises(AwsError) as caught, translated("outer"), translated("inner"):
        raise client_error("AccessDenied", 403)
    assert str(caught.value).startswith("inner: AccessDenied (403)")


async def test_an_upload_to_a_missing_bucket_is_a_retryable_aws_error(
    clients: Clients, tmp_path: Path
) -> None:
    path = tmp_path / "r.mp4"
    path.write_bytes(b"x" * 1000)
    storage = Storage(clients.s3, f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(AwsError) as caught:
        await storage.upload(path, "transcoded/720p/u/v.mp4")
    assert caught.value.reason is Reason.AWS_ERROR
    assert "NoSuchBucket" in str(caught.value)


async def test_handled_codes_keep_their_meaning(clients: Clients, resources: Resources) -> None:
    storage = Storage(clients.s3, resources.bucket)
    with pytest.raises(InputRejected) as missing:
        await storage.head("raw/u/none.mp4")
    assert missing.value.reason is Reason.SOURCE_NOT_FOUND

    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    bogus = Delivery("m", "bogus-handle", "{}", 1, 0.0)
    with pytest.raises(LeaseLost):
        await queue.delete(bogus)

    store = JobStore(clients.dynamodb, resources.table)
    assert await store.get("nobody", "nothing") is None
