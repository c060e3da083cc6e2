"""Compose smoke test: docker-compose.yml run for real through podman-compose (``oci compose``).

    .venv/bin/python .ci/compose_smoke.py --oci ../shared/tools/oci

With docker-compose.local-images.yml on top (LocalStack -> moto's server, Prometheus -> Debian's),
it pushes one upload the way a user does (an S3 PUT to raw/ on the published port) and checks
the whole path: S3 notification -> uploads queue -> relay -> enqueue handler -> worker ->
COMPLETED, both renditions present and the 1080p one above the default 8 MiB multipart
threshold (uploaded in parts), ``docker compose run --rm worker status`` shows it, and
Prometheus has scraped the worker. podman 4.3 cannot wait for ``service_healthy``, so the
emulator is started and awaited first; podman-compose then honours
``service_completed_successfully`` for the rest. The stack is always taken down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from container_smoke import MIB, SmokeFailed, check, make_clip

PROJECT = "transcoder-ci"
FILES = ("-f", "docker-compose.yml", "-f", "docker-compose.local-images.yml")
ENDPOINT = "http://127.0.0.1:4566"
USER, VIDEO = "alice", "clip1"


class Compose:
    def __init__(self, oci: str) -> None:
        self.oci = oci

    def __call__(self, *args: str, timeout_s: float = 900, check: bool = True) -> str:
        command = ["bash", self.oci, "compose", "-p", PROJECT, *FILES, *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and done.returncode != 0:
            raise SmokeFailed(
                f"compose {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done.stdout

    def podman(self, *args: str) -> str:
        command = ["bash", self.oci, "podman", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def wait_url(url: str, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
                body: bytes = response.read()
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise SmokeFailed(f"{url} did not answer within {timeout_s} s") from None
            time.sleep(1)


def aws(service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - the emulator's
    )


def wait_completed(timeout_s: float) -> dict[str, Any]:
    key = {"pk": {"S": f"USER#{USER}"}, "sk": {"S": f"VIDEO#{VIDEO}"}}
    dynamodb = aws("dynamodb")
    deadline = time.monotonic() + timeout_s
    item: dict[str, Any] = {}
    while time.monotonic() < deadline:
        item = dynamodb.get_item(TableName="transcoder-jobs", Key=key).get("Item") or {}
        if item.get("status", {}).get("S") in ("COMPLETED", "FAILED"):
            return item
        time.sleep(1)
    raise SmokeFailed(f"{USER}/{VIDEO} not terminal after {timeout_s} s: {item.get('status')}")


def scraped_worker(timeout_s: float) -> float:
    """How many worker targets Prometheus scraped successfully (``up == 1``)."""
    query = urllib.parse.urlencode({"query": 'sum(up{job="transcoder-worker"})'})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = wait_url(f"http://127.0.0.1:9090/api/v1/query?{query}", timeout_s=30)
        result = json.loads(body)["data"]["result"]
        if result and float(result[0]["value"][1]) >= 1:
            return float(result[0]["value"][1])
        time.sleep(2)
    raise SmokeFailed(f"Prometheus scraped no worker within {timeout_s} s")


def run(compose: Compose, clip: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    started = time.monotonic()
    # One service at a time, in dependency order: podman 4.3 cannot wait for service_healthy,
    # and podman-compose 1.6's `up -d` starts containers in file order, so prometheus would wait
    # forever for a worker it has not started yet.
    compose("down", "-t", "5", check=False)  # what an interrupted earlier run left behind
    compose("up", "-d", "localstack")
    wait_url(f"{ENDPOINT}/moto-api/", timeout_s=120)
    compose("up", "-d", "--no-deps", "init")
    init_code = compose.podman("wait", f"{PROJECT}_init_1")
    check(init_code.strip() == "0", f"init (bootstrap + wire) exited {init_code.strip()}")
    compose("up", "-d", "--no-deps", "relay", "worker", "prometheus")
    # Publishing prometheus's port rewrites the port forwarding; wait until 4566 answers again.
    wait_url(f"{ENDPOINT}/moto-api/", timeout_s=60)
    summary["stack_up_s"] = round(time.monotonic() - started, 1)
    s3 = aws("s3")
    uploaded = time.monotonic()
    s3.upload_file(str(clip), "transcoder-media", f"raw/{USER}/{VIDEO}.mp4")
    item = wait_completed(timeout_s=600)
    summary["upload_to_completed_s"] = round(time.monotonic() - uploaded, 1)
    check(item["status"]["S"] == "COMPLETED", f"the upload became {item['status']['S']}")
    for rung in ("720p", "1080p"):
        head = s3.head_object(
            Bucket="transcoder-media", Key=f"transcoded/{rung}/{USER}/{VIDEO}.mp4"
        )
        summary[f"{rung}_bytes"] = head["ContentLength"]
        if rung == "1080p":
            large = head["ContentLength"] > 8 * MIB and "-" in head["ETag"]
            check(large, f"1080p ({head['ContentLength']} B) went up in parts")
    shown = json.loads(
        compose("run", "--rm", "--no-deps", "worker", "status", VIDEO, "--user", USER, "--json")
    )
    check(shown.get("status") == "COMPLETED", "`compose run --rm worker status` shows COMPLETED")
    summary["prometheus_worker_targets_up"] = scraped_worker(timeout_s=90)
    check(True, "Prometheus scrapes the worker")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oci", default="../shared/tools/oci")
    args = parser.parse_args()
    compose = Compose(args.oci)
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            clip = Path(tmp) / "clip.mp4"
            make_clip(clip, size="1920x1080", seconds=12, noisy=True)
            summary = run(compose, clip)
    except SmokeFailed as exc:
        for service in ("init", "relay", "worker"):
            print(compose.podman("logs", "--tail", "25", f"{PROJECT}_{service}_1"), file=sys.stderr)
        print(f"compose-smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        compose("down", "-t", "10", "-v", check=False, timeout_s=300)
    print("compose-smoke: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
