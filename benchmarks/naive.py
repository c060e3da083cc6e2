"""B3, the naive worker: download the whole object, transcode from the file, upload the results.

``python -m benchmarks.naive JOB.json`` with a job file written by the harness::

    {"endpoint": ..., "region": ..., "bucket": ..., "key": ..., "source": "/scratch/source.mp4",
     "args": [ffmpeg command line reading "source"], "outputs": {"720p": ["/scratch/720p.mp4",
     "transcoded-naive/720p/x.mp4"]}, "report": "/scratch/report.json"}

It uses boto3's managed transfers (``download_file``/``upload_file``), as a first implementation
typically would, and writes a report with its stage times and its own CPU split: its Python CPU
(``RUSAGE_SELF``) and its reaped ffmpeg's (``RUSAGE_CHILDREN``), both counted after start-up.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run(job: dict[str, Any]) -> dict[str, Any]:
    s3 = boto3.client("s3", endpoint_url=job["endpoint"], region_name=job["region"])
    self_before, children_before = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    started_at = time.time()
    started = time.monotonic()
    s3.download_file(job["bucket"], job["key"], job["source"])
    downloaded = time.monotonic()
    done = subprocess.run(job["args"], capture_output=True, text=True, check=False)
    transcoded = time.monotonic()
    if done.returncode == 0:
        for path, key in job["outputs"].values():
            s3.upload_file(path, job["bucket"], key)
    uploaded = time.monotonic()
    return {
        "returncode": done.returncode,
        "stderr": done.stderr[-1500:],
        "stages_s": {
            "download": downloaded - started,
            "transcode": transcoded - downloaded,
            "upload": uploaded - transcoded,
        },
        "wall_s": uploaded - started,
        "started_at": started_at,
        "python_cpu_s": _cpu(resource.RUSAGE_SELF) - self_before,
        "ffmpeg_cpu_s": _cpu(resource.RUSAGE_CHILDREN) - children_before,
        "python_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "ffmpeg_maxrss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    report = run(job)
    Path(job["report"]).write_text(json.dumps(report))
    return 0 if report["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
