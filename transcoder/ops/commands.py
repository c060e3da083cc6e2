"""Operator commands (``status``, ``dlq list|redrive``, ``retry``), registered by ``add_commands``.

Each prints a table, or JSON with ``--json``. Redrive and retry send the message first and then
set the record back to ``QUEUED`` (only if it is still this job's ``FAILED`` record with a
retryable cause, unchanged since read): a failed send changes nothing, so the command can simply
be run again, and workers claim a retryable ``FAILED`` job whether or not the record was set back
yet. ``dlq redrive --all`` uses SQS's message-move task where the endpoint has it; otherwise
messages are received and re-sent with the same body and deleted from the DLQ only once sent.
See docs/enqueue.md for examples.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from transcoder.aws.clients import open_clients
from transcoder.aws.queue import DeadLetter, JobQueue
from transcoder.aws.status import JobStore
from transcoder.config import Settings
from transcoder.domain import transitions
from transcoder.domain.errors import TranscoderError
from transcoder.domain.job import JobMessage, PartsRecord, PartStatus, Status, isoformat, utcnow
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Refusal, Verdict
from transcoder.runtime import app

UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
JOB_COLUMNS = ("updated", "status", "user", "video", "job", "tries", "progress", "error")
LETTER_COLUMNS = ("message", "sent", "receives", "job", "user", "video", "reason", "record")
REDRIVE_COLUMNS = ("message", "job", "video", "result", "record")


def parse_duration(text: str) -> float:
    """``90`` (seconds), ``30m``, ``1h30m``, ``2d`` -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration like 30m, 2h or 1h30m: {text!r}")
    return sum(float(n) * UNIT_S[u] for n, u in parts)


def age(iso: Any, now: datetime) -> str:
    """How long ago an ISO timestamp was, compactly (``4m12s``, ``3h05m``, ``2d04h``)."""
    try:
        seconds = int((now - datetime.fromisoformat(str(iso))).total_seconds())
    except ValueError:
        return "?"
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A plain left-aligned table; long cells are cut to 100 characters."""
    cells = [[c.upper() for c in columns]]
    cells += [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)[:100]


def _print(payload: Any, text: str, as_json: bool) -> None:
    print(json.dumps(payload, sort_keys=True, default=str) if as_json else text)


def public(record: JobRecord) -> dict[str, Any]:
    """A record as operators see it (JSON-ready; the stored message body left out)."""
    return record.model_dump(mode="json", exclude={"message"}, exclude_none=True)


def job_row(record: JobRecord, now: datetime) -> dict[str, Any]:
    error = record.error
    return {
        "updated": age(isoformat(record.updated_at) if record.updated_at else "", now) + " ago",
        "status": record.status.value,
        "user": record.user_id,
        "video": record.video_id,
        "job": (record.job_id or "")[:12],
        "tries": record.attempts,
        "progress": f"{record.progress}%",
        "error": f"{error.code}: {error.message}" if error else None,
    }


def parts_line(parts: PartsRecord) -> str:
    """A chunked job's parts at a glance: how many are done, running, and who stitches."""
    running = sum(1 for s in parts.states if s.status is PartStatus.PROCESSING)
    audio = " + audio" if parts.audio else ""
    line = f"{parts.done()}/{len(parts.states)} done, {running} running"
    line += f" ({parts.chunk_count} chunks{audio})"
    if parts.stitcher is not None:
        line += f"; stitched by part {parts.stitcher + 1}"
    failed = [
        f"{parts.part(i).label}: {s.error.code}" for i, s in enumerate(parts.states) if s.error
    ]
    return line + (f"; last errors: {', '.join(failed)}" if failed else "")


async def run_status(settings: Settings, args: argparse.Namespace) -> int:
    if args.state:
        return await run_status_list(settings, args)
    if not args.video_id or args.older_than:
        print("status: give a VIDEO_ID, or --status STATE [--older-than D]", file=sys.stderr)
        return 2
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        record = await services.store.get(args.user, args.video_id)
    if record is None:
        print(f"no job for {args.user}/{args.video_id} in {settings.table}", file=sys.stderr)
        return 1
    shown = public(record)
    fields = ("status", "job_id", "attempts", "progress", "updated_at", "error")
    lines = [f"{n:>10}: {shown.get(n)}" for n in fields]
    lines += [f"{n:>10}: {r}" for n, r in sorted(shown.get("renditions", {}).items())]
    if record.parts is not None:
        lines.append(f"{'parts':>10}: {parts_line(record.parts)}")
    _print(shown, "\n".join(lines), args.json)
    return 0


async def run_status_list(settings: Settings, args: argparse.Namespace) -> int:
    now = utcnow()
    before = isoformat(now - timedelta(seconds=args.older_than)) if args.older_than else None
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        records = await services.store.list_by_status(
            Status(args.state), updated_before=before, limit=args.limit
        )
    summary = f"{len(records)} job(s) {args.state}"
    if before:
        summary += f", not updated since {before}"
    rows = table(JOB_COLUMNS, [job_row(r, now) for r in records])
    _print([public(r) for r in records], rows + f"\n{summary}", args.json)
    return 0


def read_letter(letter: DeadLetter) -> tuple[JobMessage | None, dict[str, Any]]:
    """The job message in a letter, if it is one, and its job/user/video (poison: from any JSON)."""
    try:
        message = JobMessage.model_validate_json(letter.body)
    except ValueError:
        try:
            data = json.loads(letter.body)
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        return None, {k: data.get(f"{k}_id") for k in ("job", "user", "video")}
    return message, {"job": message.job_id, "user": message.user_id, "video": message.video_id}


async def describe(store: JobStore, letter: DeadLetter) -> dict[str, Any]:
    message, ids = read_letter(letter)
    record = await store.get(message.user_id, message.video_id) if message else None
    state = record.status.value if record else ("no record" if message else "-")
    code = record.error.code if record and record.error else ""
    return {
        "message": letter.message_id,
        "sent": isoformat(datetime.fromtimestamp(letter.sent_at_ms / 1000, tz=UTC)),
        "receives": letter.receive_count,
        **ids,
        "reason": letter.attributes.get("transcoder_reason", "receives exhausted"),
        "record": f"{state} {code}".strip(),
        "detail": letter.attributes.get("transcoder_detail"),
    }


async def run_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        letters = await services.queue.dead_letters(args.limit)
        try:
            rows = [await describe(services.store, letter) for letter in letters]
        finally:
            await services.queue.release(letters)
    short = [{**row, "job": str(row["job"] or "")[:12] or None} for row in rows]
    text = table(LETTER_COLUMNS, short) + f"\n{len(rows)} message(s) in the dead-letter queue"
    _print(rows, text, args.json)
    return 0


async def requeue_note(store: JobStore, message: JobMessage) -> str:
    """Set a redriven job's record back to QUEUED when it is its retryable FAILED record."""
    outcome = await store.requeue(message.user_id, message.video_id, message.job_id)
    if isinstance(outcome, JobRecord):
        return "QUEUED"
    if outcome.verdict is Verdict.STALE:
        return "record is another upload's (worker will drop it)"
    return f"{outcome.reason} (left as is)"


async def redrive_one(
    services: app.Services, letter: DeadLetter, redriven_jobs: set[str] | None = None
) -> dict[str, Any]:
    """Re-send one letter; a chunked job's part is re-sent as its whole job, once per job."""
    message, ids = read_letter(letter)
    row = {"message": letter.message_id, **ids, "ok": False}
    seen = redriven_jobs if redriven_jobs is not None else set()
    try:
        if message is not None and message.part is not None and message.job_id in seen:
            await services.queue.discard(letter)
            row.update(ok=True, result="folded into its job's redrive", record="-")
            return row
        body = message.whole().model_dump_json() if message and message.part else None
        sent = await services.queue.resend(letter, body=body)
        row["result"] = f"sent as {sent}" + (" (its whole job)" if body else "")
    except (TranscoderError, ClientError) as exc:
        with contextlib.suppress(TranscoderError, ClientError):
            await services.queue.release([letter])
        row["result"] = f"send failed, still in the DLQ: {exc}"
        return row
    row["ok"] = True
    if message is not None:
        seen.add(message.job_id)
    row["record"] = await requeue_note(services.store, message) if message else "poison"
    return row


async def redrive(services: app.Services, job_id: str | None, limit: int) -> dict[str, Any]:
    letters = await services.queue.dead_letters(limit)
    chosen = [le for le in letters if job_id is None or read_letter(le)[1]["job"] == job_id]
    chosen_ids = {le.message_id for le in chosen}
    await services.queue.release([le for le in letters if le.message_id not in chosen_ids])
    redriven_jobs: set[str] = set()
    rows = [await redrive_one(services, letter, redriven_jobs) for letter in chosen]
    return {"mode": "resend", "scanned": len(letters), "redriven": rows}


async def start_move_task(settings: Settings, queue: JobQueue) -> str | None:
    """SQS's message-move task, tried once without SDK retries: if it fails, receive-and-resend
    (always correct, just slower) takes over."""
    async with open_clients(settings, max_attempts=1) as once:
        try:
            return await JobQueue(once.sqs, queue.url, queue.dlq_url).start_redrive()
        except (TranscoderError, ClientError) as exc:
            reason = str(exc).splitlines()[0][:120]
            print(
                f"message-move task unavailable ({reason}); receiving and re-sending",
                file=sys.stderr,
            )
            return None


async def run_dlq_redrive(settings: Settings, args: argparse.Namespace) -> int:
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        if services.queue.dlq_url is None:
            print(f"no dead-letter queue {settings.dead_letter_queue!r}", file=sys.stderr)
            return 2
        use_task = args.all and not args.resend
        handle = await start_move_task(settings, services.queue) if use_task else None
        if handle is not None:
            text = f"SQS message-move task started: {handle}"
            _print({"mode": "move_task", "task_handle": handle}, text, args.json)
            return 0
        result = await redrive(services, args.job, args.limit)
    rows = result["redriven"]
    text = table(REDRIVE_COLUMNS, [{**r, "job": str(r["job"] or "")[:12]} for r in rows])
    text += f"\n{sum(r['ok'] for r in rows)} of {len(rows)} message(s) redriven"
    _print(result, text, args.json)
    if args.job and not rows:
        print(f"no message for job {args.job} among {result['scanned']}", file=sys.stderr)
        return 1
    return 0 if all(r["ok"] for r in rows) else 1


async def run_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Re-send the job the record describes now, then set the record back to ``QUEUED``."""
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        record = await services.store.get(args.user, args.video_id)
        check = transitions.retry(record, None, services.store.now())
        message = record.job_message() if record is not None else None
        if isinstance(check, Refusal) or record is None or message is None:
            reason = check.reason if isinstance(check, Refusal) else "no stored message"
            print(f"retry {args.user}/{args.video_id}: {reason}", file=sys.stderr)
            return 1
        message_id = await services.queue.send(message.model_dump_json())
        requeued = await services.store.requeue(message.user_id, message.video_id, message.job_id)
    row: dict[str, str | None] = {
        "video": message.video_id,
        "job": message.job_id,
        "message": message_id,
    }
    row["record"] = "QUEUED" if isinstance(requeued, JobRecord) else "changed meanwhile"
    row["was"] = record.error.code if record.error else None
    _print(row, table(("video", "job", "was", "message", "record"), [row]), args.json)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status",
        help="show a job record, or list jobs in a state",
        description="With VIDEO_ID: that job's record (status, attempts, error, renditions, HLS, "
        "poster, thumbnails). With --status: the jobs in that state, oldest update first, from "
        "the table's status index (e.g. --status PROCESSING --older-than 30m finds stuck ones).",
    )
    status.add_argument("video_id", nargs="?", help="the video id (the raw/ key's file name stem)")
    status.add_argument("--user", default="demo", help="the upload's user id (default: demo)")
    status.add_argument(
        "--status", dest="state", choices=[s.value for s in Status], help="list jobs in this state"
    )
    status.add_argument("--older-than", type=parse_duration, help="e.g. 30m: not updated since")
    status.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    status.set_defaults(run=run_status)

    dlq = sub.add_parser(
        "dlq",
        help="the dead-letter queue",
        description="A message received TRANSCODER_MAX_RECEIVE_COUNT times (3) without settling "
        "lands in the dead-letter queue. `list` shows those messages with their jobs; `redrive` "
        'moves them back to the jobs queue once the cause is fixed (docs/operations.md, "Dead '
        'letters").',
    ).add_subparsers(required=True, metavar="{list,redrive}")
    listing = dlq.add_parser("list", help="show dead-lettered messages and their jobs")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(run=run_dlq_list)
    move = dlq.add_parser("redrive", help="move dead-lettered messages back to the jobs queue")
    which = move.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", help="only this job's message(s)")
    which.add_argument("--all", action="store_true", help="every message")
    move.add_argument("--resend", action="store_true", help="never use the message-move task")
    move.add_argument("--limit", type=int, default=1000, help="at most this many messages")
    move.add_argument("--json", action="store_true", help="JSON instead of a table")
    move.set_defaults(run=run_dlq_redrive)

    retry = sub.add_parser(
        "retry",
        help="re-send a FAILED job whose cause was retryable",
        description="Put a FAILED job whose error is retryable (retries_exhausted, aws_error, "
        "output_invalid, ...) back to QUEUED and send the job message its record holds. A "
        "permanent failure (a bad upload) is refused: upload the video again instead.",
    )
    retry.add_argument("video_id", help="the video id (the raw/ key's file name stem)")
    retry.add_argument("--user", default="demo", help="the upload's user id (default: demo)")
    retry.add_argument("--json", action="store_true", help="JSON instead of a table")
    retry.set_defaults(run=run_retry)
