"""The console's Logs and Trace views in headless Chromium, against an engine process (the observability module
runs by default): a log line written through ``engine::log::info`` appears in the open page without a reload,
coloured by its level and filtered by the page's filters (and an official PyPI worker's ``Logger`` line, with the
span the SDK records around its handler); its trace id opens the Trace view, which draws the
trace's spans (sent on ``/otel`` as the official SDKs send them) one row each, nested by parent, on a timeline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from iii import III, register_worker
from iii.testing import EngineProcess
from tests.browser import require_browser, start_chrome
from tests.interop.environments import ensure_python_env
from tests.interop.processes import WorkerProcess, child_env, tail
from tests.modules.observability.frames import CHILD, ROOT, TRACE, span, spans_message

require_browser()

WAIT_S = 20
OFFICIAL_WORKER = Path(__file__).resolve().parents[1] / "interop" / "official_python_telemetry.py"
GRANDCHILD, SIBLING = "1" * 16, "2" * 16

_ROWS = (
    "return Array.from(document.querySelectorAll(arguments[0])).map(r => ({cls: r.className, cells: "
    "Array.from(r.cells, c => c.textContent), depth: (r.cells[0] || {}).dataset ? r.cells[0].dataset.depth : null}))"
)


def _rows(driver: webdriver.Chrome, table: str) -> list[dict[str, Any]]:
    """Each row's class, cell texts and (in the Trace view) depth, read in one script run (the page redraws)."""
    rows: list[dict[str, Any]] = driver.execute_script(_ROWS, f"#{table} tbody tr")
    return rows


def _messages(driver: webdriver.Chrome) -> list[str]:
    return [str(row["cells"][3]) for row in _rows(driver, "log-lines") if len(row["cells"]) == 5]


def _trace_link(driver: webdriver.Chrome, message: str) -> WebElement:
    """The trace id link of the log line whose message is ``message`` (rows are appended, never redrawn)."""
    return driver.find_element(By.XPATH, f'//table[@id="log-lines"]//tr[td[text()="{message}"]]//a')


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = start_chrome()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def engine() -> Iterator[EngineProcess]:
    with EngineProcess() as running:
        yield running


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[III]:
    iii = register_worker(engine.url)
    try:
        yield iii
    finally:
        iii.shutdown()


async def _send_telemetry(url: str, message: bytes) -> None:
    async with websockets.connect(url + "/otel", max_size=None, compression=None) as telemetry:
        await telemetry.send(message)


def test_a_log_line_appears_live_and_its_trace_id_opens_the_trace_on_a_timeline(
    browser: webdriver.Chrome, engine: EngineProcess, client: III
) -> None:
    browser.get(engine.url.replace("ws://", "http://") + "/console")
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: any("no log record matches" in row["cells"][0] for row in _rows(d, "log-lines")))
    marker = f"order {uuid.uuid4().hex} placed"
    client.trigger(
        {
            "function_id": "engine::log::info",
            "payload": {"message": marker, "trace_id": TRACE, "service_name": "orders-worker"},
        }
    )
    wait.until(lambda d: marker in _messages(d))  # the open page shows it: no reload
    (row,) = [row for row in _rows(browser, "log-lines") if marker in row["cells"]]
    assert row["cls"] == "level-INFO" and row["cells"][1:3] == ["INFO", "orders-worker"]
    assert row["cells"][4] == TRACE
    client.trigger({"function_id": "engine::log::error", "payload": {"message": "payment refused"}})
    wait.until(lambda d: "payment refused" in _messages(d))
    assert [row["cls"] for row in _rows(browser, "log-lines") if "payment refused" in row["cells"]] == ["level-ERROR"]

    # The filters: by level, then by text (each change reads the store again).
    Select(browser.find_element(By.ID, "log-level")).select_by_value("17")
    wait.until(lambda d: _messages(d) == ["payment refused"])
    Select(browser.find_element(By.ID, "log-level")).select_by_value("0")
    browser.find_element(By.ID, "log-text").send_keys(marker.split()[1])
    wait.until(lambda d: _messages(d) == [marker])

    asyncio.run(
        _send_telemetry(
            engine.url,
            spans_message(
                span("call orders.get", ROOT, ms=10),
                span("execute orders.get", CHILD, parent=ROOT, start_ms=2, ms=6),
                span("query db", GRANDCHILD, parent=CHILD, start_ms=3, ms=2),
                span("execute stock.check", SIBLING, parent=ROOT, start_ms=8, ms=1),
            ),
        )
    )
    _trace_link(browser, marker).click()
    expected = [
        ("call orders.get", "0", "10.000 ms"),
        ("execute orders.get", "1", "6.000 ms"),
        ("query db", "2", "2.000 ms"),
        ("execute stock.check", "1", "1.000 ms"),
    ]
    wait.until(lambda d: [(r["cells"][0], r["depth"], r["cells"][2]) for r in _rows(d, "trace-spans")] == expected)
    bars = browser.execute_script(
        "return Array.from(document.querySelectorAll('#trace-spans .bar span'), s => [s.style.left, s.style.width])"
    )
    assert bars == [["0%", "100%"], ["20%", "60%"], ["30%", "20%"], ["80%", "10%"]]
    indents = browser.execute_script(
        "return Array.from(document.querySelectorAll('#trace-spans td.span-name'), c => c.style.paddingLeft)"
    )
    assert indents == ["14px", "32px", "50px", "32px"]
    assert TRACE in browser.find_element(By.ID, "trace-title").text


def test_a_trace_id_entered_by_hand_is_shown_and_an_unknown_one_says_so(
    browser: webdriver.Chrome, engine: EngineProcess
) -> None:
    asyncio.run(_send_telemetry(engine.url, spans_message(span("call orders.get", ROOT, ms=4))))
    browser.get(engine.url.replace("ws://", "http://") + "/console")
    wait = WebDriverWait(browser, WAIT_S)
    field = browser.find_element(By.ID, "trace-id")
    field.send_keys(TRACE + "\n")
    wait.until(lambda d: [r["cells"][0] for r in _rows(d, "trace-spans")] == ["call orders.get"])
    field.clear()
    field.send_keys("f" * 32 + "\n")
    wait.until(lambda d: [r["cells"][0] for r in _rows(d, "trace-spans")] == [f"no span of trace {'f' * 32} is stored"])


@pytest.mark.timeout(1200)  # includes building the official environment on a cold machine
def test_an_official_workers_logger_line_and_its_span_are_shown(
    browser: webdriver.Chrome, engine: EngineProcess
) -> None:
    official = ensure_python_env()
    browser.get(engine.url.replace("ws://", "http://") + "/console")
    wait = WebDriverWait(browser, WAIT_S)
    marker = f"hello from python {uuid.uuid4().hex}"
    function_id = "telemetry.python.greet"
    env = child_env(engine, {"OTEL_SERVICE_NAME": "telemetry-python"})
    argv: list[str | Path] = [official.root / "bin" / "python", OFFICIAL_WORKER, function_id, marker]
    with WorkerProcess("telemetry-python", argv, cwd=official.root, env=env) as worker:
        worker.wait_ready(60, prefix="CALLED ")
        try:
            wait.until(lambda d: marker in _messages(d))
        except TimeoutException:
            raise AssertionError(f"{_messages(browser)}\n{worker.output()}\n{tail(engine.log_text())}") from None
        (row,) = [row for row in _rows(browser, "log-lines") if marker in row["cells"]]
        assert row["cls"] == "level-INFO" and row["cells"][1:3] == ["INFO", "telemetry-python"]
        _trace_link(browser, marker).click()
        # the handler's span is the root: the worker's own call carried no trace context, so the engine recorded
        # no span for it (a row of one cell, "loading" or "no span", may show first)
        wait.until(
            lambda d: (
                [r["cells"][:2] for r in _rows(d, "trace-spans")][:1]
                == [[f"execute {function_id}", "telemetry-python"]]
            )
        )
