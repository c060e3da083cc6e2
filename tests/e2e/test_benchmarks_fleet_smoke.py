"""``python -m benchmarks fleet``, tiny (16 s of 1080p, 4 s chunks, one pair), as a smoke test.

It asserts that the 1-worker and 2-worker chunked runs and the single-pass reference completed
through real worker processes, that every rendition passed the publish gate with the single
pass's frame count, that every part was encoded by some worker, and that the results files were
written; the wall times and the speed-up are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_fleet_benchmark_completes_chunked_on_one_and_two_workers_and_writes_results(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks", "fleet", "--duration", "16", "--chunk-s", "4"]
    command += ["--reps", "1", "--out", str(out)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=1200, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = out.glob("*-fleet.json")
    doc = json.loads(result.read_text())
    runs = doc["runs"]
    assert [(r["kind"], r["workers"]) for r in runs] == [
        ("chunked", 1),
        ("chunked", 2),
        ("single", 1),
    ]
    assert all(r["valid"] and r["status"] == "COMPLETED" for r in runs), runs
    single = runs[2]
    assert single["parts"] == 0 and set(single["frames"]) == {"720p", "1080p"}
    for run in runs[:2]:
        assert run["parts"] == 5  # four 4 s chunks and the audio
        assert sum(run["parts_by_worker"]) == 5
        assert len(run["worker_cpu_s"]) == run["workers"]
        assert run["stitched_by"] is not None
        assert run["frames"] == single["frames"]
    assert doc["summary"]["pair_ratios"] and doc["summary"]["speed_up"] is not None
    assert result.with_suffix(".md").read_text().startswith("# Chunked job, one worker vs two")
    assert "| chunked, rep 0 | 2 |" in done.stdout
