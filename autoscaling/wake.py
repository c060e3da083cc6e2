"""Wake from zero with the old and the new worker image, side by side.

    python -m autoscaling.wake [--seed 7] [--pull-mb-per-s 25] [--out autoscaling/results]

Runs our policy (sampler + upload wake) over every trace once per image, with the task start
modelled as provisioning + image pull + container start (``autoscaling/startup.py``), and
reports wake time (first upload at zero tasks -> its job starts) p50/p95 over all wakes of all
traces, plus the start-up decomposition. Writes ``wake.md`` and prints it. Deterministic for a
seed: both images see the same uploads and the same provisioning draws.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from autoscaling import sim, workload
from autoscaling.controllers import Sampler
from autoscaling.report import percentile
from autoscaling.simulate import DEFAULT_OUT, OURS, POLICY
from autoscaling.startup import MB, NEW_IMAGE, OLD_IMAGE, PULL_BYTES_PER_S, Image, StartupModel


@dataclass(frozen=True, slots=True)
class WakeRow:
    """One image's wakes over every trace."""

    image: Image
    model: StartupModel
    wakes: int
    wake_p50_s: float | None
    wake_p95_s: float | None


def wakes(startup: StartupModel, seed: int, traces: Sequence[str]) -> list[float]:
    """Every wake time of our policy on ``traces`` with tasks that start like ``startup``."""
    found: list[float] = []
    for trace in traces:
        uploads = workload.trace(trace, seed)
        rng = random.Random(f"{seed}:{trace}:{OURS}")
        controller = Sampler(OURS, POLICY)
        fleet = sim.Fleet(
            uploads,
            rng,
            protection=controller.protection,
            horizon_s=workload.DAY_S,
            startup=startup,
        )
        controller.attach(fleet, rng)
        fleet.run()
        found.extend(fleet.ledger.wake_s)
    return found


def compare(
    seed: int,
    traces: Sequence[str],
    images: Sequence[Image] = (OLD_IMAGE, NEW_IMAGE),
    pull_bytes_per_s: float = PULL_BYTES_PER_S,
) -> list[WakeRow]:
    rows = []
    for image in images:
        model = replace(StartupModel(image), pull_bytes_per_s=pull_bytes_per_s)
        times = wakes(model, seed, traces)
        rows.append(
            WakeRow(image, model, len(times), percentile(times, 0.50), percentile(times, 0.95))
        )
    return rows


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def markdown(rows: Sequence[WakeRow], command: str) -> str:
    lines = [
        f"Made by `{command}`. Task start = provisioning (mean "
        f"{rows[0].model.provision_mean_s:.1f} s, sd {rows[0].model.provision_sd_s:.0f} s) + "
        f"pull (compressed bytes at {rows[0].model.pull_bytes_per_s / MB:.0f} MB/s) + "
        "measured container start; see autoscaling/startup.py.",
        "",
        "| image | uncompressed | compressed | pull | container start | task start (mean) "
        "| wake p50 | wake p95 | wakes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.image.name} | {r.image.uncompressed_bytes / MB:.0f} MB "
            f"| {r.image.compressed_bytes / MB:.0f} MB | {r.model.pull_s:.1f} s "
            f"| {r.image.container_start_s:.1f} s | {r.model.mean_s:.1f} s "
            f"| {_s(r.wake_p50_s)} | {_s(r.wake_p95_s)} | {r.wakes} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaling.wake", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pull-mb-per-s", type=float, default=PULL_BYTES_PER_S / MB)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for wake.md")
    args = parser.parse_args(argv)
    traces = sorted(workload.PATTERNS)
    command = (
        f"python -m autoscaling.wake --seed {args.seed} --pull-mb-per-s {args.pull_mb_per_s:g}"
    )
    text = markdown(compare(args.seed, traces, pull_bytes_per_s=args.pull_mb_per_s * MB), command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wake.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
