"""The scaling policy: worked examples by equality, then its invariants as properties."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaling.policy import Decision, Observation, PolicyConfig, Reason, decide

CONFIG = PolicyConfig(
    jobs_per_task=1,
    acceptable_latency_s=300,
    typical_job_s=400,
    min_tasks=0,
    max_tasks=10,
    quiet_period_s=300,
)


def obs(**changes: float) -> Observation:
    base = Observation(
        visible=0, in_flight=0, delayed=0, running=0, desired=0, busy=0, empty_for_s=0.0
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_one_visible_message_wakes_the_fleet_from_zero() -> None:
    assert decide(obs(visible=1), CONFIG) == Decision(desired=1, floor=0, reason=Reason.WAKE)


def test_an_idle_fleet_at_zero_stays_at_zero() -> None:
    assert decide(obs(empty_for_s=0), CONFIG) == Decision(0, 0, Reason.TO_ZERO)


def test_retries_in_backoff_do_not_wake_the_fleet() -> None:
    assert decide(obs(in_flight=2), CONFIG).desired == 0


def test_delayed_messages_keep_one_warm_task_but_do_not_wake() -> None:
    assert decide(obs(delayed=3), CONFIG).desired == 0
    assert decide(obs(delayed=3, running=4, desired=4), CONFIG).desired == 1


def test_scales_out_on_visible_plus_in_flight() -> None:
    # latency 300 < job 400: no message may wait behind a busy task, one task per message.
    decision = decide(obs(visible=3, in_flight=2, running=2, desired=2, busy=2), CONFIG)
    assert decision == Decision(desired=5, floor=2, reason=Reason.SCALE_OUT)


def test_longer_latency_lets_messages_wait_behind_busy_tasks() -> None:
    patient = dataclasses.replace(CONFIG, acceptable_latency_s=900)  # 2 may wait per slot
    assert patient.messages_per_task == 3
    assert decide(obs(visible=7, in_flight=2, running=2, desired=2), patient).desired == 3


def test_slots_per_task_divide_the_work() -> None:
    four_slots = dataclasses.replace(CONFIG, jobs_per_task=4)
    assert decide(obs(visible=9), four_slots).desired == 3


def test_capped_at_max_tasks() -> None:
    assert decide(obs(visible=500, running=3, desired=3), CONFIG).desired == 10


def test_scale_in_releases_idle_tasks_but_not_busy_ones() -> None:
    decision = decide(obs(in_flight=3, running=8, desired=8, busy=3), CONFIG)
    assert decision == Decision(desired=3, floor=3, reason=Reason.SCALE_IN)


def test_in_flight_messages_count_as_busy_tasks() -> None:
    # The sampler may not know busy tasks; in-flight messages are each held by a task.
    assert decide(obs(in_flight=4, running=6, desired=6, busy=0), CONFIG).desired == 4


def test_busy_floor_wins_over_a_lowered_max() -> None:
    decision = decide(obs(in_flight=12, running=12, desired=12, busy=12), CONFIG)
    assert decision == Decision(desired=12, floor=12, reason=Reason.BUSY_FLOOR)


def test_quiet_period_keeps_one_warm_task_then_reaches_zero() -> None:
    during = decide(obs(running=5, desired=5, empty_for_s=299), CONFIG)
    after = decide(obs(running=1, desired=1, empty_for_s=300), CONFIG)
    assert during == Decision(desired=1, floor=0, reason=Reason.QUIET)
    assert after == Decision(desired=0, floor=0, reason=Reason.TO_ZERO)


def test_min_tasks_is_respected() -> None:
    warm = dataclasses.replace(CONFIG, min_tasks=2)
    assert decide(obs(running=2, desired=2, empty_for_s=10_000), warm).desired == 2


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="min_tasks"):
        PolicyConfig(min_tasks=5, max_tasks=2)
    with pytest.raises(ValueError, match="jobs_per_task"):
        PolicyConfig(jobs_per_task=0)


# --- properties -----------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=200)
configs = st.builds(
    PolicyConfig,
    jobs_per_task=st.integers(1, 8),
    acceptable_latency_s=st.floats(0, 7200),
    typical_job_s=st.floats(1, 7200),
    min_tasks=st.integers(0, 3),
    max_tasks=st.integers(3, 100),
    quiet_period_s=st.floats(0, 3600),
)


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    running = draw(counts)
    return Observation(
        visible=draw(counts),
        in_flight=draw(counts),
        delayed=draw(st.integers(0, 20)),
        running=running,
        desired=draw(counts),
        busy=draw(st.integers(0, running)),
        empty_for_s=draw(st.floats(0, 10_000)),
    )


@given(observations(), configs)
def test_never_below_busy_or_in_flight_tasks(o: Observation, config: PolicyConfig) -> None:
    desired = decide(o, config).desired
    assert desired >= o.busy
    assert desired >= min(o.in_flight, o.running)


@given(observations(), configs)
def test_never_above_max_unless_busy_tasks_demand_it(o: Observation, config: PolicyConfig) -> None:
    desired = decide(o, config).desired
    assert desired <= max(config.max_tasks, o.busy, min(o.in_flight, o.running))


@given(observations(), configs)
def test_any_visible_message_means_at_least_one_task(o: Observation, config: PolicyConfig) -> None:
    if o.visible > 0:
        assert decide(o, config).desired >= 1


@given(observations(), configs)
def test_zero_only_after_the_quiet_period(o: Observation, config: PolicyConfig) -> None:
    if decide(o, config).desired == 0 and (o.running > 0 or o.desired > 0):
        assert o.visible == 0
        assert o.in_flight == 0
        assert o.delayed == 0
        assert o.empty_for_s >= config.quiet_period_s


@settings(max_examples=300)
@given(observations(), configs, st.integers(1, 50), st.integers(0, 50))
def test_monotone_in_backlog(
    o: Observation, config: PolicyConfig, more_visible: int, more_in_flight: int
) -> None:
    bigger = dataclasses.replace(
        o, visible=o.visible + more_visible, in_flight=o.in_flight + more_in_flight
    )
    # more work resets the empty clock, exactly as the sampler does
    bigger = dataclasses.replace(bigger, empty_for_s=0.0)
    assert decide(bigger, config).desired >= decide(o, config).desired


@given(observations(), configs)
def test_decision_is_a_function_of_its_inputs(o: Observation, config: PolicyConfig) -> None:
    assert decide(o, config) == decide(o, config)
