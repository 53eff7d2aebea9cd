"""``GET /metrics``: Prometheus text with the engine's counters and live state, behind the token if one is set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from iii.engine import Engine
from iii.protocol.refs import channel_url
from tests.engine.wire import RawWorker, connect_raw, scrape

StartEngine = Callable[..., Awaitable[Engine]]


async def test_metrics_count_calls_channels_errors_and_http(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    await host.register("m.fn")
    caller = await RawWorker.connect(live_engine.url)
    for index in range(4):
        call_id = await caller.invoke("m.fn", {"i": index})
        delivery = await host.recv_type("invokefunction")
        reply = {"type": "invocationresult", "invocation_id": delivery["invocation_id"], "function_id": "m.fn"}
        if index == 3:
            reply["error"] = {"code": "invocation_failed", "message": "no"}
        await host.send(reply)
        assert (await caller.recv_type("invocationresult"))["invocation_id"] == call_id
    assert (await caller.call("m.missing"))["error"]["code"] == "function_not_found"
    await caller.send(b"\x00binary")
    await caller.recv_type("error")
    refs = await caller.result_of("engine::channels::create", {})
    writer = await connect_raw(channel_url(live_engine.url, **refs["writer"]))
    reader = await connect_raw(channel_url(live_engine.url, **refs["reader"]))
    await writer.send(b"x" * 100_000)
    await writer.close()
    assert [len(await reader.recv()), len(await reader.recv())] == [65536, 100_000 - 65536]  # readers get <= 64 KiB
    async with aiohttp.ClientSession() as http, http.get(f"{live_engine.http.url}/nothing") as response:  # type: ignore[union-attr]
        assert response.status == 404

    status, samples = await scrape(live_engine)
    assert status == 200
    assert samples[("iii_workers", "")] == 2
    assert samples[("iii_functions", "")] == 1
    assert samples[("iii_invocations_total", "outcome=ok")] == 3
    assert samples[("iii_invocations_total", "outcome=invocation_failed")] == 1
    assert samples[("iii_invocation_duration_seconds_count", "")] == 4
    assert samples[("iii_invocation_duration_seconds_bucket", "le=+Inf")] == 4
    assert samples[("iii_errors_total", "code=function_not_found")] == 1
    assert samples[("iii_errors_total", "code=invalid_message")] == 1
    assert samples[("iii_channels_created_total", "")] == 1
    assert samples[("iii_channel_bytes_relayed_total", "")] == 100_000
    assert samples[("iii_http_responses_total", "module=http,status=404")] == 1  # the http module's, labelled so
    assert samples[("iii_http_requests_in_progress", "module=http")] == 0
    assert ("iii_channel_backpressure_stalls_total", "") in samples


async def test_metrics_need_the_token_when_one_is_set(start_engine: StartEngine) -> None:
    engine = await start_engine(token="metrics-token")
    assert (await scrape(engine))[0] == 401
    assert (await scrape(engine, query="?token=wrong"))[0] == 401
    status, samples = await scrape(engine, {"Authorization": "Bearer metrics-token"})
    assert status == 200 and samples[("iii_workers", "")] == 0
    # A scraper that cannot send a header puts the token in the URL.
    status, samples = await scrape(engine, query="?token=metrics-token")
    assert status == 200 and samples[("iii_workers", "")] == 0
    # The same port still upgrades WebSockets.
    worker = await RawWorker.connect(engine.url, additional_headers={"Authorization": "Bearer metrics-token"})
    await worker.ping()


async def test_metrics_show_each_modules_samples(live_engine: Engine) -> None:
    caller = await RawWorker.connect(live_engine.url)
    for key in ("a", "b"):
        await caller.call("state::set", {"scope": "metrics-scope", "key": key, "value": 1})
    await caller.call("publish", {"topic": "t", "data": 1})
    _, samples = await scrape(live_engine)
    assert samples[("iii_state_sqlite_writes_total", "module=state")] >= 2
    assert samples[("iii_pubsub_published_total", "module=pubsub,topic=t")] == 1
    assert ("iii_cron_jobs", "module=cron") in samples
