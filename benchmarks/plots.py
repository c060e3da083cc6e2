"""PNG plots with matplotlib's Agg backend (no display needed). Loosely typed: kept apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.model import RUNNERS, ControlPlane, SweepPoint
from benchmarks.summary import Summary


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def runners_plot(summaries: Sequence[Summary], path: Path) -> Path:
    """Grouped bars per workload: wall time and CPU time of each runner."""
    plt = _pyplot()
    workloads = list(dict.fromkeys(s.workload for s in summaries))
    by_key = {(s.workload, s.runner): s for s in summaries}
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(RUNNERS)
    for offset, runner in enumerate(RUNNERS):
        xs = [i + offset * width for i in range(len(workloads))]
        for axis, field in zip(axes, ("wall_s", "cpu_s"), strict=True):
            values = [getattr(by_key.get((w, runner)), field, None) or 0.0 for w in workloads]
            axis.bar(xs, values, width, label=runner)
    for axis, title in zip(axes, ("wall time (s, median)", "CPU time (s, median)"), strict=True):
        axis.set_title(title)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))])
        axis.set_xticklabels(workloads, rotation=25, ha="right", fontsize=8)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def sweep_plot(points: Sequence[SweepPoint], rendition: str, path: Path) -> Path:
    """CPU-seconds against quality for each preset, one point per CRF (labelled)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.8))
    for preset in dict.fromkeys(p.preset for p in points):
        xs, ys, labels = [], [], []
        for point in (p for p in points if p.preset == preset):
            output = next((o for o in point.outputs if o.name == rendition), None)
            if output is None or output.quality is None:
                continue
            score = output.quality.vmaf or output.quality.psnr_db
            if score is None:
                continue
            xs.append(point.cpu_s)
            ys.append(score)
            labels.append(f"crf {point.crf}")
        axis.plot(xs, ys, marker="o", label=preset)
        for x, y, label in zip(xs, ys, labels, strict=True):
            axis.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    has_vmaf = any(o.quality and o.quality.vmaf for p in points for o in p.outputs)
    axis.set_xlabel("CPU seconds (whole ladder)")
    axis.set_ylabel(f"{rendition} {'VMAF' if has_vmaf else 'PSNR (dB)'}")
    axis.set_title(f"x264 preset x CRF on the 1080p workload ({rendition})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def control_plot(control: ControlPlane, path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist(control.overhead_ms, bins=30, alpha=0.7, label="receive to delete minus ffmpeg")
    axis.hist(control.without_probe_ms, bins=30, alpha=0.7, label="... minus ffprobe too")
    axis.set_xlabel("ms per job")
    axis.set_ylabel("jobs")
    axis.set_title(f"control-plane overhead, {control.completed} one-second jobs")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_all(
    out_dir: Path,
    stem: str,
    summaries: Sequence[Summary],
    sweep: Sequence[SweepPoint],
    control: ControlPlane | None,
) -> list[Path]:
    written = [runners_plot(summaries, out_dir / f"{stem}-runners.png")] if summaries else []
    if sweep:
        for rendition in dict.fromkeys(o.name for p in sweep for o in p.outputs):
            written.append(sweep_plot(sweep, rendition, out_dir / f"{stem}-sweep-{rendition}.png"))
    if control is not None and control.overhead_ms:
        written.append(control_plot(control, out_dir / f"{stem}-control-plane.png"))
    return written
