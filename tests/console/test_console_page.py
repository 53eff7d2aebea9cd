"""The live console in a real browser: headless Chromium (Debian's) driven by Selenium.

A worker and a streaming channel are started; the page, left open, must show them without a reload, with
the channel's bytes growing; the other tests show each view (the Streams view with its live items and a
group of 100,000 items capped). A screenshot is saved as build/console.png (docs/console.png is a copy).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from iii import III, InitOptions, TriggerAction, register_worker
from iii.testing import EngineProcess
from tests.browser import require_browser, start_chrome
from tests.conftest import BUILD
from tests.console.bulk import fill_stream_group
from tests.observe_client import observing
from tests.redis_server import RedisServer

require_browser()

WAIT_S = 20


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = start_chrome()
    try:
        yield driver
    finally:
        driver.quit()


class Stream:
    """A channel with a writer and a reader moving data until stopped."""

    def __init__(self, client: III) -> None:
        self.channel = client.create_channel()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]
        for thread in self.threads:
            thread.start()

    def _write(self) -> None:
        block = b"c" * 65536
        while not self.stop.is_set():
            self.channel.writer.write(block)
        self.channel.writer.close()

    def _read(self) -> None:
        self.channel.reader.read_all()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


_TABLE_TEXT = (
    "return Array.from(document.querySelectorAll(arguments[0])).map(r => Array.from(r.cells, c => c.textContent))"
)


def _cells(driver: webdriver.Chrome, table: str) -> list[list[str]]:
    """The table's cell texts, read in one script run: the page redraws every second, so elements found one
    call earlier may already have been replaced."""
    rows: list[list[str]] = driver.execute_script(_TABLE_TEXT, f"#{table} tbody tr")
    return rows


def test_the_console_shows_workers_functions_and_live_channels(browser: webdriver.Chrome) -> None:
    with EngineProcess() as engine, register_worker(engine.url, InitOptions(worker_name="console-demo")) as worker:
        browser.get(engine.url.replace("ws://", "http://") + "/console")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: any("console-demo" in row for row in _cells(d, "workers")))
        worker.register_function({"id": "demo.resize", "description": "resizes images"}, lambda data: data)
        wait.until(lambda d: any(row[:1] == ["demo.resize"] for row in _cells(d, "functions")))
        stream = Stream(worker)
        try:
            channel_id = stream.channel.writer_ref.channel_id
            wait.until(lambda d: any(row[0] == channel_id and row[1] == "open" for row in _cells(d, "channels")))
            # Live: the page redraws by itself, and the channel's throughput column shows data moving.
            wait.until(lambda d: any(row[0] == channel_id and row[4][:3] != "0 B" for row in _cells(d, "channels")))
            BUILD.mkdir(exist_ok=True)
            assert browser.save_screenshot(str(BUILD / "console.png"))
            assert "live" in browser.find_element(By.ID, "status").text
        finally:
            stream.close()
        wait.until(lambda d: not any(row[0] == channel_id for row in _cells(d, "channels")))
    assert Path(BUILD / "console.png").stat().st_size > 10_000


def test_the_console_shows_state_topics_queues_and_cron_jobs(browser: webdriver.Chrome) -> None:
    """The modules' views: state scopes with their keys, subscribed topics with deliveries, queues with their
    deliveries, cron jobs with their next run, each with the backend it runs on."""
    with EngineProcess() as engine, register_worker(engine.url, InitOptions(worker_name="modules-demo")) as worker:
        worker.trigger({"function_id": "state::set", "payload": {"scope": "carts", "key": "alice", "value": [1, 2]}})
        worker.register_function("demo.on_news", lambda data: None)
        worker.register_function("demo.nightly", lambda data: None)
        worker.register_trigger({"type": "subscribe", "function_id": "demo.on_news", "config": {"topic": "news"}})
        worker.register_trigger(
            {"type": "cron", "function_id": "demo.nightly", "config": {"expression": "0 0 3 * * *"}}
        )
        browser.get(engine.url.replace("ws://", "http://") + "/console")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: ["carts", "1", "alice"] in _cells(d, "state"))
        wait.until(lambda d: any(row[:2] == ["news", "demo.on_news"] for row in _cells(d, "topics")))
        worker.trigger({"function_id": "publish", "payload": {"topic": "news", "data": {"n": 1}}})
        wait.until(lambda d: any(row[0] == "news" and row[2] == "1" for row in _cells(d, "topics")))
        enqueue = TriggerAction.Enqueue(queue="default")
        worker.trigger({"function_id": "demo.on_news", "payload": {"n": 2}, "action": enqueue})
        wait.until(lambda d: any(row[0] == "default" and row[3] == "1" for row in _cells(d, "queues")))
        assert "sqlite" in browser.find_element(By.ID, "queue-backend").text
        wait.until(
            lambda d: any(
                row[:2] == ["demo.nightly", "0 0 3 * * *"] and row[2].endswith("T03:00:00+00:00")
                for row in _cells(d, "cron")
            )
        )
        http_route = {"api_path": "carts/:id", "http_method": "GET"}
        worker.register_trigger({"type": "http", "function_id": "demo.nightly", "config": http_route})
        wait.until(lambda d: ["GET", "/carts/:id", "demo.nightly", ""] in _cells(d, "routes"))
        assert engine.http_url in browser.find_element(By.ID, "http-backend").text
        assert "sqlite" in browser.find_element(By.ID, "state-backend").text
        assert "local" in browser.find_element(By.ID, "pubsub-backend").text


def test_the_console_shows_observers_with_their_state_and_fires(browser: webdriver.Chrome) -> None:
    source = {"function_id": "demo.charge", "filters": {"input.amount": {"$gte": 500}}}
    with EngineProcess() as engine, register_worker(engine.url, InitOptions(worker_name="observed-demo")) as worker:
        worker.register_function("demo.charge", lambda data: {"charged": data["amount"]})
        worker.register_function("demo.on_big_charge", lambda data: None)
        with observing(engine.url, "audit", "obs-1", source, "demo.on_big_charge"):
            browser.get(engine.url.replace("ws://", "http://") + "/console")
            wait = WebDriverWait(browser, WAIT_S)
            wait.until(
                lambda d: any(
                    row[:4] == ["demo.charge", "demo.on_big_charge", "audit", "active"]
                    for row in _cells(d, "observers")
                )
            )
            worker.trigger({"function_id": "demo.charge", "payload": {"amount": 750}})
            wait.until(lambda d: any(row[0] == "demo.charge" and row[5] == "1" for row in _cells(d, "observers")))
            [row] = _cells(browser, "observers")
            assert "$gte" in row[4]


def test_the_console_shows_the_rbac_listener_with_its_rules_and_admissions(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    config = tmp_path / "engine.toml"
    config.write_text("[rbac]\nexpose_functions = ['match(\"api::*\")']\n")
    with (
        EngineProcess(["--config", str(config), "--rbac-port", "0"]) as engine,
        register_worker(engine.rbac_url, InitOptions(worker_name="partner")) as partner,
    ):
        partner.register_function("api::ping", lambda data: "pong")
        browser.get(engine.url.replace("ws://", "http://") + "/console")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: ["workers admitted / refused / told to retry", "1 / 0 / 0"] in _cells(d, "rbac"))
        rows = {row[0]: row[1] for row in _cells(browser, "rbac")}
        assert rows["exposed functions"] == 'match("api::*")'
        assert rows["auth function"].startswith("none")
        assert engine.rbac_url in browser.find_element(By.ID, "rbac-backend").text


def test_the_console_shows_the_other_engines_of_a_cluster(browser: webdriver.Chrome, redis_server: RedisServer) -> None:
    with (
        EngineProcess(["--redis-url", redis_server.url]) as first,
        EngineProcess(["--redis-url", redis_server.url]) as second,
        register_worker(second.url, InitOptions(worker_name="far")) as far,
    ):
        far.register_function("far::ping", lambda data: "pong")
        browser.get(first.url.replace("ws://", "http://") + "/console")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: any(row[1:] == [second.url, "open", "1"] for row in _cells(d, "cluster")))
        assert f"at {first.url}" in browser.find_element(By.ID, "cluster-backend").text
        functions = {row[0]: row[1] for row in _cells(browser, "functions")}
        assert functions["far::ping"].endswith(f"at {second.url}")  # served by the other engine


_CLICK_GROUP = """
const row = Array.from(document.querySelectorAll('#streams tbody tr')).find(r => r.dataset.group === arguments[0]);
if (row) row.click();
return Boolean(row);
"""


def _click_group(driver: webdriver.Chrome, stream_name: str, group_id: str) -> bool:
    """Click the group's row (found and clicked in one script run: the rows are redrawn every second)."""
    clicked: bool = driver.execute_script(_CLICK_GROUP, json.dumps([stream_name, group_id], separators=(",", ":")))
    return clicked


def test_the_console_shows_streams_groups_and_items_live_and_caps_a_large_group(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(fill_stream_group(data_dir, "big", "all", 100_000))
    with (
        EngineProcess(["--modules", "state,stream", "--data-dir", str(data_dir)]) as engine,
        register_worker(engine.url, InitOptions(worker_name="streams-demo")) as worker,
    ):
        item = {"stream_name": "todos", "group_id": "alice", "item_id": "t1"}
        worker.trigger({"function_id": "stream::set", "payload": {**item, "data": {"done": False}}})
        browser.get(engine.url.replace("ws://", "http://") + "/console")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: ["todos", "alice", "1"] in _cells(d, "streams"))
        assert ["big", "all", "100000"] in _cells(browser, "streams")
        assert "sqlite" in browser.find_element(By.ID, "stream-backend").text
        browser.execute_script("window.notReloaded = true")
        wait.until(lambda d: _click_group(d, "todos", "alice"))
        wait.until(lambda d: _cells(d, "stream-items") == [["t1", '{"done":false}']])
        # Changes show up by themselves: an item changed, another added.
        worker.trigger({"function_id": "stream::set", "payload": {**item, "data": {"done": True}}})
        worker.trigger({"function_id": "stream::set", "payload": {**item, "item_id": "t2", "data": "milk"}})
        wait.until(lambda d: _cells(d, "stream-items") == [["t1", '{"done":true}'], ["t2", '"milk"']])
        wait.until(lambda d: ["todos", "alice", "2"] in _cells(d, "streams"))
        wait.until(lambda d: ["stream::set", "3", "0", "0"] in _cells(d, "stream-ops"))
        assert browser.execute_script("return window.notReloaded") is True
        # The large group: its first 100 items, and a note saying how many there are.
        wait.until(lambda d: _click_group(d, "big", "all"))
        note = browser.find_element(By.ID, "stream-items-note")
        wait.until(lambda d: note.text == "big / all: showing 100 of 100000 items (the first by id)")
        rows = _cells(browser, "stream-items")
        assert len(rows) == 100 and rows[0] == ["i000000", '{"n":0}'] and rows[-1][0] == "i000099"
        assert "live" in browser.find_element(By.ID, "status").text
