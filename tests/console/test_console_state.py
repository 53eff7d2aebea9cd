"""``/console`` and ``/console/state`` over plain HTTP: content, and the token (header or ?token=)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from iii.engine import Engine
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
