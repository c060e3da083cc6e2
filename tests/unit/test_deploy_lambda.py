"""The Lambda bundle and the compose relay.

* ``deploy/lambda/build.py`` builds the zip the template deploys; built here offline
  (``--from-env``), it must hold the three handlers, ``transcoder/domain/job.py`` and pydantic, and
  no
  aiobotocore; unpacked next to nothing but what the Lambda runtime provides (boto3 and its
  dependencies), every handler imports.
* ``enqueue_lambda.relay`` stands in for S3 -> Lambda in docker-compose: against the moto server,
  a real S3 notification to the uploads queue becomes a QUEUED job and one job message.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from enqueue_lambda import relay
from transcoder.config import Settings
from transcoder.domain.job import JobMessage, record_key
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "lambda" / "build.py"
HANDLERS = ("enqueue_lambda.handler", "enqueue_lambda.dlq", "autoscaling.sampler")
# What the Lambda Python runtime itself provides (boto3 and its dependencies).
RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
FORBIDDEN = (
    "aiobotocore",
    "aiohttp",
    "boto3",
    "botocore",
    "structlog",
    "prometheus_client",
    "pydantic_settings",
    "ffmpeg",
)


def build(out: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(BUILD), "--from-env", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lambda") / "functions.zip"
    build(out)
    return out


def test_bundle_holds_the_handlers_and_pydantic_but_no_aiobotocore(bundle: Path) -> None:
    names = zipfile.ZipFile(bundle).namelist()
    tops = {name.split("/")[0].split("-")[0] for name in names}
    assert [top for top in FORBIDDEN if top in tops] == []
    for required in (
        "transcoder/__init__.py",
        "transcoder/domain/job.py",
        "enqueue_lambda/handler.py",
        "enqueue_lambda/dlq.py",
        "autoscaling/sampler.py",
        "pydantic/__init__.py",
    ):
        assert required in names, required
    assert any(name.startswith("pydantic_core/") and ".so" in name for name in names)
    # The worker stays out: only the handlers' own import closure is bundled.
    for worker_module in (
        "transcoder/aws/clients.py",
        "transcoder/runtime/worker.py",
        "transcoder/config.py",
    ):
        assert worker_module not in names, worker_module
    assert not [name for name in names if name.endswith(".pyc")]


def test_every_handler_imports_with_only_the_runtime_beside_the_bundle(
    bundle: Path, tmp_path: Path
) -> None:
    code = tmp_path / "task"  # what Lambda unpacks to /var/task
    zipfile.ZipFile(bundle).extractall(code)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    site = Path(boto3.__file__).resolve().parents[1]
    for name in RUNTIME:
        (runtime / name).symlink_to(site / name)
    probe = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(code)!r}, {str(runtime)!r}]\n"
        f"for name in {HANDLERS!r}:\n"
        "    assert callable(importlib.import_module(name).handler)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_LAMBDA"))}
    completed = subprocess.run(
        [sys.executable, "-S", "-c", probe],  # -S: no site-packages, only the stdlib
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    loaded = set(json.loads(completed.stdout))
    assert {"pydantic", "transcoder", "enqueue_lambda", "autoscaling"} <= loaded
    assert loaded.isdisjoint({"aiobotocore", "aiohttp", "pydantic_settings", "structlog"})


def test_bundle_is_reproducible(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    build(again)
    assert (
        hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(bundle.read_bytes()).digest()
    )


# ---------------------------------------------------------------------------- the compose relay


def sync_clients(settings: Settings) -> tuple[S3Client, SQSClient]:
    config = Config(region_name=settings.region, s3={"addressing_style": "path"})
    endpoint = settings.endpoint_url
    return (
        boto3.client("s3", endpoint_url=endpoint, config=config),
        boto3.client("sqs", endpoint_url=endpoint, config=config),
    )


def relay_env(settings: Settings) -> dict[str, str]:
    assert settings.endpoint_url
    return {
        "AWS_ENDPOINT_URL": settings.endpoint_url,
        "AWS_REGION": settings.region,
        "TRANSCODER_BUCKET": settings.bucket,
        "TRANSCODER_QUEUE": settings.queue,
        "TRANSCODER_TABLE": settings.table,
    }


async def test_relay_turns_a_raw_upload_notification_into_one_job(
    settings: Settings, resources: Resources
) -> None:
    s3, sqs = sync_clients(settings)
    uploads = relay.wire(s3, sqs, settings.bucket, uploads_queue=f"{settings.queue}-uploads")
    assert (
        relay.wire(s3, sqs, settings.bucket, f"{settings.queue}-uploads") == uploads
    )  # idempotent
    s3.put_object(Bucket=settings.bucket, Key="raw/alice/clip-1.mp4", Body=b"\0" * 2048)
    s3.put_object(Bucket=settings.bucket, Key="elsewhere/ignored.mp4", Body=b"\0" * 2048)
    relayer = relay.Relay(
        sqs, uploads, relay.enqueuer_from_env(relay_env(settings), sqs), wait_time_s=1
    )
    deadline = time.monotonic() + 30
    while job_record(settings, "alice", "clip-1") is None and time.monotonic() < deadline:
        relayer.poll()
    item = job_record(settings, "alice", "clip-1")
    assert item is not None, "the upload never became a job"
    assert item["status"]["S"] == "QUEUED"
    messages = sqs.receive_message(
        QueueUrl=resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    bodies = [JobMessage.model_validate_json(m["Body"]) for m in messages]
    assert [(b.key, b.user_id, b.video_id) for b in bodies] == [
        ("raw/alice/clip-1.mp4", "alice", "clip-1")
    ]
    assert relayer.poll() == 0  # the uploads queue is drained; nothing is handled twice


def job_record(settings: Settings, user_id: str, video_id: str) -> dict[str, Any] | None:
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=settings.endpoint_url, region_name=settings.region
    )
    return dynamodb.get_item(
        TableName=settings.table, Key=record_key(user_id, video_id), ConsistentRead=True
    ).get("Item")


async def test_relay_leaves_an_event_it_could_not_handle_for_a_retry(
    settings: Settings, resources: Resources
) -> None:
    s3, sqs = sync_clients(settings)
    uploads = relay.wire(s3, sqs, settings.bucket, uploads_queue=f"{settings.queue}-uploads")
    broken = relay.enqueuer_from_env(
        {**relay_env(settings), "TRANSCODER_TABLE": f"{settings.table}-missing"}, sqs
    )
    s3.put_object(Bucket=settings.bucket, Key="raw/bob/v1.mp4", Body=b"\0" * 1024)
    relayer = relay.Relay(sqs, uploads, broken, wait_time_s=1)
    for _ in range(5):
        relayer.poll()  # the handler raises for the upload; s3:TestEvent, if any, is dropped
    attributes = sqs.get_queue_attributes(
        QueueUrl=uploads, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) >= 1  # kept, not deleted
