"""Our SDK keeps observe.v1's loop guard working: a call made from a handler carries the handler's
``observe_depth`` and says which invocation it comes from, so an observer whose target calls the function it
observes stops after the engine's 8 hops instead of running forever."""

from __future__ import annotations

import time
from typing import Any

from iii import InitOptions, current_invocation, register_worker
from iii.testing import EngineProcess
from tests.observe_client import observing


def test_an_observer_loop_through_our_sdk_stops_at_the_engines_loop_guard(engine: EngineProcess) -> None:
    depths: list[int] = []
    callers: list[Any] = []
    with register_worker(engine.url, InitOptions(worker_name="loop-owner")) as client:

        def on_loop(envelope: dict[str, Any]) -> None:
            invocation = current_invocation()
            assert invocation is not None
            depths.append(invocation.observe_depth)
            client.trigger({"function_id": "loop.fn", "payload": envelope["input"] + 1})

        def loop_fn(n: int) -> int:
            invocation = current_invocation()
            callers.append(invocation.caller if invocation is not None else None)
            return n

        client.register_function("loop.fn", loop_fn)
        client.register_function("loop.on", on_loop)
        source = {"function_id": "loop.fn", "capture": ["input", "caller"]}
        with observing(engine.url, "loop-watcher", "loop-1", source, "loop.on"):
            client.trigger({"function_id": "loop.fn", "payload": 0})
            deadline = time.monotonic() + 10
            dropped = 0
            while dropped < 1 and time.monotonic() < deadline:
                info = client.trigger({"function_id": "engine::observers::get", "payload": {"id": "loop-1"}})
                dropped = info["observer"]["dropped"].get("LOOP_GUARD", 0)
            assert dropped == 1, depths
            info = client.trigger({"function_id": "engine::observers::get", "payload": {"id": "loop-1"}})
    assert depths == [1, 2, 3, 4, 5, 6, 7, 8]
    assert info["observer"]["fires"] == 8
    assert len(callers) == 9
