"""The cron module on one engine, driven by a fake clock: payloads, ticks, refusals, and the skipping policies."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from iii.modules.api import MetricSample
from iii.modules.cron import CronModule, CronSettings, SystemClock
from tests.modules.cron.conftest import START, StartCron
from tests.modules.cron.fake_clock import FakeClock
from tests.modules.inbox import Inbox
from tests.modules.local_host import LocalHost

EVERY_SECOND = "* * * * * *"


def seconds(n: float) -> datetime:
    return START + timedelta(seconds=n)


def _metric(samples: list[MetricSample], name: str, function_id: str) -> float:
    values = [s.value for s in samples if s.name == name and s.labels.get("function_id") == function_id]
    assert len(values) == 1, f"{name}{{function_id={function_id}}}: {values}"
    return values[0]


async def _tick(clock: FakeClock, module: CronModule, moment: datetime, schedulers: int = 1) -> None:
    """Move the clock to ``moment`` and wait until the schedulers are done with it and its fires have ended."""
    clock.set(moment)
    await clock.wait_for_sleepers(schedulers)
    await module.wait_idle()


async def test_each_tick_calls_the_function_with_the_references_payload(
    start_cron: StartCron, clock: FakeClock
) -> None:
    module, host = await start_cron()
    inbox = Inbox()
    host.serve("jobs::tick", inbox)
    binding, refusal = host.bind("cron", "jobs::tick", {"expression": EVERY_SECOND})
    assert refusal is None
    assert await clock.wait_for_sleepers(1) == [seconds(1)]

    await _tick(clock, module, seconds(1))
    await _tick(clock, module, seconds(2))

    assert inbox.received == [
        {
            "trigger": "cron",
            "job_id": binding.binding_id,
            "scheduled_time": "2030-01-01T00:00:01+00:00",
            "actual_time": "2030-01-01T00:00:01+00:00",
        },
        {
            "trigger": "cron",
            "job_id": binding.binding_id,
            "scheduled_time": "2030-01-01T00:00:02+00:00",
            "actual_time": "2030-01-01T00:00:02+00:00",
        },
    ]
    assert _metric(list(module.metrics()), "cron_fires", "jobs::tick") == 2


async def test_next_and_last_runs_are_visible(start_cron: StartCron, clock: FakeClock) -> None:
    module, host = await start_cron()
    host.serve("report", Inbox())
    binding, _ = host.bind("cron", "report", {"expression": "0 */15 * * * *"})
    assert module.next_fire(binding.binding_id) == START + timedelta(minutes=15)
    await clock.wait_for_sleepers(1)

    await _tick(clock, module, START + timedelta(minutes=15))

    assert module.next_fire(binding.binding_id) == START + timedelta(minutes=30)
    (job,) = module.snapshot()["jobs"]
    assert job == {
        "binding_id": binding.binding_id,
        "function_id": "report",
        "expression": "0 */15 * * * *",
        "job_key": job["job_key"],
        "next_run": "2030-01-01T00:30:00+00:00",
        "last_run": "2030-01-01T00:15:00+00:00",
        "last_outcome": "ok",
        "last_error": None,
        "fires": 1,
        "failures": 0,
        "missed": 0,
    }
    assert module.snapshot()["backend"] == "local"
    assert module.next_fire("no-such-binding") is None


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({}, "Cron expression is required"),
        ({"expression": ""}, "Cron expression is required"),
        ({"expression": 5}, "must be a string"),
        ({"expression": "* * * * *"}, "Invalid cron expression '* * * * *': expected 6 or 7 fields"),
        ({"expression": "0 0 0 * * 0"}, "days of week must be between 1 and 7"),
        ({"expression": "0 0 0 * * * 2029"}, "has no fire time after 2030-01-01T00:00:00+00:00"),
        ({"expression": EVERY_SECOND, "condition_function_id": 3}, "condition_function_id must be"),
    ],
)
async def test_a_bad_binding_is_refused_with_the_reason(
    start_cron: StartCron, config: dict[str, Any], reason: str
) -> None:
    module, host = await start_cron()
    _, refusal = host.bind("cron", "f", config)
    assert refusal is not None and reason in refusal
    assert module.snapshot()["jobs"] == []


async def test_a_failing_function_is_counted_and_shown(start_cron: StartCron, clock: FakeClock) -> None:
    module, host = await start_cron()

    def broken(data: Any) -> None:
        raise RuntimeError("disk full")

    host.serve("broken", broken)
    host.bind("cron", "broken", {"expression": EVERY_SECOND})
    host.bind("cron", "nobody", {"expression": EVERY_SECOND})  # a function no one serves
    await clock.wait_for_sleepers(2)

    await _tick(clock, module, seconds(1), schedulers=2)

    assert _metric(list(module.metrics()), "cron_failures", "broken") == 1
    assert _metric(list(module.metrics()), "cron_failures", "nobody") == 1
    rows = {row["function_id"]: row for row in module.snapshot()["jobs"]}
    assert rows["broken"]["last_outcome"] == "failed"
    assert "disk full" in rows["broken"]["last_error"]
    assert "function_not_found" in rows["nobody"]["last_error"]


async def test_a_condition_function_decides_whether_the_tick_runs(start_cron: StartCron, clock: FakeClock) -> None:
    module, host = await start_cron()
    verdicts: list[Any] = [False, True, None, {"any": "thing"}]
    asked: list[Any] = []

    def condition(data: Any) -> Any:
        asked.append(data)
        return verdicts[len(asked) - 1]

    inbox = Inbox()
    host.serve("guard", condition)
    host.serve("job", inbox)
    binding, _ = host.bind("cron", "job", {"expression": EVERY_SECOND, "condition_function_id": "guard"})
    await clock.wait_for_sleepers(1)

    for n in range(1, 5):
        await _tick(clock, module, seconds(n))

    assert [payload["scheduled_time"] for payload in inbox.received] == [
        "2030-01-01T00:00:02+00:00",
        "2030-01-01T00:00:03+00:00",
        "2030-01-01T00:00:04+00:00",
    ]
    assert asked[0] == {
        "trigger": "cron",
        "job_id": binding.binding_id,
        "scheduled_time": "2030-01-01T00:00:01+00:00",
        "actual_time": "2030-01-01T00:00:01+00:00",
    }


async def test_a_failing_condition_skips_the_tick_as_a_failure(start_cron: StartCron, clock: FakeClock) -> None:
    module, host = await start_cron()
    inbox = Inbox()
    host.serve("job", inbox)
    host.bind("cron", "job", {"expression": EVERY_SECOND, "condition_function_id": "missing"})
    await clock.wait_for_sleepers(1)

    await _tick(clock, module, seconds(1))

    assert inbox.received == []
    assert module.snapshot()["jobs"][0]["last_outcome"] == "condition_failed"
    assert _metric(list(module.metrics()), "cron_failures", "job") == 1


async def test_a_late_wake_up_fires_once_and_skips_the_ticks_that_passed(
    start_cron: StartCron, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    module, host = await start_cron()
    inbox = Inbox()
    host.serve("job", inbox)
    host.bind("cron", "job", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(1)

    with caplog.at_level(logging.WARNING, logger="iii.modules.cron"):
        await _tick(clock, module, seconds(10.25))

    assert [(p["scheduled_time"], p["actual_time"]) for p in inbox.received] == [
        ("2030-01-01T00:00:01+00:00", "2030-01-01T00:00:10.250000+00:00")
    ]
    assert clock.waiting() == [seconds(11)]
    assert _metric(list(module.metrics()), "cron_missed", "job") == 9
    assert any("skips 9 tick(s)" in record.getMessage() for record in caplog.records)


async def test_a_tick_during_a_running_fire_is_skipped(start_cron: StartCron, clock: FakeClock) -> None:
    module, host = await start_cron()
    release = asyncio.Event()
    started: list[str] = []

    async def slow(data: Any) -> None:
        started.append(data["scheduled_time"])
        await release.wait()

    host.serve("slow", slow)
    host.bind("cron", "slow", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(1)
    clock.set(seconds(1))
    await clock.wait_for_sleepers(1)

    clock.set(seconds(2))  # the first fire still runs
    await clock.wait_for_sleepers(1)
    assert module.snapshot()["jobs"][0]["last_outcome"] == "busy"
    release.set()
    await module.wait_idle()
    await _tick(clock, module, seconds(3))

    assert started == ["2030-01-01T00:00:01+00:00", "2030-01-01T00:00:03+00:00"]
    assert _metric(list(module.metrics()), "cron_missed", "slow") == 1


async def test_bindings_of_one_job_fire_once_per_tick_and_other_jobs_on_their_own(
    start_cron: StartCron, clock: FakeClock
) -> None:
    module, host = await start_cron()
    inbox, other = Inbox(), Inbox()
    host.serve("job", inbox)
    host.serve("other", other)
    host.bind("cron", "job", {"expression": EVERY_SECOND}, worker_id="replica-1")
    host.bind("cron", "job", {"expression": " *  * * * * *"}, worker_id="replica-2")  # the same schedule
    host.bind("cron", "job", {"expression": "*/2 * * * * *"})  # another job
    host.bind("cron", "other", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(4)

    for n in range(1, 5):
        await _tick(clock, module, seconds(n), schedulers=4)

    assert [p["scheduled_time"][17:19] for p in inbox.received] == ["01", "02", "02", "03", "04", "04"]
    assert len(other.received) == 4
    outcomes = sorted(str(row["last_outcome"]) for row in module.snapshot()["jobs"])
    assert outcomes == ["fired_elsewhere", "ok", "ok", "ok"]


async def test_an_unbound_job_fires_no_more(start_cron: StartCron, clock: FakeClock) -> None:
    module, host = await start_cron()
    inbox = Inbox()
    host.serve("job", inbox)
    binding, _ = host.bind("cron", "job", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(1)
    await _tick(clock, module, seconds(1))

    host.unbind(binding)
    clock.set(seconds(5))
    await module.wait_idle()

    assert len(inbox.received) == 1
    assert clock.waiting() == []
    assert module.next_fire(binding.binding_id) is None
    assert module.snapshot()["jobs"] == []
    assert _metric(list(module.metrics()), "cron_fires", "job") == 1, "counters outlive the binding"


async def test_rebinding_a_job_reports_the_ticks_no_one_ran(
    start_cron: StartCron, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    module, host = await start_cron()
    host.serve("job", Inbox())
    binding, _ = host.bind("cron", "job", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(1)
    await _tick(clock, module, seconds(1))
    host.unbind(binding)
    clock.set(seconds(6.5))

    with caplog.at_level(logging.INFO, logger="iii.modules.cron"):
        host.bind("cron", "job", {"expression": EVERY_SECOND})
        assert await clock.wait_for_sleepers(1) == [seconds(7)]

    assert any("5 tick(s) since then were not run" in record.getMessage() for record in caplog.records)
    assert _metric(list(module.metrics()), "cron_missed", "job") == 5


async def test_stop_ends_every_scheduler(clock: FakeClock) -> None:
    module = CronModule(clock=clock)
    host = LocalHost()
    await module.start(host)
    host.serve("job", Inbox())
    host.bind("cron", "job", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(1)

    await module.stop()

    assert clock.waiting() == []


async def test_the_real_clock_fires_every_second() -> None:
    module = CronModule(CronSettings())
    host = LocalHost()
    await module.start(host)
    try:
        assert isinstance(module.clock, SystemClock)
        inbox = Inbox()
        host.serve("job", inbox)
        host.bind("cron", "job", {"expression": EVERY_SECOND})
        first, second = await inbox.wait(2, timeout_s=5)
    finally:
        await module.stop()
    scheduled = [datetime.fromisoformat(p["scheduled_time"]) for p in (first, second)]
    assert scheduled[1] - scheduled[0] == timedelta(seconds=1)
    assert all(moment.microsecond == 0 for moment in scheduled)
    for payload in (first, second):
        assert datetime.fromisoformat(payload["actual_time"]) >= datetime.fromisoformat(payload["scheduled_time"])
