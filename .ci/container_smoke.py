"""Container smoke test: the built image, run for real, against a moto server on the host.

    .venv/bin/python .ci/container_smoke.py [--oci ../shared/tools/oci] [--image TAG]

Every container runs with ``--network host`` and reaches the emulator on 127.0.0.1. Checked, in
order: ``transcoder bootstrap``; ``submit`` of a 1080p clip whose 1080p rendition is above the
(lowered, 5 MiB) multipart threshold; ``worker`` takes it to COMPLETED with the right renditions
(size, codec, profile, pixel format, duration; the large one uploaded in parts); ``status`` shows
it; ``/readyz`` answers 200; the image's HEALTHCHECK passes; the worker runs as 10001:10001 with a
group entry; PID 1 is tini; SIGTERM during a long job hands it back (record QUEUED, message
visible again) and the container exits 0. Prints one ``container-smoke: {...}`` JSON line with the
image size (uncompressed and gzip-compressed) and container start -> first receive in seconds.
Exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from transcoder.ops.emulator import Emulator, free_port

USER = "smoke"
BUCKET = "transcoder-media"
TABLE = "transcoder-jobs"
QUEUE = "transcoder-jobs"
MIB = 1024**2


class SmokeFailed(Exception):
    """A check failed; the message says which and what was seen."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailed(what)
    print(f"  ok  {what}", flush=True)


class Podman:
    """``oci podman ...`` with the smoke test's environment for every container."""

    def __init__(self, oci: str, image: str, env: dict[str, str]) -> None:
        self.oci, self.image, self.env = oci, image, env

    def __call__(self, *args: str, check: bool = True, timeout_s: float = 300) -> str:
        done = subprocess.run(
            ["bash", self.oci, "podman", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise SmokeFailed(
                f"podman {' '.join(args[:3])} exited {done.returncode}: {done.stderr}"
            )
        return done.stdout

    def logs(self, name: str, *args: str) -> str:
        """The container's stdout and stderr (structlog writes JSON lines to stderr)."""
        done = subprocess.run(
            ["bash", self.oci, "podman", "logs", *args, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout

    def env_args(self, extra: dict[str, str] | None = None) -> list[str]:
        merged = {**self.env, **(extra or {})}
        return [arg for name, value in merged.items() for arg in ("-e", f"{name}={value}")]

    def run(self, *command: str, volume: str | None = None) -> str:
        mount = ["-v", volume] if volume else []
        return self(
            "run", "--rm", "--network", "host", *self.env_args(), *mount, self.image, *command
        )

    def start(self, name: str, extra: dict[str, str]) -> None:
        """``run -d``: conmon keeps inherited pipes open, so its output goes nowhere, not to us."""
        self("rm", "-f", name, check=False)
        command = ["run", "-d", "--name", name, "--network", "host", *self.env_args(extra)]
        done = subprocess.run(
            ["bash", self.oci, "podman", *command, self.image],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise SmokeFailed(f"podman run -d {self.image} exited {done.returncode}")


def make_clip(path: Path, *, size: str, seconds: int, noisy: bool) -> None:
    """A test clip with the host's ffmpeg: picture (with grain: hard to compress) and a tone."""
    video = f"testsrc2=size={size}:rate=30:duration={seconds}"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", video]
    command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    # Grain makes the renditions hit their maxrate: the 1080p one of a 10 s clip is ~10 MB.
    rate = ["-b:v", "16M", "-maxrate", "16M", "-bufsize", "32M"] if noisy else ["-b:v", "2M"]
    if noisy:
        command += ["-vf", "noise=alls=40:allf=t"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", *rate, "-c:a", "aac"]
    subprocess.run([*command, "-shortest", str(path)], check=True, timeout=600)
    path.chmod(0o644)


def ffprobe(path: Path) -> dict[str, Any]:
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    done = subprocess.run([*command, str(path)], capture_output=True, check=True, timeout=60)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def record(dynamodb: Any, video_id: str) -> dict[str, Any]:
    key = {"pk": {"S": f"USER#{USER}"}, "sk": {"S": f"VIDEO#{video_id}"}}
    item: dict[str, Any] = dynamodb.get_item(TableName=TABLE, Key=key).get("Item") or {}
    return item


def wait_status(dynamodb: Any, video_id: str, wanted: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = record(dynamodb, video_id).get("status", {}).get("S", "")
        if status in wanted:
            return status
        time.sleep(0.5)
    raise SmokeFailed(f"{video_id} still {status or 'absent'} after {timeout_s} s, not {wanted}")


def log_time(podman: Podman, name: str, event: str, timeout_s: float) -> datetime:
    """When the container first logged ``event`` (its structlog timestamp)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in podman.logs(name).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == event:
                    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00"))
        time.sleep(0.3)
    raise SmokeFailed(f"{name} never logged {event} within {timeout_s} s")


def image_sizes(podman: Podman) -> tuple[int, int]:
    """(uncompressed bytes as podman reports them, bytes of `podman save` gzip-compressed)."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", podman.image).strip())
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        archive = Path(tmp) / "image.tar"
        podman("save", "--format", "docker-archive", "-o", str(archive), podman.image)
        with archive.open("rb") as raw, gzip.open(Path(tmp) / "image.tar.gz", "wb", 6) as packed:
            while chunk := raw.read(MIB):
                packed.write(chunk)
        compressed = (Path(tmp) / "image.tar.gz").stat().st_size
    return size, compressed


def submit(podman: Podman, videos: Path, name: str) -> str:
    out = podman.run("submit", f"/videos/{name}", "--user", USER, volume=f"{videos}:/videos:ro")
    return str(json.loads(out.strip().splitlines()[-1])["video_id"])


def check_renditions(s3: Any, video_id: str, tmp: Path) -> None:
    for rung, (width, height) in {"720p": (1280, 720), "1080p": (1920, 1080)}.items():
        key = f"transcoded/{rung}/{USER}/{video_id}.mp4"
        target = tmp / f"{rung}.mp4"
        s3.download_file(BUCKET, key, str(target))
        info = ffprobe(target)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        seen = (video["codec_name"], video["profile"], video["pix_fmt"], video["width"])
        expected = ("h264", "High", "yuv420p", width)
        check(seen == expected and video["height"] == height, f"{rung} is {seen} x{height}")
        check(len(audio) == 1 and audio[0]["codec_name"] == "aac", f"{rung} has AAC audio")
        duration_s = float(info["format"]["duration"])
        check(abs(duration_s - 10) < 0.2, f"{rung} lasts {duration_s:.2f} s (source 10 s)")
    head = s3.head_object(Bucket=BUCKET, Key=f"transcoded/1080p/{USER}/{video_id}.mp4")
    large = head["ContentLength"]
    check(large > 5 * MIB and "-" in head["ETag"], f"1080p ({large} B) went up in parts")


def check_container(podman: Podman, name: str, metrics_port: int) -> None:
    url = f"http://127.0.0.1:{metrics_port}/readyz"
    with urllib.request.urlopen(url, timeout=10) as response:
        check(response.status == 200, f"/readyz answers {response.status}")
    done = subprocess.run(
        ["bash", podman.oci, "podman", "healthcheck", "run", name], capture_output=True, check=False
    )
    check(done.returncode == 0, f"HEALTHCHECK passes (exit {done.returncode})")
    ids = podman("exec", name, "sh", "-c", "id -u; id -g; id -gn").split()
    check(ids == ["10001", "10001", "transcoder"], f"runs as uid:gid:group {ids}")
    init = podman("exec", name, "cat", "/proc/1/comm").strip()
    check(init == "tini", f"PID 1 is {init}")


def check_handback(podman: Podman, aws: dict[str, Any], name: str, videos: Path) -> None:
    video_id = submit(podman, videos, "long.mp4")
    wait_status(aws["dynamodb"], video_id, {"PROCESSING"}, timeout_s=120)
    time.sleep(3)  # ffmpeg is encoding, well before the end of a 120 s clip
    podman("stop", "--time", "60", name, timeout_s=90)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).strip()
    check(code == "0", f"SIGTERM mid-job: the worker exits {code}")
    status = record(aws["dynamodb"], video_id)["status"]["S"]
    check(status == "QUEUED", f"the interrupted job is handed back: {status}")
    sqs = aws["sqs"]
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages", [])
    check(any(video_id in m["Body"] for m in got), "its message is visible again at once")


@contextlib.contextmanager
def emulator() -> Iterator[Emulator]:
    server = Emulator(host="127.0.0.1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def smoke(oci: str, image: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"image": image}
    with emulator() as server, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp_dir:
        tmp = Path(tmp_dir)
        tmp.chmod(0o755)
        env = {
            "AWS_ENDPOINT_URL": server.url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "TRANSCODER_WAIT_TIME_S": "2",
        }
        podman = Podman(oci, image, env)
        aws = {
            n: boto3.client(
                n,
                endpoint_url=server.url,
                region_name="us-east-1",
                aws_access_key_id="test",
                aws_secret_access_key="test",  # noqa: S106 - the emulator's
            )
            for n in ("s3", "sqs", "dynamodb")
        }
        began = time.monotonic()
        summary["image_bytes"], summary["image_gzip_bytes"] = image_sizes(podman)
        print(f"  ..  image sizes measured in {time.monotonic() - began:.0f} s", flush=True)
        make_clip(tmp / "clip.mp4", size="1920x1080", seconds=10, noisy=True)
        make_clip(tmp / "long.mp4", size="1280x720", seconds=120, noisy=False)
        podman.run("bootstrap")
        check(BUCKET in {b["Name"] for b in aws["s3"].list_buckets()["Buckets"]}, "bootstrap")
        video_id = submit(podman, tmp, "clip.mp4")
        name, metrics_port = "transcoder-smoke", free_port()
        worker_env = {
            "TRANSCODER_METRICS_HOST": "127.0.0.1",
            "TRANSCODER_METRICS_PORT": str(metrics_port),
            "TRANSCODER_MULTIPART_THRESHOLD_BYTES": str(5 * MIB),
            "TRANSCODER_MULTIPART_PART_BYTES": str(5 * MIB),
            "TRANSCODER_SHUTDOWN_GRACE_S": "2",
        }
        started = datetime.now().astimezone()
        podman.start(name, worker_env)
        try:
            claimed = log_time(podman, name, "job.claimed", timeout_s=120)
            summary["start_to_first_receive_s"] = round((claimed - started).total_seconds(), 2)
            print(f"  ..  container start -> first receive {summary['start_to_first_receive_s']} s")
            wait_status(aws["dynamodb"], video_id, {"COMPLETED", "FAILED"}, timeout_s=600)
            check(record(aws["dynamodb"], video_id)["status"]["S"] == "COMPLETED", "COMPLETED")
            check_renditions(aws["s3"], video_id, tmp)
            shown = json.loads(podman.run("status", video_id, "--user", USER, "--json"))
            check(shown.get("status") == "COMPLETED", "`transcoder status` shows COMPLETED")
            check_container(podman, name, metrics_port)
            check_handback(podman, aws, name, tmp)
        except SmokeFailed:
            print(podman.logs(name, "--tail", "40"), file=sys.stderr)
            raise
        finally:
            podman("rm", "-f", name, check=False)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oci", default="../shared/tools/oci")
    parser.add_argument("--image", default="localhost/transcoder:local")
    args = parser.parse_args()
    try:
        summary = smoke(args.oci, args.image)
    except SmokeFailed as exc:
        print(f"container-smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    print("container-smoke: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
