"""One exception tree for the worker; adapters translate SDK and FFmpeg failures into it.

::

    TranscoderError
    ├── PermanentError          the job can never succeed: FAILED, message deleted
    │   ├── InvalidMessage      the SQS body is not a JobMessage (poison pill)
    │   ├── InputRejected       the upload is not a usable video (empty, not a video, too long, ...)
    │   └── ProcessingTimeout   the job would outlive SQS's 12-hour invisibility cap
    ├── RetryableError          anything else: QUEUED again, message retried with backoff
    │   ├── AwsUnavailable      throttling, 5xx, network errors talking to AWS
    │   │   └── AwsError        any other AWS error code no adapter handled (aws_error; it
    │   │                       counts towards the DLQ: transcoder.aws.clients)
    │   ├── FfmpegFailed        ffmpeg exited badly for a reason we cannot pin on the input
    │   ├── Stalled             ffmpeg made no progress for the stall timeout
    │   ├── OutputInvalid       a rendition failed the publish gate
    │   └── WorkerEnvironmentError  this worker cannot run jobs (scratch full, ...): handed
    │                           back with the receive spared (transcoder.runtime.fitness)
    └── LeaseLost               another worker owns the job now: write nothing, touch nothing

The worker never inspects botocore error codes: it only sees these classes. Anything that is not
a ``TranscoderError`` is treated as retryable (default to retryable: a wrongly retried message can
be redriven from the DLQ, a wrongly deleted one is gone).
"""

from __future__ import annotations

from transcoder.domain.job import Reason


class TranscoderError(Exception):
    """Base class; ``reason`` is the stable code recorded in the job record."""

    retryable: bool = True
    default_reason: Reason = Reason.INTERNAL_ERROR

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason


class PermanentError(TranscoderError):
    retryable = False


class InvalidMessage(PermanentError):
    default_reason = Reason.INVALID_MESSAGE


class InputRejected(PermanentError):
    default_reason = Reason.NOT_A_VIDEO


class ProcessingTimeout(PermanentError):
    default_reason = Reason.PROCESSING_TIMEOUT


class RetryableError(TranscoderError):
    retryable = True


class AwsUnavailable(RetryableError):
    default_reason = Reason.AWS_UNAVAILABLE


class FfmpegFailed(RetryableError):
    default_reason = Reason.FFMPEG_FAILED


class Stalled(RetryableError):
    default_reason = Reason.STALLED


class OutputInvalid(RetryableError):
    default_reason = Reason.OUTPUT_INVALID


class WorkerEnvironmentError(RetryableError):
    default_reason = Reason.SCRATCH_FULL


class LeaseLost(TranscoderError):
    """The fence moved: another attempt owns the record, or our receipt handle is dead."""

    retryable = True
    default_reason = Reason.LEASE_LOST
