"""``/console`` and ``/console/state`` over plain HTTP, and the page's ``/console/query`` socket: content, bounds,
bad questions, and the token (header or ?token=)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from iii.engine import Engine
from tests.console.bulk import fill_stream_group
from tests.engine.wire import RawWorker

StartEngine = Callable[..., Awaitable[Engine]]


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_the_state_lists_workers_functions_channels_and_never_keys(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send({"type": "registerfunction", "id": "state.fn", "description": "shown"})
    refs = await worker.result_of("engine::channels::create", {})
    base = f"http://127.0.0.1:{live_engine.port}"
    status, content_type, body = await get(f"{base}/console")
    assert status == 200 and content_type.startswith("text/html") and b"iii console" in body
    status, content_type, body = await get(f"{base}/console/state")
    assert status == 200 and content_type == "application/json"
    text = body.decode()
    assert worker.worker_id in text and "state.fn" in text and refs["writer"]["channel_id"] in text
    assert refs["writer"]["access_key"] not in text and refs["reader"]["access_key"] not in text


async def test_with_a_token_the_console_needs_it(start_engine: StartEngine) -> None:
    engine = await start_engine(token="console-token")
    base = f"http://127.0.0.1:{engine.port}"
    assert (await get(f"{base}/console"))[0] == 401
    assert (await get(f"{base}/console/state"))[0] == 401
    assert (await get(f"{base}/console?token=wrong"))[0] == 401
    assert (await get(f"{base}/console?token=console-token"))[0] == 200
    assert (await get(f"{base}/console/state", {"Authorization": "Bearer console-token"}))[0] == 200


async def ask(socket: aiohttp.ClientWebSocketResponse, question: Any) -> Any:
    await socket.send_str(json.dumps(question))
    return json.loads(await socket.receive_str(timeout=10))


async def test_the_page_asks_the_stream_module_over_the_query_socket(start_engine: StartEngine) -> None:
    engine = await start_engine(http_port=-1, modules="state,stream")
    worker = await RawWorker.connect(engine.url)
    item = {"stream_name": "todos", "group_id": "alice", "item_id": "t1", "data": {"done": False}}
    await worker.result_of("stream::set", item)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{engine.port}/console/query") as ws:
        answer = await ask(ws, {"id": 1, "module": "stream", "query": {"stream_name": "todos", "group_id": "alice"}})
        assert answer["id"] == 1
        assert answer["result"]["streams"] == [{"id": "todos", "groups": [{"id": "alice", "items": 1}]}]
        assert answer["result"]["group"]["items"] == [{"id": "t1", "value": '{"done":false}', "truncated": False}]
        # Bad questions get their reason, and the socket goes on answering.
        assert await ask(ws, {"id": 2, "module": "stream", "query": {"stream_name": "todos"}}) == {
            "id": 2,
            "error": "`stream_name` and `group_id` go together, as strings",
        }
        assert await ask(ws, {"id": 3, "module": "pubsub", "query": {}}) == {
            "id": 3,
            "error": "module pubsub is not running",
        }
        assert await ask(ws, {"id": 4, "module": "state", "query": {}}) == {
            "id": 4,
            "error": "module state answers no console queries",
        }
        await ws.send_str("{not json")
        assert "not JSON" in json.loads(await ws.receive_str(timeout=10))["error"]
        assert (await ask(ws, {"id": 5, "module": "stream", "query": {}}))["result"]["group"] is None
        await ws.send_bytes(b"\x00")
        closed = await ws.receive(timeout=10)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1003


async def test_a_group_of_100000_items_is_answered_with_its_first_100(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    await fill_stream_group(tmp_path, "big", "all", 100_000)
    engine = await start_engine(http_port=-1, modules="stream", data_dir=str(tmp_path))
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{engine.port}/console/query") as ws:
        started = time.monotonic()
        answer = await ask(ws, {"id": 1, "module": "stream", "query": {"stream_name": "big", "group_id": "all"}})
        elapsed = time.monotonic() - started
    group = answer["result"]["group"]
    assert group["total"] == 100_000
    assert [item["id"] for item in group["items"]] == [f"i{index:06d}" for index in range(100)]
    assert answer["result"]["streams"] == [{"id": "big", "groups": [{"id": "all", "items": 100_000}]}]
    assert elapsed < 5, f"the answer took {elapsed:.2f} s"


async def test_with_a_token_the_query_socket_needs_it(start_engine: StartEngine) -> None:
    engine = await start_engine(token="console-token", http_port=-1, modules="stream")
    url = f"ws://127.0.0.1:{engine.port}/console/query"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 401
        async with http.ws_connect(f"{url}?token=console-token") as ws:
            assert (await ask(ws, {"id": 1, "module": "stream", "query": {}}))["result"]["streams"] == []
