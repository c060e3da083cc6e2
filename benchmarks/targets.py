"""The issue's targets, each printed as met, not met, or not measured. Never test assertions."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.model import ControlPlane, RunResult
from benchmarks.summary import MAIN_WORKLOAD, MIB, Summary, Target, overhead_percentiles

VMAF_FLOORS = {"1080p": 93.0, "720p": 90.0}
STRAY_BYTES = 64 * 1024


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio_target(
    name: str, value: float | None, limit: float, *, at_least: bool = False
) -> Target:
    sign = ">=" if at_least else "<="
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return Target(name, _fmt(value), f"{sign} {limit}", met, f"on {MAIN_WORKLOAD}")


def ratio_targets(main: dict[str, float | None]) -> list[Target]:
    b3 = main.get("B3/W wall")
    return [
        _ratio_target("W CPU within 3% of B0 (W/B0 CPU)", main.get("W/B0 cpu"), 1.03),
        _ratio_target("W wall within 5% of B0 (W/B0 wall)", main.get("W/B0 wall"), 1.05),
        _ratio_target("W >= 15% faster than B3 (B3/W wall)", b3, 1.15, at_least=True),
        _ratio_target("W CPU <= 0.9 x B1 (W/B1 CPU)", main.get("W/B1 cpu"), 0.9),
    ]


def source_targets(runs: Sequence[RunResult], output_names: set[str]) -> list[Target]:
    worker = [r for r in runs if r.runner == "W" and r.valid and r.source_reads]
    read = [
        r.source_reads.body_bytes / r.source_reads.object_bytes for r in worker if r.source_reads
    ]
    worst = max(read) if read else None
    # Anything big that is not a rendition would be source bytes (the worker's lock file is empty).
    on_disk = {(name, size) for r in worker for name, size in r.files_on_disk.items()}
    stray = sorted(f"{n} ({s} B)" for n, s in on_disk if n not in output_names and s > STRAY_BYTES)
    peaks = [r.peak_python_rss_bytes for r in worker if r.peak_python_rss_bytes]
    rss = max(peaks) / MIB if peaks else None
    return [
        Target(
            "source bytes read <= 1.05 x object size",
            _fmt(worst),
            "<= 1.05",
            None if worst is None else worst <= 1.05,
            "worst W run over all workloads; ffprobe's reads included",
        ),
        Target(
            "no source bytes on local disk",
            ", ".join(stray) or "only renditions",
            "only rendition files in scratch",
            None if not worker else not stray,
            "every file name seen in the W worker's scratch directory",
        ),
        Target(
            "Python worker RSS < 100 MiB (ffmpeg is a separate process)",
            _fmt(rss, ".1f") + " MiB",
            "< 100 MiB",
            None if rss is None else rss < 100,
            "peak RSS of the worker process over all W runs",
        ),
    ]


def _vmaf_scores(summaries: Sequence[Summary], rendition: str) -> list[tuple[float, str]]:
    return [
        (o.quality.vmaf, s.workload)
        for s in summaries
        if s.runner == "W"
        for o in s.outputs
        if o.name == rendition and o.quality is not None and o.quality.vmaf is not None
    ]


def vmaf_targets(summaries: Sequence[Summary]) -> list[Target]:
    """Judged on the main workload; the worst workload is named alongside."""
    found: list[Target] = []
    for rendition, floor in VMAF_FLOORS.items():
        scores = _vmaf_scores(summaries, rendition)
        main = next((score for score, workload in scores if workload == MAIN_WORKLOAD), None)
        worst = min(scores) if scores else None
        detail = f"on {MAIN_WORKLOAD}; worst {worst[0]:.2f} on {worst[1]}" if worst else ""
        found.append(
            Target(
                f"VMAF {rendition} >= {floor:g} with the defaults",
                _fmt(main, ".2f"),
                f">= {floor:g}",
                None if main is None else main >= floor,
                detail + "; PSNR/SSIM in the quality table",
            )
        )
    return found


def control_target(control: ControlPlane | None) -> Target:
    p50 = overhead_percentiles(control)["p50_ms"] if control else None
    detail = f"{control.completed}/{control.jobs} jobs" if control else "not run"
    met = None if p50 is None else p50 < 150
    return Target(
        "control-plane overhead p50 < 150 ms", _fmt(p50, ".1f") + " ms", "< 150 ms", met, detail
    )


def cost_target(summaries: Sequence[Summary]) -> Target:
    main = next((s for s in summaries if s.workload == MAIN_WORKLOAD and s.runner == "W"), None)
    ratio = main.cost.times_cheaper if main and main.cost else None
    return Target(
        "Fargate x86 >= 5x cheaper than MediaConvert Basic HD per output minute",
        _fmt(ratio, ".1f") + "x",
        ">= 5x",
        None if ratio is None else ratio >= 5,
        f"W on {MAIN_WORKLOAD}, task kept busy (CPU-seconds); see docs/benchmarks.md",
    )


def evaluate(
    runs: Sequence[RunResult],
    summaries: Sequence[Summary],
    main_ratios: dict[str, float | None],
    control: ControlPlane | None,
    output_names: set[str],
) -> list[Target]:
    return [
        *ratio_targets(main_ratios),
        *source_targets(runs, output_names),
        *vmaf_targets(summaries),
        control_target(control),
        cost_target(summaries),
    ]


def verdict(target: Target) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[target.met]
