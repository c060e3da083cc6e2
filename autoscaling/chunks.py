"""What one upload costs the fleet, single pass or split into chunks (issue 15). Pure, no I/O.

A job reaches the queue as one message (the enqueue Lambda cannot probe the source). The task
that takes it probes the source and either runs the whole job (single pass, as today) or, for a
source longer than ``threshold_s``, sends one message per chunk of about ``chunk_s`` seconds of
source plus one audio message to the same queue and deletes its own: the **fan-out**. Any task
takes any part, one at a time. When the last part completes, the task that completed it runs the
**stitch** (concatenate without re-encoding, mux the audio, publish) while still holding that
part's message, so the message stays in flight (the scaling policy's busy floor sees the task as
busy) and a task lost mid-stitch costs only the stitch: the part is already recorded as done.

The costs, in CPU-seconds on the task (``task_vcpu`` of them: the wall time is CPU / vCPUs, which
holds for x264 on 1-2 vCPUs, not beyond):

- ``cpu_per_source_s`` = **2.3**: the default ladder (720p + 1080p, veryfast) on 1080p source,
  single pass, measured for issue 15 (a 10-minute upload keeps a 1-vCPU task busy ~23 minutes).
- ``chunk_overhead`` = **1.05**: chunked / single-pass CPU for the same source, measured
  (``python -m benchmarks chunked``: 1.002-1.064 at 6-10 s chunks, docs/benchmarks.md); longer
  chunks cost less, so 1.05 is pessimistic at 30 s.
- ``audio_per_source_s`` = **0.02**: the whole-source AAC encode (measured 0.8 CPU-s for 60 s
  of source, docs/media.md, rounded up).
- ``publish_per_source_s`` = **0.05** plus ``publish_fixed_s`` = **10 s**: stitch (a copy,
  about 0.3 CPU-s per rendition per minute, measured) and the upload of the renditions
  (assumed: the bytes at S3 multipart speeds, plus verification). A single pass pays the same
  upload, so both paths carry this cost; only the chunked one runs it as a separate step.
- ``probe_s`` = **5 s** (assumed): ffprobe over a presigned URL, the plan, one DynamoDB write and
  ``SendMessageBatch`` for the parts. Every job pays it, on the job message.
- ``message_overhead_s`` = **2 s** (assumed): per part message, the receive, lease, seek into the
  source and the chunk's upload round trips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from autoscaling.workload import Upload

GOP_S = 2.0  # the renditions' closed GOP: a tail shorter than one joins the chunk before it


class PartKind(Enum):
    JOB = "job"  # the message the enqueue Lambda sent: probe, then single pass or fan-out
    CHUNK = "chunk"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class JobPlan:
    """The work of one upload: the job message, the parts it fans out, the stitch after them.

    ``parts_s`` empty is a single pass (``job_s`` is then the whole transcode and publish)."""

    job_s: float
    parts_s: tuple[float, ...] = ()
    part_kinds: tuple[PartKind, ...] = ()
    stitch_s: float = 0.0

    @property
    def chunked(self) -> bool:
        return bool(self.parts_s)

    @property
    def work_s(self) -> float:
        """Task-seconds of the whole job when nothing is lost."""
        return self.job_s + sum(self.parts_s) + self.stitch_s


def as_planned(upload: Upload) -> JobPlan:
    """The day simulation's model: one message of ``upload.work_s`` (single pass, no fan-out)."""
    return JobPlan(job_s=upload.work_s)


@dataclass(frozen=True, slots=True)
class ChunkCosts:
    """Chunking settings and costs; the defaults are the figures in the module docstring."""

    enabled: bool = True
    chunk_s: float = 30.0  # TRANSCODER_CHUNK_S
    threshold_s: float = 120.0  # TRANSCODER_CHUNK_THRESHOLD_S
    task_vcpu: float = 1.0
    cpu_per_source_s: float = 2.3
    chunk_overhead: float = 1.05
    audio_per_source_s: float = 0.02
    publish_per_source_s: float = 0.05
    publish_fixed_s: float = 10.0
    probe_s: float = 5.0
    message_overhead_s: float = 2.0

    def __post_init__(self) -> None:
        if self.chunk_s < GOP_S or self.threshold_s < 0 or self.task_vcpu <= 0:
            raise ValueError("need chunk_s >= one GOP, threshold_s >= 0 and task_vcpu > 0")

    def chunks_s(self, source_s: float) -> list[float]:
        """Source seconds per chunk: ``chunk_s`` each, a tail under one GOP joins the last."""
        count = max(1, math.ceil(source_s / self.chunk_s - 1e-9))
        lengths = [self.chunk_s] * (count - 1) + [source_s - self.chunk_s * (count - 1)]
        if count > 1 and lengths[-1] < GOP_S:
            tail_s = lengths.pop()
            lengths[-1] += tail_s
        return lengths

    def publish_s(self, source_s: float) -> float:
        return self.publish_per_source_s * source_s + self.publish_fixed_s

    def single_pass_s(self, source_s: float) -> float:
        encode_s = self.cpu_per_source_s * source_s / self.task_vcpu
        return self.probe_s + encode_s + self.publish_s(source_s)

    def plan(self, upload: Upload) -> JobPlan:
        """Single pass up to ``threshold_s`` of source (or when disabled), else chunks + audio."""
        source_s = upload.source_s
        if not self.enabled or source_s <= self.threshold_s:
            return JobPlan(job_s=self.single_pass_s(source_s))
        per_s = self.cpu_per_source_s * self.chunk_overhead / self.task_vcpu
        chunks = [self.message_overhead_s + per_s * s for s in self.chunks_s(source_s)]
        audio = self.message_overhead_s + self.audio_per_source_s * source_s / self.task_vcpu
        kinds = (PartKind.CHUNK,) * len(chunks) + (PartKind.AUDIO,)
        return JobPlan(
            job_s=self.probe_s,
            parts_s=(*chunks, audio),
            part_kinds=kinds,
            stitch_s=self.publish_s(source_s),
        )
