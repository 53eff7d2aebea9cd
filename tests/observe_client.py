"""A bare observe.v1 watcher for tests of what shows observers (the CLI, the console): a raw WebSocket that says it
speaks observe.v1 and creates one observer, as the official 0.25 SDK's ``iii.observe`` does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from websockets.sync.client import ClientConnection, connect


@contextmanager
def observing(url: str, name: str, observer_id: str, source: dict[str, Any], target: str) -> Iterator[ClientConnection]:
    """A connection named ``name`` holding an active observer of ``source`` calling ``target`` (the functions are
    registered by others, perhaps a moment later); the observer goes with the connection."""
    with connect(url, max_size=None) as watcher:
        assert json.loads(watcher.recv(timeout=10))["type"] == "workerregistered"
        payload = {"name": name, "features": ["observe.v1"]}
        watcher.send(
            json.dumps({"type": "invokefunction", "function_id": "engine::workers::register", "data": payload})
        )
        observe = {"type": "observe", "id": observer_id, "source": source, "target": {"function_id": target}}
        deadline = time.monotonic() + 10  # the functions may reach the engine after this connection's messages
        state = ""
        while state != "active" and time.monotonic() < deadline:
            watcher.send(json.dumps(observe))  # a replay answers the observer's current state
            while (answer := json.loads(watcher.recv(timeout=10)))["type"] != "observeresult":
                pass
            state = answer["state"]
        assert state == "active", answer
        yield watcher
