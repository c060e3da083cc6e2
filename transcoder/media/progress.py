"""Progress of one job, written by the pipeline and the encoder, read by liveness and shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transcoder.media.ffmpeg import ProgressSample


@dataclass
class Progress:
    """Mutable, owned by one job's task; ``last_advance`` is the stall detector's clock."""

    duration_s: float = 0.0
    stage: str = "claimed"
    frame: int = 0
    out_time_s: float = 0.0
    speed: float | None = None
    encode_started: float | None = None
    last_advance: float = -1.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.last_advance < 0:
            self.last_advance = self.clock()

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.last_advance = self.clock()
        if stage == "transcode":
            self.encode_started = self.last_advance

    def update(self, sample: ProgressSample) -> None:
        if sample.frame > self.frame or sample.out_time_s > self.out_time_s:
            self.last_advance = self.clock()
        self.frame = max(self.frame, sample.frame)
        self.out_time_s = max(self.out_time_s, sample.out_time_s)
        self.speed = sample.speed if sample.speed else self.speed

    def stalled_for_s(self) -> float:
        """Seconds since ffmpeg last advanced; zero outside the transcode stage."""
        if self.stage != "transcode":
            return 0.0
        return self.clock() - self.last_advance

    @property
    def percent(self) -> int:
        """0-100 over the whole job: encoding is 0-90, verify and upload the rest."""
        if self.stage in ("verify", "upload"):
            return 95 if self.stage == "upload" else 90
        if self.stage != "transcode" or self.duration_s <= 0:
            return 0
        return min(90, int(90 * self.out_time_s / self.duration_s))

    def eta_s(self) -> float | None:
        """Seconds until the encode finishes at the current pace; None when unknown."""
        if self.stage in ("verify", "upload"):
            return 0.0
        if self.stage != "transcode" or self.encode_started is None or self.out_time_s <= 0:
            return None
        elapsed = self.clock() - self.encode_started
        rate = self.out_time_s / max(elapsed, 1e-3)
        return max(0.0, (self.duration_s - self.out_time_s) / rate)
