"""What the runtime needs from the outside world, as ``Protocol``s.

The worker, liveness and the settler depend on these, not on the adapters in ``transcoder.aws``;
the adapters satisfy them structurally (mypy checks it where ``runtime.app`` wires them), and the
tests' fakes (``tests/fakes.py``) implement the same protocols, so a fake that drifts from the
real adapter fails type checking instead of passing a test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from transcoder.aws.queue import Delivery
from transcoder.aws.storage import ObjectInfo, Uploaded
from transcoder.domain.job import ErrorInfo, JobMessage, PartsRecord, Published, SourceFacts
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Lease, Refusal

Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


class JobQueuePort(Protocol):
    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_s: int
    ) -> list[Delivery]: ...

    async def delete(self, delivery: Delivery) -> None: ...

    async def set_visibility(self, delivery: Delivery, seconds: int) -> None: ...

    async def requeue(self, delivery: Delivery, *, delay_s: int = 0) -> str: ...

    async def dead_letter(self, delivery: Delivery, *, reason: str, detail: str) -> None: ...

    async def send(self, body: str, *, delay_s: int = 0) -> str: ...


class JobStorePort(Protocol):
    async def claim(
        self, message: JobMessage, *, owner: str, lease_s: float
    ) -> Lease | Refusal: ...

    async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None: ...

    async def confirm(self, lease: Lease) -> None: ...

    async def record_source(self, lease: Lease, source: SourceFacts) -> None: ...

    async def mark_completed(self, lease: Lease, published: Published) -> JobRecord: ...

    async def mark_failed(self, lease: Lease, error: ErrorInfo) -> JobRecord: ...

    async def release(self, lease: Lease, error: ErrorInfo | None) -> None: ...

    async def split(self, lease: Lease, plan: PartsRecord) -> JobRecord: ...

    async def fanned_out(self, lease: Lease) -> None: ...

    async def part_done(self, lease: Lease) -> JobRecord: ...


class EventsPort(Protocol):
    """Job events (``transcoder.aws.bus``): announce a record's end; never raises."""

    async def publish(self, record: JobRecord) -> bool: ...


class StoragePort(Protocol):
    async def head(self, key: str, *, version_id: str | None = None) -> ObjectInfo: ...

    async def read_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> bytes: ...

    async def presign_get(self, key: str, *, ttl_s: int, version_id: str | None = None) -> str: ...

    async def upload(
        self, path: Path, key: str, *, content_type: str = "video/mp4"
    ) -> Uploaded: ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def delete(self, keys: list[str]) -> None: ...

    async def download(self, key: str, path: Path) -> int: ...


class ProtectionPort(Protocol):
    """ECS task scale-in protection (``transcoder.aws.protection``)."""

    @property
    def protected(self) -> bool: ...

    async def acquire(self) -> bool: ...

    async def renew(self) -> None: ...

    async def release(self) -> None: ...
