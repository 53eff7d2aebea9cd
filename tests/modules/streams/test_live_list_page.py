"""``examples/live_list`` in headless Chromium: the page, its worker and a real engine, as a user runs them.

One engine for the module, with ``[stream] auth_function`` set: the test's own worker serves the auth function
(it admits a page whose address carries a known ``?token=``) and a ``stream:join`` binding (it refuses guests
the group), and calls ``stream::set`` / ``stream::send`` through our SDK. The example worker runs as a script,
as the README starts it. Two browsers (separate processes and profiles) open the page.
"""

from __future__ import annotations

import json
import queue
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from iii import III, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.browser import require_browser, start_chrome
from tests.conftest import ROOT
from tests.interop.processes import WorkerProcess, child_env

require_browser()

WAIT_S = 20
POLL_S = 0.01
STREAM = {"stream_name": "live_list", "group_id": "demo"}
TOKEN = "let-me-in"
GUEST_TOKEN = "guest"
USERS = {TOKEN: "tester", GUEST_TOKEN: "guest"}
LATENCY_LIMIT_MS = 200


@pytest.fixture(scope="module")
def live_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    config = tmp_path_factory.mktemp("live-list") / "engine.toml"
    config.write_text('[stream]\nauth_function = "live_list_test::auth"\n')
    with EngineProcess(["--config", str(config)]) as engine:
        assert engine.stream_url, engine.log_text()
        yield engine


class Admissions:
    """The test's worker: serves the stream port's auth function (recording the tokens it is asked about) and a
    ``stream:join`` binding, and changes the group."""

    def __init__(self, client: III) -> None:
        self.client = client
        self.tokens: queue.Queue[list[str]] = queue.Queue()
        client.register_function("live_list_test::auth", self.admit).wait_active(WAIT_S)
        client.register_function("live_list_test::join", self.join).wait_active(WAIT_S)
        client.register_trigger({"type": "stream:join", "function_id": "live_list_test::join", "config": {}})
        listing = client.trigger(
            {"function_id": "engine::registered-triggers::list", "payload": {"function_id": "live_list_test::join"}}
        )
        assert [t["status"] for t in listing["registered_triggers"]] == ["active"], listing

    def admit(self, request: dict[str, Any]) -> dict[str, Any]:
        tokens = list(request.get("query_params", {}).get("token", []))
        self.tokens.put(tokens)
        if len(tokens) != 1 or tokens[0] not in USERS:
            raise PermissionError("wrong or missing token")
        return {"context": {"user": USERS[tokens[0]]}}

    def join(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"unauthorized": request["context"]["user"] == "guest"}

    def wait_asked(self, token: str) -> None:
        """Return once the auth function has been asked about ``token``."""
        deadline = time.monotonic() + WAIT_S
        try:
            while [token] != self.tokens.get(timeout=max(0.0, deadline - time.monotonic())):
                pass
        except queue.Empty:
            raise AssertionError(f"the auth function was not asked about {token!r}") from None

    def call(self, function_id: str, **payload: Any) -> Any:
        return self.client.trigger({"function_id": function_id, "payload": {**STREAM, **payload}})

    def set(self, item_id: str, value: str) -> None:
        self.call("stream::set", item_id=item_id, data={"id": item_id, "label": item_id, "value": value})


@pytest.fixture(scope="module")
def admissions(live_engine: EngineProcess) -> Iterator[Admissions]:
    with register_worker(live_engine.url, InitOptions(worker_name="live-list-test")) as client:
        yield Admissions(client)


@pytest.fixture(scope="module")
def example(live_engine: EngineProcess, admissions: Admissions) -> Iterator[dict[str, Any]]:
    """``python examples/live_list/worker.py ENGINE_URL`` with ``III_STREAM_URL`` set, as a user runs it."""
    script = ROOT / "examples" / "live_list" / "worker.py"
    env = child_env(live_engine, {"III_STREAM_URL": live_engine.stream_url})
    process = WorkerProcess("live_list", [sys.executable, script, live_engine.url], cwd=ROOT, env=env).start()
    try:
        yield process.wait_ready(60)
    finally:
        if process.process is not None and process.process.poll() is None:
            process.process.terminate()  # as Ctrl-C: the example stops on SIGINT or SIGTERM
        assert process.stop() == 0, process.output()


def _browser() -> Iterator[webdriver.Chrome]:
    driver = start_chrome()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    yield from _browser()


@pytest.fixture(scope="module")
def other_browser() -> Iterator[webdriver.Chrome]:
    yield from _browser()


def page_url(engine: EngineProcess, token: str) -> str:
    return f"{engine.http_url}/?token={token}"


def open_page(driver: webdriver.Chrome, url: str, state: str = "open") -> None:
    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(lambda d: status(d)[0] == state, f"the page never showed {state}")


@pytest.fixture(scope="module")
def live_page(browser: webdriver.Chrome, live_engine: EngineProcess, example: dict[str, Any]) -> webdriver.Chrome:
    """The example's page, open and connected, in the first browser."""
    open_page(browser, page_url(live_engine, TOKEN))
    return browser


def status(driver: webdriver.Chrome) -> tuple[str, str]:
    shown: list[str] = driver.execute_script(
        "const s = document.getElementById('status'); return [s.dataset.status, s.textContent]"
    )
    return shown[0], shown[1]


def items(driver: webdriver.Chrome) -> dict[str, str]:
    """The list as the page shows it: item id -> the text of its value."""
    shown: dict[str, str] = driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#items li'),"
        " li => [li.dataset.id, li.querySelector('.value').textContent]))"
    )
    return shown


def last_event(driver: webdriver.Chrome) -> str:
    shown: str = driver.execute_script("return document.getElementById('last-event').textContent")
    return shown


# Records, in the page, the wall-clock time (Date.now(), the clock Python's time.time() reads) of the first DOM
# mutation after which item arguments[0] shows the value arguments[1] (null: the item is gone).
_WATCH = """
const [id, expected] = arguments;
window.seenAt = null;
const shows = () => {
  const row = document.querySelector('#items li[data-id="' + id + '"]');
  return (row ? row.querySelector('.value').textContent : null) === expected;
};
const observer = new MutationObserver(() => {
  if (shows()) { window.seenAt = Date.now(); observer.disconnect(); }
});
observer.observe(document.getElementById('items'), {childList: true, subtree: true, characterData: true});
return shows();
"""


def test_the_page_shows_the_workers_items_and_keeps_them_live(live_page: webdriver.Chrome) -> None:
    wait = WebDriverWait(live_page, WAIT_S)
    wait.until(lambda d: "clock" in items(d) and any(i.startswith("note-") for i in items(d)), "no items shown")
    clock = items(live_page)["clock"]
    assert len(clock) == 8 and clock.count(":") == 2, clock  # HH:MM:SS
    # The worker sets the clock every second: the page follows without a reload.
    wait.until(lambda d: items(d)["clock"] != clock, "the clock did not move")
    assert status(live_page) == ("open", "live")


def test_a_change_made_by_a_worker_shows_within_200_ms(live_page: webdriver.Chrome, admissions: Admissions) -> None:
    marker = uuid.uuid4().hex[:8]
    steps: list[tuple[str, str | None]] = [("set", f"{marker}-{n}") for n in range(5)] + [("delete", None)]
    latencies, from_start = [], []
    for operation, value in steps:
        assert live_page.execute_script(_WATCH, "probe", value) is False  # not shown before the call
        started = time.time()
        if value is None:
            admissions.call("stream::delete", item_id="probe")
        else:
            admissions.set("probe", value)
        returned = time.time()
        WebDriverWait(live_page, WAIT_S, poll_frequency=POLL_S).until(
            lambda d: d.execute_script("return window.seenAt") is not None, f"{operation} {value} never shown"
        )
        seen_ms: int = live_page.execute_script("return window.seenAt")
        assert seen_ms >= int(started * 1000), "shown before the call started: the watch is wrong"
        latencies.append(seen_ms - returned * 1000)
        from_start.append(seen_ms - started * 1000)
    print(f"\nstream::set/delete return -> DOM change: {', '.join(f'{ms:.1f}' for ms in latencies)} ms")
    print(f"stream::set/delete start -> DOM change: {', '.join(f'{ms:.1f}' for ms in from_start)} ms")
    assert max(latencies) < LATENCY_LIMIT_MS, latencies


def test_an_event_sent_to_the_group_shows(live_page: webdriver.Chrome, admissions: Admissions) -> None:
    data = {"probe": uuid.uuid4().hex}
    admissions.call("stream::send", type="probe-event", data=data)
    expected = "probe-event " + json.dumps(data, separators=(",", ":"))
    WebDriverWait(live_page, WAIT_S).until(lambda d: last_event(d).endswith(expected), "the event never showed")


def test_a_second_page_in_another_browser_sees_the_same(
    live_page: webdriver.Chrome, other_browser: webdriver.Chrome, live_engine: EngineProcess, admissions: Admissions
) -> None:
    open_page(other_browser, page_url(live_engine, TOKEN))
    value = uuid.uuid4().hex
    admissions.set("shared", value)
    for driver in (live_page, other_browser):
        WebDriverWait(driver, WAIT_S).until(lambda d: items(d).get("shared") == value, "the change never showed")
    # The whole list agrees (the clock ticks meanwhile: both follow it).
    WebDriverWait(live_page, WAIT_S).until(lambda d: items(d) == items(other_browser), "the pages differ")
    data = {"both": value}
    admissions.call("stream::send", type="to-both", data=data)
    expected = "to-both " + json.dumps(data, separators=(",", ":"))
    for driver in (live_page, other_browser):
        WebDriverWait(driver, WAIT_S).until(lambda d: last_event(d).endswith(expected), "the event never showed")
    admissions.call("stream::delete", item_id="shared")


def test_a_page_the_auth_function_refuses_sees_nothing(
    live_page: webdriver.Chrome, other_browser: webdriver.Chrome, live_engine: EngineProcess, admissions: Admissions
) -> None:
    open_page(other_browser, page_url(live_engine, "wrong"), state="refused")
    admissions.wait_asked("wrong")  # refused by the auth function, not by anything else
    # It keeps retrying (connecting for a moment each time): the refusal is what it shows between the attempts.
    WebDriverWait(other_browser, WAIT_S).until(lambda d: status(d)[1].startswith("refused or unreachable, retrying"))
    value = uuid.uuid4().hex
    admissions.set("after-refusal", value)
    admissions.call("stream::send", type="after-refusal", data={})
    WebDriverWait(live_page, WAIT_S).until(lambda d: "after-refusal" in last_event(d), "the admitted page saw nothing")
    assert items(live_page)["after-refusal"] == value
    assert items(other_browser) == {}
    assert last_event(other_browser) == "none yet"
    assert status(other_browser)[0] != "open"


def test_a_page_admitted_but_refused_the_group_shows_it_and_sees_nothing(
    live_page: webdriver.Chrome, other_browser: webdriver.Chrome, live_engine: EngineProcess, admissions: Admissions
) -> None:
    open_page(other_browser, page_url(live_engine, GUEST_TOKEN), state="unauthorized")
    assert status(other_browser)[1] == "this group is not open to you"
    value = uuid.uuid4().hex
    admissions.set("after-unauthorized", value)
    admissions.call("stream::send", type="after-unauthorized", data={})
    WebDriverWait(live_page, WAIT_S).until(lambda d: "after-unauthorized" in last_event(d), "no event on the page")
    assert items(live_page)["after-unauthorized"] == value
    assert items(other_browser) == {}
    assert last_event(other_browser) == "none yet"


def test_the_page_finds_the_stream_port_the_worker_was_given(
    live_engine: EngineProcess, example: dict[str, Any]
) -> None:
    assert [(r["config"]["http_method"], r["config"]["api_path"]) for r in example["routes"]] == [("GET", "/")]
    with urllib.request.urlopen(live_engine.http_url + "/", timeout=WAIT_S) as response:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = response.read().decode()
    config = page.split('<script id="config" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(config) == {"streamUrl": live_engine.stream_url, "streamName": "live_list", "groupId": "demo"}
