"""Cron on several engines sharing a real Redis: one fire per tick, whichever engine takes it."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from iii.modules.cron import CronModule, CronSettings
from iii.modules.cron.claims import ClaimError
from tests.modules.cron.conftest import START, StartCron
from tests.modules.cron.fake_clock import FakeClock
from tests.modules.inbox import Inbox
from tests.modules.local_host import LocalHost
from tests.redis_server import RedisServer

EVERY_SECOND = "* * * * * *"


async def test_engines_on_one_redis_fire_each_tick_of_a_job_once(
    start_cron: StartCron, clock: FakeClock, redis_server: RedisServer
) -> None:
    engines = [await start_cron(redis_url=redis_server.url) for _ in range(2)]
    inboxes = []
    for _, host in engines:
        inbox = Inbox()
        host.serve("reports::daily", inbox)
        _, refusal = host.bind("cron", "reports::daily", {"expression": EVERY_SECOND})
        assert refusal is None
        inboxes.append(inbox)
    await clock.wait_for_sleepers(2)

    for n in range(1, 7):
        clock.set(START + timedelta(seconds=n))
        await clock.wait_for_sleepers(2)
        for module, _ in engines:
            await module.wait_idle()

    fired = sorted(payload["scheduled_time"] for inbox in inboxes for payload in inbox.received)
    assert fired == [f"2030-01-01T00:00:0{n}+00:00" for n in range(1, 7)]
    fires = [sum(s.value for s in module.metrics() if s.name == "cron_fires") for module, _ in engines]
    assert sum(fires) == 6
    assert engines[0][0].snapshot()["backend"] == "redis"


async def test_different_jobs_on_one_redis_each_fire(
    start_cron: StartCron, clock: FakeClock, redis_server: RedisServer
) -> None:
    (first, first_host), (second, second_host) = [await start_cron(redis_url=redis_server.url) for _ in range(2)]
    a, b = Inbox(), Inbox()
    first_host.serve("a", a)
    second_host.serve("b", b)
    first_host.bind("cron", "a", {"expression": EVERY_SECOND})
    second_host.bind("cron", "b", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(2)

    clock.set(START + timedelta(seconds=1))
    await clock.wait_for_sleepers(2)
    await first.wait_idle()
    await second.wait_idle()

    assert len(a.received) == len(b.received) == 1


async def test_a_job_bound_on_another_engine_later_reports_the_ticks_no_one_ran(
    start_cron: StartCron, clock: FakeClock, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, first_host = await start_cron(redis_url=redis_server.url)
    first_host.serve("job", Inbox())
    first_host.bind("cron", "job", {"expression": EVERY_SECOND})
    await clock.wait_for_sleepers(1)
    clock.set(START + timedelta(seconds=1))
    await clock.wait_for_sleepers(1)
    await first.wait_idle()
    await first.stop()  # this engine goes down

    clock.set(START + timedelta(seconds=30.5))
    _, second_host = await start_cron(redis_url=redis_server.url)
    second_host.serve("job", Inbox())
    with caplog.at_level(logging.INFO, logger="iii.modules.cron"):
        second_host.bind("cron", "job", {"expression": EVERY_SECOND})
        await clock.wait_for_sleepers(1)

    assert any(
        "last fired at 2030-01-01T00:00:01+00:00; 29 tick(s) since then were not run" in record.getMessage()
        for record in caplog.records
    )


async def test_an_unreachable_redis_is_a_clear_error_at_start() -> None:
    with RedisServer() as server:
        url = server.url.replace("redis://", "redis://user:secret@")
    module = CronModule(CronSettings(redis_url=url))
    with pytest.raises(ClaimError) as raised:
        await module.start(LocalHost())
    assert "cannot reach Redis" in str(raised.value)
    assert "secret" not in str(raised.value)


async def test_a_tick_that_cannot_be_claimed_is_not_fired_and_is_logged(
    start_cron: StartCron, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer()
    server.start()
    try:
        module, host = await start_cron(redis_url=server.url)
        inbox = Inbox()
        host.serve("job", inbox)
        host.bind("cron", "job", {"expression": EVERY_SECOND})
        await clock.wait_for_sleepers(1)
    finally:
        server.stop()

    with caplog.at_level(logging.ERROR, logger="iii.modules.cron"):
        clock.set(START + timedelta(seconds=1))
        await clock.wait_for_sleepers(1)

    assert inbox.received == []
    assert module.snapshot()["jobs"][0]["last_outcome"] == "claim_failed"
    assert any("does not fire its tick" in record.getMessage() for record in caplog.records)
