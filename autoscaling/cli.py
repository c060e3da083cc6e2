"""``transcoder autoscale sample`` (once) and ``transcoder autoscale run`` (every minute).

The same ``Sampler`` as the Lambda, configured from ``Settings`` (queue, table, region, endpoint,
``TRANSCODER_ECS_CLUSTER``/``TRANSCODER_ECS_SERVICE``, slots per task) plus the flags below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from autoscaling.policy import PolicyConfig
from autoscaling.sampler import Sample, Sampler, SamplerConfig, build_sampler
from transcoder.config import Settings

SAMPLE_ERRORS = (BotoCoreError, ClientError, RuntimeError)


def sampler_config(settings: Settings, args: argparse.Namespace) -> SamplerConfig:
    cluster = args.cluster or settings.ecs_cluster
    service = args.service or settings.ecs_service
    if not cluster or not service:
        raise ValueError(
            "set TRANSCODER_ECS_CLUSTER and TRANSCODER_ECS_SERVICE (or --cluster/--service)"
        )
    policy = PolicyConfig(
        jobs_per_task=settings.slots,
        acceptable_latency_s=args.latency,
        typical_job_s=args.job_seconds,
        min_tasks=args.min_tasks,
        max_tasks=args.max_tasks,
        quiet_period_s=args.quiet,
    )
    return SamplerConfig(
        queue=settings.queue,
        cluster=cluster,
        service=service,
        table=settings.table,
        direct=args.direct,
        namespace=args.namespace,
        max_gap_s=max(180.0, 3 * getattr(args, "interval", 60.0)),
        policy=policy,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
    )


def show(sample: Sample, as_json: bool) -> None:
    if as_json:
        print(json.dumps(sample.as_dict(), sort_keys=True), flush=True)
        return
    obs, decision = sample.observation, sample.decision
    print(
        f"visible={obs.visible} in_flight={obs.in_flight} delayed={obs.delayed} "
        f"running={obs.running} desired={obs.desired} empty_for={obs.empty_for_s:.0f}s -> "
        f"{decision.desired} ({decision.reason.value}{', applied' if sample.applied else ''})",
        flush=True,
    )


def prepare(settings: Settings, args: argparse.Namespace) -> Sampler | None:
    try:
        return build_sampler(sampler_config(settings, args))
    except ValueError as exc:
        print(f"autoscale: {exc}", file=sys.stderr)
        return None


async def run_sample(settings: Settings, args: argparse.Namespace) -> int:
    sampler = prepare(settings, args)
    if sampler is None:
        return 2
    try:
        sample = await asyncio.to_thread(sampler.sample)
    except SAMPLE_ERRORS as exc:
        print(f"autoscale: sample failed: {exc}", file=sys.stderr)
        return 1
    show(sample, args.json)
    return 0


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def run_loop(settings: Settings, args: argparse.Namespace) -> int:
    """Sample every ``--interval`` seconds until a signal (or ``--iterations`` samples)."""
    sampler = prepare(settings, args)
    if sampler is None:
        return 2
    stop, failures, done = asyncio.Event(), 0, 0
    with stop_on_signals(stop):
        while not stop.is_set() and (args.iterations == 0 or done < args.iterations):
            try:
                show(await asyncio.to_thread(sampler.sample), args.json)
            except SAMPLE_ERRORS as exc:  # a transient AWS error must not stop the scaler
                failures += 1
                print(f"autoscale: sample failed: {exc}", file=sys.stderr, flush=True)
            done += 1
            if args.iterations == 0 or done < args.iterations:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=args.interval)
    return 1 if failures and failures == done else 0


def add_policy_flags(parser: argparse.ArgumentParser) -> None:
    defaults = PolicyConfig()
    parser.add_argument("--cluster", help="ECS cluster (default: TRANSCODER_ECS_CLUSTER)")
    parser.add_argument("--service", help="ECS service (default: TRANSCODER_ECS_SERVICE)")
    parser.add_argument("--direct", action="store_true", help="set the service's desired count")
    parser.add_argument("--json", action="store_true", help="one JSON object per sample")
    parser.add_argument("--namespace", default="Transcoder", help="CloudWatch namespace")
    parser.add_argument("--min-tasks", type=int, default=defaults.min_tasks)
    parser.add_argument("--max-tasks", type=int, default=defaults.max_tasks)
    parser.add_argument(
        "--latency",
        type=float,
        default=defaults.acceptable_latency_s,
        help="acceptable queue wait, s",
    )
    parser.add_argument(
        "--job-seconds", type=float, default=defaults.typical_job_s, help="typical job duration, s"
    )
    parser.add_argument(
        "--quiet", type=float, default=defaults.quiet_period_s, help="empty seconds before zero"
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    autoscale = sub.add_parser(
        "autoscale",
        help="queue-depth scaling for the ECS service",
        description="Read the jobs queue's depth and the service's running tasks, decide the "
        "fleet size (docs/scaling.md), publish it as CloudWatch metrics and, with --direct, set "
        "the service's desired count. `sample` does it once; `run` every --interval seconds.",
    )
    commands = autoscale.add_subparsers(dest="autoscale_command", required=True)
    once = commands.add_parser("sample", help="sample once: read, decide, publish (and scale)")
    add_policy_flags(once)
    once.set_defaults(run=run_sample)
    loop = commands.add_parser("run", help="sample every --interval seconds until SIGTERM")
    add_policy_flags(loop)
    loop.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    loop.add_argument("--iterations", type=int, default=0, help="stop after N samples (0: never)")
    loop.set_defaults(run=run_loop)
