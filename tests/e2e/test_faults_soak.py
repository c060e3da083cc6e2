"""Fault scenario 13, the soak: 30 short jobs, three workers, random SIGKILL/SIGTERM.

Jobs (1 s of 1280x720 each) arrive in small batches over the first 30 s while, for 40 s, a chaos
loop kills or stops a random worker every 1-3 s and starts a replacement at once (as ECS would).
Then the fleet settles. Every job must end COMPLETED exactly
once (one completed settlement across all logs, its rendition in S3) or FAILED with a reason code;
no scratch file may be left behind; no message may be left in the jobs queue or the DLQ (the
dead-letter handler runs on what reaches the DLQ, as its SQS trigger would).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import time
from pathlib import Path

import pytest
from faults.clips import clip
from faults.disk import nearly_full_tmpfs
from faults.harness import TERMINAL, Fleet, WorkerProcess
from faults.proxy import (
    DYNAMODB_THROTTLING,
    DYNAMODB_THROUGHPUT,
    S3_INTERNAL_ERROR,
    S3_SLOW_DOWN,
    SQS_THROTTLING,
    SQS_UNAVAILABLE,
    FaultProxy,
    Rule,
)

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.media import probe
from transcoder.ops.demo import Submitted
from transcoder.runtime.worker import EXIT_UNFIT

pytestmark = pytest.mark.slow
JOBS, WORKERS, CHAOS_S, SEED = 30, 3, 40.0, 20261122
BATCH, BATCH_EVERY_S = 3, 3.0


async def chaos(fleet: Fleet, slots: list[WorkerProcess], rng: random.Random) -> list[str]:
    """Until CHAOS_S has passed: every 1-3 s, SIGKILL or SIGTERM a random worker, replace it."""
    actions = []
    deadline = time.monotonic() + CHAOS_S
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        index = rng.randrange(len(slots))
        victim = slots[index]
        busy = bool(victim.ffmpeg())
        if rng.random() < 0.5:
            victim.kill()
            await victim.wait_exit(5)
            actions.append(f"SIGKILL{'(busy)' if busy else ''}")
        else:
            victim.terminate()
            if await victim.wait_exit(fleet.settings.shutdown_grace_s + 10) is None:
                victim.kill()
            actions.append(f"SIGTERM{'(busy)' if busy else ''}")
        slots[index] = fleet.start(f"s{index}-{len(actions)}")
    return actions


async def feed(fleet: Fleet) -> list[Submitted]:
    """Submit JOBS uploads, BATCH at a time every BATCH_EVERY_S."""
    jobs: list[Submitted] = []
    while len(jobs) < JOBS:
        batch = [clip(1)] * min(BATCH, JOBS - len(jobs))
        jobs += await fleet.submit(*batch, user=f"soak{len(jobs)}")
        await asyncio.sleep(BATCH_EVERY_S)
    return jobs


async def test_soak_every_job_settles_exactly_once_under_random_kills(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    async with Fleet.open(settings, clients, tmp_path, shutdown_grace_s=3.0) as fleet:
        slots = [fleet.start(f"s{i}") for i in range(WORKERS)]
        jobs, actions = await asyncio.gather(feed(fleet), chaos(fleet, slots, rng))

        async def settled() -> bool:
            if (await fleet.dlq_depth()).visible:
                await fleet.run_dlq_handler()
            records = [await fleet.record(j) for j in jobs]
            return all(r.get("status") in ("COMPLETED", "FAILED") for r in records)

        await fleet.wait_until("every job settled", settled, 180)
        await fleet.wait_until("jobs queue drained", fleet.drained, 60)
        await fleet.stop_all()
        for worker in fleet.workers:
            code = worker.popen.returncode
            # SIGTERM before the handlers are installed (mid start-up) kills like SIGKILL would.
            assert code in (0, -9) or (code == -15 and not worker.events("worker.started"))

        records = [await fleet.record(j) for j in jobs]
        statuses = collections.Counter(r["status"] for r in records)
        for job, record in zip(jobs, records, strict=True):
            outcomes = fleet.outcomes(record["job_id"])
            if record["status"] == "COMPLETED":
                assert outcomes.count("completed") <= 1, (job.video_id, outcomes)
                assert await fleet.outputs(job), job.video_id
            else:
                assert record["error"]["code"], job.video_id
        leftovers = sorted(str(p) for p in fleet.settings.scratch_dir.rglob("*"))
        assert leftovers == []
        assert await fleet.drained()
        dlq = await fleet.dlq_depth()
        assert (dlq.visible, dlq.in_flight) == (0, 0)
        everything = collections.Counter(o for w in fleet.workers for o in w.outcomes())
        print(
            f"scenario 13: {len(actions)} signals {collections.Counter(actions)}; "
            f"{len(fleet.workers)} worker processes; records {dict(statuses)}; "
            f"settlements {dict(everything)}; {time.monotonic() - started:.0f} s"
        )


# ---------------------------------------------------------------- the soak through the proxy

# A longer or different run: BROWNOUT_SEED=n BROWNOUT_VALID=m (docs/reliability.md, section 10).
BROWNOUT_SEED = int(os.environ.get("BROWNOUT_SEED", "20261202"))
BROWNOUT_VALID = int(os.environ.get("BROWNOUT_VALID", "16"))
BROWNOUT_RATE = float(os.environ.get("BROWNOUT_RATE", "1"))  # multiplies every probability
BROWNOUT_WORKERS, BROWNOUT_FAULT_S, BROWNOUT_KILLS = 2, 90.0, 2


def brownout_rules() -> list[Rule]:
    """Random AWS faults at rates a bad day in a region shows; none that applies a claim twice.

    A lost answer (``error_after``) is injected only on SQS deletes and visibility changes: on a
    DynamoDB claim it would make a bad input's first attempt look lost and its verdict land on
    attempt 2, which the invariants below forbid (the JobStore tests cover lost DynamoDB answers).
    """
    get, jobs = "GetObject", ("UpdateItem", "PutItem", "GetItem")
    rules = [
        Rule("error", "s3", get, error=S3_SLOW_DOWN, probability=0.06),
        Rule("error", "s3", get, error=S3_INTERNAL_ERROR, probability=0.03),
        Rule("truncate", "s3", get, after_bytes=1000, probability=0.03),
        Rule("reset_response", "s3", get, after_bytes=5000, probability=0.02),
        Rule("latency", "s3", get, delay_s=0.5, probability=0.05),
        Rule("error", "s3", "PutObject", error=S3_INTERNAL_ERROR, probability=0.05),
        Rule("error", "sqs", "ReceiveMessage", error=SQS_THROTTLING, probability=0.05),
        Rule("error", "sqs", "ChangeMessageVisibility", error=SQS_UNAVAILABLE, probability=0.03),
        Rule("error_after", "sqs", "DeleteMessage", error=SQS_UNAVAILABLE, probability=0.05),
        Rule("error_after", "sqs", "ChangeMessageVisibility", probability=0.02),
        Rule("reset_request", "sqs", "ReceiveMessage", probability=0.02),
        Rule("latency", "dynamodb", None, delay_s=0.5, probability=0.03),
    ]
    for operation in jobs:
        rules.append(
            Rule("error", "dynamodb", operation, error=DYNAMODB_THROTTLING, probability=0.05)
        )
        rules.append(
            Rule("error", "dynamodb", operation, error=DYNAMODB_THROUGHPUT, probability=0.03)
        )
    return rules


def bad_inputs(tmp_path: Path) -> dict[Path, str]:
    """Uploads that must fail on their first attempt, with the reason each must get."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(1).randbytes(300_000))
    whole = clip(2, layout="moov-at-end").read_bytes()
    cut = tmp_path / "cut-short.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    return {garbage: "not_a_video", cut: "truncated"}


async def all_settled(fleet: Fleet, jobs: list[Submitted]) -> bool:
    records = [await fleet.record(j) for j in jobs]
    return all(r.get("status") in TERMINAL for r in records)


async def rendition_is_valid(fleet: Fleet, key: str, tmp_path: Path) -> bool:
    local = tmp_path / key.replace("/", "_")
    answer = await fleet.clients.s3.get_object(Bucket=fleet.settings.bucket, Key=key)
    async with answer["Body"] as body:
        local.write_bytes(await body.read())
    media = probe.parse(await probe.run(str(local), timeout_s=30), size_bytes=local.stat().st_size)
    return media.duration_s > 0.5 and media.video_codec == "h264"


def start_sick_worker(
    fleet: Fleet, stack: contextlib.AsyncExitStack, tmp_path: Path
) -> WorkerProcess | None:
    """A third worker whose scratch is a nearly full disk (None where tmpfs cannot be mounted)."""
    try:
        disk = stack.enter_context(nearly_full_tmpfs(tmp_path / "sick-disk"))
    except PermissionError:
        return None
    return fleet.start(
        "sick",
        scratch_dir=disk / "scratch",
        extra_env={
            "TRANSCODER_SCRATCH_RESERVE_BYTES": str(128 * 1024),
            "TRANSCODER_UNFIT_EXIT_AFTER_S": "5",
        },
    )


# Over 40 lines: one scenario, its faults, its kill and every invariant the issue lists, in order.
async def test_soak_through_the_fault_proxy_loses_no_good_upload(
    settings: Settings, clients: Clients, tmp_path: Path, aws_endpoint: str
) -> None:
    rng = random.Random(BROWNOUT_SEED)
    bad = bad_inputs(tmp_path)
    async with (
        FaultProxy(aws_endpoint, seed=BROWNOUT_SEED) as proxy,
        Fleet.open(settings, clients, tmp_path, endpoint_url=proxy.url) as fleet,
        contextlib.AsyncExitStack() as stack,
    ):
        sick = start_sick_worker(fleet, stack, tmp_path)
        layouts = ["faststart", "moov-at-end"]
        valid = [
            clip(rng.choice([1, 2]), layout=rng.choice(layouts)) for _ in range(BROWNOUT_VALID)
        ]
        jobs = await fleet.submit(*valid, user="brownout")
        wrong = await fleet.submit(*bad, user="brownout-bad")
        slots = [fleet.start(f"b{i}") for i in range(BROWNOUT_WORKERS)]
        for worker in slots:
            await worker.wait_for("worker.started")
        for rule in brownout_rules():
            rule.probability = min(1.0, rule.probability * BROWNOUT_RATE)
            proxy.add(rule)
        started, killed = time.monotonic(), list[str]()
        while time.monotonic() - started < BROWNOUT_FAULT_S:
            busy = [w for w in slots if w.ffmpeg()]
            due = time.monotonic() - started > 4.0 * (1 + 2 * len(killed))  # at 4 s, then 12 s
            if busy and len(killed) < BROWNOUT_KILLS and due:
                busy[0].kill()
                await busy[0].wait_exit(5)
                killed.append(busy[0].name)
                slots[slots.index(busy[0])] = fleet.start(f"b-r{len(killed)}")
            if await all_settled(fleet, jobs + wrong):
                break
            await asyncio.sleep(0.5)
        proxy.clear()  # the region recovers; what is still pending must now settle

        async def settled() -> bool:
            if (await fleet.dlq_depth()).visible:
                await fleet.run_dlq_handler()
            return await all_settled(fleet, jobs + wrong)

        await fleet.wait_until("every job settled", settled, 180)
        await fleet.wait_until("jobs queue drained", fleet.drained, 60)
        await fleet.stop_all()

        report = collections.Counter(f"{f}:{svc}" for f, svc, _ in proxy.injected.elements())
        fates = []
        for job in jobs:
            record = await fleet.record(job)
            outcomes = fleet.outcomes(record["job_id"])
            fates.append((record["status"], record["attempts"], tuple(outcomes)))
            assert record["status"] == "COMPLETED", (job.video_id, record, outcomes)
            assert outcomes.count("completed") == 1, (job.video_id, outcomes)
            (key,) = await fleet.outputs(job)  # 720p; 1080p would be an upscale
            assert await rendition_is_valid(fleet, key, tmp_path), key
        for job, reason in zip(wrong, bad.values(), strict=True):
            record = await fleet.record(job)
            fates.append(
                (record["status"], record["attempts"], tuple(fleet.outcomes(record["job_id"])))
            )
            assert (record["status"], record["attempts"]) == ("FAILED", 1), record
            assert record["error"]["code"] == reason, record
        for letter in await fleet.dead_letters():
            body = json.loads(letter["Body"])
            dead = await fleet.store.get(body["user_id"], body["video_id"])
            assert dead is not None and dead.status == "FAILED", letter
        assert sorted(str(p) for p in fleet.settings.scratch_dir.rglob("*")) == []
        for worker in fleet.workers:
            assert "Traceback" not in worker.log_path.read_text(), worker.tail()
        if sick is not None and sick.events("job.claimed"):  # it found no room, handed the job
            assert sick.events("worker.unfit"), sick.tail()  # back and retired
            assert sick.popen.returncode == EXIT_UNFIT, sick.tail()
        print(
            f"brownout soak seed {BROWNOUT_SEED}: injected {dict(report)} "
            f"({sum(report.values())} of {sum(proxy.seen.values())} requests); killed {killed}; "
            f"fates {collections.Counter(fates)}; {time.monotonic() - started:.0f} s"
        )
