"""The browser client ``iii-stream.js`` in headless Chromium, against a scripted stream port.

The port here is a small aiohttp server that plays the engine's part message by message, so the client's own
contracts are checked one by one, including what a real engine never sends: how messages reach group and item
subscriptions, that the views follow syncs and changes, that a message it does not understand is ignored with a
console.warn, and that after a dropped connection it reconnects and joins again, getting a fresh sync. Then the
same with a real engine that stops and starts again. The example page against a real engine is
``test_live_list_page.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket as sockets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import WSCloseCode, web
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from iii import register_worker
from iii.testing import EngineProcess
from tests.browser import require_browser, start_chrome
from tests.conftest import ROOT

require_browser()

WAIT_S = 20
CLIENT = ROOT / "src" / "iii" / "modules" / "streams" / "static" / "iii-stream.js"

# A page that keeps what console.warn is given, then loads the client from the port's /iii-stream.js.
PAGE = """<!doctype html><meta charset="utf-8"><title>client</title>
<script>
window.warnings = [];
const consoleWarn = console.warn;
console.warn = (...args) => { warnings.push(String(args[0])); consoleWarn(...args); };
</script>
<script src="/iii-stream.js"></script>
"""

# The client, with a group and an item subscription, logging what its handlers see (views as plain JSON).
SUBSCRIBE = """
window.log = [];
const client = iiiStream.connect();
window.client = client;
client.onStatus = (status, detail) => log.push(["status", status, detail.code ?? null, detail.wasOpen ?? null]);
window.group = client.subscribeGroup("todos", "inbox", {
  onChange: (view, message) => log.push(["group", message.event.type, Object.fromEntries(view.items)]),
  onEvent: (type, data) => log.push(["group-event", type, data]),
});
window.item = client.subscribeItem("todos", "inbox", "a", {
  onChange: (value, message) => log.push(["item", message.event.type, value]),
  onEvent: (type, data) => log.push(["item-event", type, data]),
});
return iiiStream.defaultUrl;
"""


class ScriptedPort:
    """The stream port's routes; each WebSocket connection and each message a client sends is queued."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()
        self.open: set[web.WebSocketResponse] = set()
        self.app = web.Application()
        self.app.router.add_get("/", self.socket)
        self.app.router.add_get("/page", self.page)
        self.app.router.add_get("/iii-stream.js", self.client)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def client(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(CLIENT)

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.open.add(socket)
        await self.connections.put(socket)
        async for message in socket:
            await self.received.put(json.loads(message.data))
        self.open.discard(socket)
        await self.ended.put(socket)
        return socket

    async def close(self) -> None:
        """Close the sockets still open (the server's cleanup would wait for them)."""
        for socket in list(self.open):
            await socket.close()

    async def next_connection(self) -> web.WebSocketResponse:
        return await asyncio.wait_for(self.connections.get(), WAIT_S)

    async def next_messages(self, count: int) -> list[dict[str, Any]]:
        return [await asyncio.wait_for(self.received.get(), WAIT_S) for _ in range(count)]


@pytest.fixture
async def port() -> AsyncIterator[tuple[ScriptedPort, str]]:
    scripted = ScriptedPort()
    runner = web.AppRunner(scripted.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, number = runner.addresses[0][:2]
    try:
        yield scripted, f"http://{host}:{number}"
    finally:
        await scripted.close()
        await runner.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = start_chrome()
    try:
        yield driver
    finally:
        driver.quit()


def stream(event: dict[str, Any], id: str | None = None) -> str:
    """An engine message of group todos/inbox."""
    return json.dumps(
        {"type": "stream", "timestamp": 1, "streamName": "todos", "groupId": "inbox", "id": id, "event": event}
    )


async def wait_for(driver: webdriver.Chrome, condition: Callable[[Any], Any], message: str) -> Any:
    return await asyncio.to_thread(WebDriverWait(driver, WAIT_S, poll_frequency=0.02).until, condition, message)


async def page_log(driver: webdriver.Chrome, count: int) -> list[Any]:
    """The page's log once it has at least ``count`` entries."""
    await wait_for(driver, lambda d: len(d.execute_script("return log")) >= count, f"fewer than {count} log entries")
    entries: list[Any] = await asyncio.to_thread(driver.execute_script, "return log")
    return entries


async def test_the_client_joins_applies_changes_and_routes_them_to_groups_and_items(
    port: tuple[ScriptedPort, str], browser: webdriver.Chrome
) -> None:
    scripted, base = port
    await asyncio.to_thread(browser.get, base + "/page")
    default_url = await asyncio.to_thread(browser.execute_script, SUBSCRIBE)
    assert default_url == base.replace("http://", "ws://") + "/"  # connect() with no URL: where the script came from
    socket = await scripted.next_connection()
    joins = await scripted.next_messages(2)
    assert [j["type"] for j in joins] == ["join", "join"]
    group_join, item_join = (j["data"] for j in joins)
    assert {k: v for k, v in group_join.items() if k != "subscriptionId"} == {"streamName": "todos", "groupId": "inbox"}
    assert {k: v for k, v in item_join.items() if k != "subscriptionId"} == {
        "streamName": "todos",
        "groupId": "inbox",
        "id": "a",
    }
    assert group_join["subscriptionId"] != item_join["subscriptionId"]

    a1, b1, b2 = {"id": "a", "n": 1}, {"id": "b", "n": 1}, {"id": "b", "n": 2}
    for message in [
        stream({"type": "sync", "data": [a1, b1]}),
        stream({"type": "sync", "data": a1}, id="a"),
        stream({"type": "update", "data": b2}, id="b"),  # not the item's
        stream({"type": "delete", "data": a1}, id="a"),
        stream({"type": "event", "event": {"type": "ping", "data": {"n": 1}}}),  # the group's, no id
        stream({"type": "event", "event": {"type": "poke", "data": None}}, id="a"),
        stream({"type": "create", "data": {"id": "c"}}, id="c"),
        stream({"type": "create", "data": {"id": "d"}}, id="d"),  # the last: it ends the log below
    ]:
        await socket.send_str(message)
    assert await page_log(browser, 12) == [
        ["status", "connecting", None, None],
        ["status", "open", None, None],
        ["group", "sync", {"a": a1, "b": b1}],
        ["item", "sync", a1],
        ["group", "update", {"a": a1, "b": b2}],
        ["group", "delete", {"b": b2}],
        ["item", "delete", None],
        ["group-event", "ping", {"n": 1}],
        ["group-event", "poke", None],
        ["item-event", "poke", None],
        ["group", "create", {"b": b2, "c": {"id": "c"}}],
        ["group", "create", {"b": b2, "c": {"id": "c"}, "d": {"id": "d"}}],
    ]
    assert await asyncio.to_thread(browser.execute_script, "return [group.synced, item.value]") == [True, None]


async def test_a_message_the_client_does_not_understand_is_ignored_with_a_warning(
    port: tuple[ScriptedPort, str], browser: webdriver.Chrome
) -> None:
    scripted, base = port
    await asyncio.to_thread(browser.get, base + "/page")
    await asyncio.to_thread(browser.execute_script, SUBSCRIBE)
    socket = await scripted.next_connection()
    await scripted.next_messages(2)
    for junk in [
        "not json {",
        json.dumps({"type": "welcome"}),
        stream({"type": "rename", "data": {}}, id="a"),
        stream({"type": "sync", "data": {"not": "a list"}}),
        stream({"type": "event", "event": {"data": 1}}),
    ]:
        await socket.send_str(junk)
    await socket.send_str(stream({"type": "sync", "data": [{"id": "a"}]}))  # still works after them
    log = await page_log(browser, 3)
    assert log[2:] == [["group", "sync", {"a": {"id": "a"}}]]
    warnings = await asyncio.to_thread(browser.execute_script, "return warnings")
    assert warnings == [
        "iii-stream: ignoring a message that is not JSON",
        "iii-stream: ignoring a message of unknown shape",
        "iii-stream: ignoring an event of unknown type rename",
        "iii-stream: ignoring a group sync whose data is not a list",
        "iii-stream: ignoring an event without a type",
    ]


async def test_after_a_dropped_connection_the_client_reconnects_joins_again_and_resyncs(
    port: tuple[ScriptedPort, str], browser: webdriver.Chrome
) -> None:
    scripted, base = port
    await asyncio.to_thread(browser.get, base + "/page")
    await asyncio.to_thread(browser.execute_script, SUBSCRIBE)
    first = await scripted.next_connection()
    joins = await scripted.next_messages(2)
    await first.send_str(stream({"type": "sync", "data": [{"id": "old"}]}))
    await page_log(browser, 3)
    # What the engine does to a subscriber too slow to keep up: close code 1013, try again later.
    await first.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"subscriber too slow: 1025 messages waiting")
    second = await scripted.next_connection()
    assert await scripted.next_messages(2) == joins  # the same subscriptions, joined again
    await second.send_str(stream({"type": "sync", "data": [{"id": "new"}]}))
    log = await page_log(browser, 7)
    assert log[3:] == [
        ["status", "closed", 1013, True],
        ["status", "connecting", None, None],
        ["status", "open", None, None],
        ["group", "sync", {"new": {"id": "new"}}],  # the fresh sync replaces what was held
    ]
    await asyncio.to_thread(browser.execute_script, "group.leave()")
    leave = (await scripted.next_messages(1))[0]
    assert leave == {"type": "leave", "data": joins[0]["data"]}
    await asyncio.to_thread(browser.execute_script, "client.close()")
    assert await asyncio.wait_for(scripted.ended.get(), WAIT_S) is first
    assert await asyncio.wait_for(scripted.ended.get(), WAIT_S) is second
    assert second.close_code == 1000
    assert (await page_log(browser, 8))[7:] == [["status", "closed", 1000, True]]


# Loads the client from the engine's stream port into the page (arguments[0]: its http:// address).
_LOAD = """
const [base, done] = [arguments[0], arguments[arguments.length - 1]];
const script = document.createElement("script");
script.src = base + "/iii-stream.js";
script.onload = () => done(typeof iiiStream);
script.onerror = () => done("failed");
document.head.appendChild(script);
"""


def _free_port() -> int:
    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_client_comes_back_when_a_real_engine_restarts(browser: webdriver.Chrome) -> None:
    """The engine stops (its subscribers get 1001) and another starts on the same stream port, with other data:
    the client reconnects by itself, joins again, and its view becomes the new engine's."""
    stream_port = str(_free_port())
    group = {"stream_name": "todos", "group_id": "inbox"}

    def put(engine: EngineProcess, item_id: str) -> None:
        with register_worker(engine.url) as client:
            client.trigger(
                {"function_id": "stream::set", "payload": {**group, "item_id": item_id, "data": {"id": item_id}}}
            )

    def view(driver: webdriver.Chrome) -> Any:
        return driver.execute_script("return Object.fromEntries(group.items)")

    with EngineProcess(["--stream-port", stream_port, "--http-port", "-1"]) as first:
        put(first, "before")
        base = first.stream_url.replace("ws://", "http://")
        browser.get(base + "/iii-stream.js")  # a page of the engine's origin (about:blank may not load from it)
        assert browser.execute_async_script(_LOAD, base) == "object"
        browser.execute_script(SUBSCRIBE.replace("iiiStream.connect()", f"iiiStream.connect({base!r})"))
        WebDriverWait(browser, WAIT_S).until(lambda d: view(d) == {"before": {"id": "before"}}, "no first sync")
    WebDriverWait(browser, WAIT_S).until(lambda d: ["status", "closed", 1001, True] in d.execute_script("return log"))
    with EngineProcess(["--stream-port", stream_port, "--http-port", "-1"]) as second:
        put(second, "after")
        WebDriverWait(browser, WAIT_S).until(lambda d: view(d) == {"after": {"id": "after"}}, "no sync after restart")
        statuses = [entry[1] for entry in browser.execute_script("return log") if entry[0] == "status"]
        assert statuses[:3] == ["connecting", "open", "closed"] and statuses[-1] == "open", statuses
        browser.execute_script("client.close()")
