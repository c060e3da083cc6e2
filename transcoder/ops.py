"""Operator commands: ``transcoder status``. Registered into the CLI by ``add_commands``."""

from __future__ import annotations

import argparse
import json
import sys

from transcoder import app
from transcoder.aws import open_clients
from transcoder.config import Settings


async def run_status(settings: Settings, args: argparse.Namespace) -> int:
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        record = await services.store.get(args.user, args.video_id)
    if record is None:
        print(
            f"no job for user {args.user!r}, video {args.video_id!r} in table {settings.table}",
            file=sys.stderr,
        )
        return 1
    record.pop("message", None)
    if args.json:
        print(json.dumps(record, sort_keys=True, default=str))
        return 0
    for name in ("status", "job_id", "attempts", "progress", "updated_at", "error"):
        print(f"{name:>10}: {record.get(name)}")
    for name, rendition in sorted((record.get("renditions") or {}).items()):
        print(f"{name:>10}: {rendition}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="show a job record")
    status.add_argument("video_id")
    status.add_argument("--user", default="demo", help="the upload's user id (default: demo)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)
