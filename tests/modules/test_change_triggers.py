"""How the state and stream trigger types deliver changes: in order per function, and with bounded waiting."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iii.modules.change_triggers import ChangeDeliveries
from tests.modules.local_host import LocalHost

log = logging.getLogger("tests.change_triggers")


async def test_a_function_that_does_not_answer_has_at_most_max_waiting_changes_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Proves the changes waiting for one function are bounded: past ``max_waiting`` (the one in flight
    included) a change is dropped for that function, counted and logged once, while the other functions get
    it; once the function answers, it gets the changes it kept, in order, and new ones again."""
    host = LocalHost()
    release = asyncio.Event()
    stuck_heard: list[Any] = []
    other_heard: asyncio.Queue[Any] = asyncio.Queue()

    async def stuck(change: Any) -> dict[str, Any]:
        stuck_heard.append(change)
        await release.wait()
        return {}

    def other(change: Any) -> dict[str, Any]:
        other_heard.put_nowait(change)
        return {}

    host.serve("stuck", stuck)
    host.serve("other", other)
    deliveries = ChangeDeliveries(host, "stream", log, max_waiting=3)

    with caplog.at_level(logging.WARNING, logger=log.name):
        for n in range(6):
            deliveries.deliver([("stuck", None), ("other", None)], n, f"change {n}")
            # The other function gets each change at once, whatever the stuck one does.
            assert await asyncio.wait_for(other_heard.get(), 10) == n
        assert stuck_heard == [0]
        assert deliveries.dropped == 3
        [warning] = [record.getMessage() for record in caplog.records]
        assert "stuck has 3 changes waiting" in warning

        release.set()
        await deliveries.settle()
        assert stuck_heard == [0, 1, 2]
        deliveries.deliver([("stuck", None)], 6, "change 6")
        await deliveries.settle()
        assert stuck_heard == [0, 1, 2, 6]
        assert (deliveries.delivered, deliveries.failed, deliveries.dropped) == (10, 0, 3)
