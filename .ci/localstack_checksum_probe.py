"""Does an S3 emulator accept the SDK's default checksums on a multipart upload? (issue 17)

    python .ci/localstack_checksum_probe.py http://127.0.0.1:4566

Three two-part uploads (5 MiB parts) and a ranged GET: with botocore's defaults (CRC32 on every
UploadPart, none declared on CreateMultipartUpload), with the compose file's
``AWS_REQUEST_CHECKSUM_CALCULATION``/``AWS_RESPONSE_CHECKSUM_VALIDATION=when_required``, and with
CRC32 declared on CreateMultipartUpload and on every part. Not run by CI (no LocalStack here);
README "Docker" records what LocalStack 3.8.1 answered.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import boto3
from botocore.config import Config

PART = os.urandom(5 * 1024 * 1024)


def client(endpoint: str, when_required: bool) -> Any:
    mode = "when_required" if when_required else "when_supported"
    config = Config(request_checksum_calculation=mode, response_checksum_validation=mode)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - the emulator's
        config=config,
    )


def upload(s3: Any, bucket: str, key: str, declared: dict[str, str]) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **declared)["UploadId"]
    parts = []
    for number in (1, 2):
        sent = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=PART, **declared
        )
        part = {"PartNumber": number, "ETag": sent["ETag"]}
        if declared:
            part["ChecksumCRC32"] = sent["ChecksumCRC32"]
        parts.append(part)
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-1023")["Body"].read()


def main(endpoint: str) -> int:
    bucket = "checksum-probe"
    client(endpoint, False).create_bucket(Bucket=bucket)
    cases = {
        "SDK defaults": (False, {}),
        "when_required": (True, {}),
        "CRC32 declared on create and parts": (False, {"ChecksumAlgorithm": "CRC32"}),
    }
    failed = 0
    for name, (when_required, declared) in cases.items():
        try:
            upload(client(endpoint, when_required), bucket, name.replace(" ", "-"), declared)
            print(f"{name}: multipart upload and ranged GET OK")
        except Exception as exc:
            failed += 1
            print(f"{name}: FAILED {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4566"))
