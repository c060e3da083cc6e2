"""The results of one benchmark invocation: plain dataclasses that serialise to JSON as they are."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.quality import Quality

RUNNERS = ("W", "B0", "B1", "B3")
RUNNER_TITLES = {
    "W": "worker end to end (emulator)",
    "B0": "plain ffmpeg, worker's args, local file",
    "B1": "one ffmpeg per rendition, local file",
    "B3": "naive: download, transcode, upload",
}


@dataclass(frozen=True, slots=True)
class Output:
    """One rendition a run produced, as the worker's publish gate saw it."""

    name: str
    width: int
    height: int
    duration_s: float
    bytes: int
    bitrate_kbps: int
    valid: bool
    problem: str | None = None
    digest: str = ""  # MD5 of the video packets
    quality: Quality | None = None


@dataclass(frozen=True, slots=True)
class SourceReads:
    """What the emulator served for the source object during one run."""

    object_bytes: int
    body_bytes: int  # every client
    requests: int
    ffmpeg_body_bytes: int  # libavformat clients (ffmpeg and ffprobe reading a presigned URL)
    ffmpeg_requests: int
    probe_body_bytes: int  # the part read before the transcode started (for ffprobe)
    probe_requests: int


@dataclass
class RunResult:
    """One run of one runner on one workload."""

    runner: str
    workload: str
    rep: int
    ok: bool
    error: str | None = None
    wall_s: float = 0.0
    stages_s: dict[str, float] = field(default_factory=dict)
    first_frame_s: float | None = None
    python_cpu_s: float = 0.0
    ffmpeg_cpu_s: float = 0.0
    peak_python_rss_bytes: int | None = None
    peak_ffmpeg_rss_bytes: int = 0
    peak_disk_bytes: int = 0
    files_on_disk: dict[str, int] = field(default_factory=dict)  # name -> largest size seen
    source_reads: SourceReads | None = None
    emulator_cpu_s: float | None = None  # the emulator's CPU during the run (not the worker's)
    outputs: list[Output] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return self.python_cpu_s + self.ffmpeg_cpu_s

    @property
    def valid(self) -> bool:
        return self.ok and bool(self.outputs) and all(o.valid for o in self.outputs)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One preset x CRF point on the 1080p workload (plain ffmpeg, the worker's arguments)."""

    preset: str
    crf: int
    ok: bool
    wall_s: float
    cpu_s: float
    duration_s: float
    outputs: tuple[Output, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """Per-job overhead of the real worker on tiny jobs (receive to delete minus ffmpeg)."""

    jobs: int
    completed: int
    wall_s: float
    overhead_ms: tuple[float, ...]  # receive-to-delete minus ffmpeg, per job
    without_probe_ms: tuple[float, ...]  # ... minus ffprobe as well
    ffmpeg_ms: tuple[float, ...]
    ffprobe_ms: tuple[float, ...]
