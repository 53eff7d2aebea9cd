"""``iii logs`` and ``iii trace``, run for real (``python -m iii ...``) against a real engine: log records written
through ``engine::log::*`` with our SDK, and the logs and spans of an OFFICIAL PyPI worker whose call crosses two
of its functions (``official_python_nested.py``).
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets.sync.client

from iii import III, register_worker
from iii.testing import EngineProcess
from tests.cli.test_cli import iii
from tests.interop.environments import ensure_python_env
from tests.interop.processes import WorkerProcess, child_env, tail
from tests.modules.observability.frames import logs_message, span, spans_message

NESTED_WORKER = Path(__file__).resolve().parent / "official_python_nested.py"
ARRIVAL_S = 2.0
"""How soon a line logged while ``iii logs -f`` runs must be on its terminal (it asks every 0.25 s)."""
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.timeout(1200)  # includes building the official environment on a cold machine


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineProcess]:
    with EngineProcess([]) as running:  # the default modules: observability among them
        yield running


@pytest.fixture(scope="module")
def client(engine: EngineProcess) -> Iterator[III]:
    with register_worker(engine.url) as running:
        yield running


def log(client: III, level: str, message: str, service: str) -> None:
    client.trigger({"function_id": f"engine::log::{level}", "payload": {"message": message, "service_name": service}})


def lines_of(output: bytes) -> list[str]:
    return output.decode().splitlines()


def test_logs_prints_each_record_on_a_line_with_its_level_oldest_first(engine: EngineProcess, client: III) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    for level in ("debug", "info", "warn", "error"):
        log(client, level, f"{level} says\nhello", service)

    done = iii(engine, "logs", "--worker", service)

    assert done.returncode == 0, done.stderr
    rows = [line.split(maxsplit=3)[1:] for line in lines_of(done.stdout)]
    assert rows == [
        ["DEBUG", service, "debug says\\nhello"],  # a line break in a message cannot start a line of its own
        ["INFO", service, "info says\\nhello"],
        ["WARN", service, "warn says\\nhello"],
        ["ERROR", service, "error says\\nhello"],
    ], done.stdout


def test_logs_filters_by_worker_minimum_level_and_limit(engine: EngineProcess, client: III) -> None:
    mine, other = f"mine-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    for n, level in enumerate(("debug", "info", "warn", "error", "info")):
        log(client, level, f"mine {n}", mine)
    log(client, "error", "not mine", other)

    def messages(*args: str) -> list[str]:
        done = iii(engine, "logs", *args)
        assert done.returncode == 0, done.stderr
        return [line.split(maxsplit=3)[3] for line in lines_of(done.stdout)]

    assert messages("--worker", mine.upper()) == [f"mine {n}" for n in range(5)]  # case-insensitive
    assert messages("--worker", mine, "--level", "warn") == ["mine 2", "mine 3"]
    assert messages("--worker", mine, "--level", "error") == ["mine 3"]
    assert messages("--worker", mine, "--limit", "2") == ["mine 3", "mine 4"]  # the newest two, oldest first
    assert "not mine" in messages("--level", "error") and "mine 3" in messages("--level", "error")
    refused = iii(engine, "logs", "--level", "loud")
    assert refused.returncode == 2 and b"loud" in refused.stderr


class Terminal:
    """``iii ARGS`` on a pseudo-terminal of its own, its output read as it comes."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        env = {key: value for key, value in os.environ.items() if key not in ("III_URL", "III_TOKEN")}
        env.update(TERM="xterm-256color", COLUMNS="200")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "iii", *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def wait_for(self, text: str, timeout_s: float) -> float:
        """Read until ``text`` is on the terminal (colours aside); when it came (``time.monotonic``)."""
        deadline = time.monotonic() + timeout_s
        while text.encode() not in _ANSI.sub(b"", self.output):
            left = deadline - time.monotonic()
            assert left > 0, f"never printed {text!r}: {self.output!r}"
            readable, _, _ = select.select([self.master], [], [], left)
            if readable:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # EIO: the command ended
                    raise AssertionError(f"ended before printing {text!r}: {self.output!r}") from None
        return time.monotonic()

    def read_to_end(self) -> None:
        """Read what the ended command left on the terminal."""
        while select.select([self.master], [], [], 5.0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: nothing more
                return
            if not chunk:
                return
            self.output += chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def test_logs_follow_shows_new_and_late_lines_within_seconds_in_colour_and_ctrl_c_exits_0(
    engine: EngineProcess, client: III
) -> None:
    service = f"tail-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        log(client, "info", f"before the tail {n}", service)
    terminal = Terminal("logs", "-f", "--limit", "2", "--worker", service, "--url", engine.url)
    try:
        terminal.wait_for("before the tail 2", 30.0)  # the command is running and has printed what was there
        earlier_ns = time.time_ns()  # a stamp after the first page's and before the next line's
        log(client, "error", "during the tail", service)
        logged = time.monotonic()
        seen = terminal.wait_for("during the tail", 10.0)
        assert seen - logged <= ARRIVAL_S, terminal.output
        assert b"\x1b[31mERROR" in terminal.output, terminal.output  # red, on a terminal

        # A worker's SDK sends its records in batches: one stamped before the line just printed still shows.
        late = logs_message("late from a batch", service=service, timeUnixNano=str(earlier_ns))
        with websockets.sync.client.connect(engine.url + "/otel") as telemetry:
            telemetry.send(late)
            sent = time.monotonic()
            assert terminal.wait_for("late from a batch", 10.0) - sent <= ARRIVAL_S, terminal.output

        terminal.process.send_signal(signal.SIGINT)
        assert terminal.process.wait(timeout=30) == 0, terminal.output
        terminal.read_to_end()
        text = _ANSI.sub(b"", terminal.output)
        assert b"Traceback" not in text and b"Aborted" not in text, terminal.output
        assert text.count(b"before the tail 1") == text.count(b"during the tail") == 1, text  # once, not per ask
        assert b"before the tail 0" not in text, text  # --limit 2 left it out, and the tail did not bring it back
    finally:
        terminal.close()


@contextlib.contextmanager
def nested_worker(engine: EngineProcess, client: III) -> Iterator[tuple[str, str, str]]:
    """An official PyPI worker (``official_python_nested.py``) that has called its ``PREFIX.outer`` (which logs
    ``MARKER outer`` and calls ``PREFIX.inner``, which logs ``MARKER inner``), once the engine has both
    ``execute`` spans: ``(prefix, marker, trace id)``."""
    python = ensure_python_env().root
    prefix, marker = f"nested{uuid.uuid4().hex[:8]}", f"hello {uuid.uuid4().hex}"
    env = child_env(engine, {"OTEL_SERVICE_NAME": "nested-python"})
    with WorkerProcess(
        "nested-python", [python / "bin" / "python", NESTED_WORKER, prefix, marker], cwd=python, env=env
    ) as worker:
        worker.wait_ready(60, prefix="CALLED ")
        names = {f"execute {prefix}.outer", f"execute {prefix}.inner"}
        deadline = time.monotonic() + 10
        while True:  # until the worker's SDK has sent both spans (it sends every 100 ms)
            answer = client.trigger({"function_id": "engine::traces::list", "payload": {"search_all_spans": True}})
            spans = [span for span in answer["spans"] if span["name"] in names]
            if len(spans) == 2:
                break
            assert time.monotonic() < deadline, f"{answer}\n{worker.output()}\n{tail(engine.log_text())}"
        yield prefix, marker, spans[0]["trace_id"]


def test_trace_prints_an_official_workers_spans_as_a_tree(engine: EngineProcess, client: III) -> None:
    with nested_worker(engine, client) as (prefix, marker, trace_id):
        done = iii(engine, "trace", trace_id)

        assert done.returncode == 0, done.stderr
        lines = lines_of(done.stdout)
        assert lines[0] == f"trace {trace_id}", done.stdout
        outer = next(i for i, line in enumerate(lines) if f"execute {prefix}.outer " in line)
        inner = next(i for i, line in enumerate(lines) if f"execute {prefix}.inner " in line)
        # the child is below its parent and drawn one level deeper (the official SDK runs its own function's call
        # in process: no engine hop between them)
        assert inner == outer + 1, done.stdout
        depth = lines[inner].index("execute") - lines[outer].index("execute")
        assert depth == 4, done.stdout
        row = re.compile(r"execute \S+  nested-python  [0-9.]+ ms  ok  \+[0-9.]+ ms$")
        assert row.search(lines[outer]) and row.search(lines[inner]), done.stdout
        # the root starts the trace: the worker's own call of outer carried no trace context, so the engine
        # recorded no span for it (iii.engine.spans joins traces, it does not start them for calls)
        assert outer == 1 and lines[outer].endswith("+0.00 ms"), done.stdout

        logs = iii(engine, "logs", "--worker", "nested-python")
        assert f"WARN  nested-python {marker} inner trace={trace_id[:8]}" in logs.stdout.decode(), logs.stdout


def test_logs_function_prints_exactly_the_lines_logged_in_that_functions_runs(
    engine: EngineProcess, client: III
) -> None:
    with nested_worker(engine, client) as (prefix, marker, trace_id):
        log(client, "error", f"{marker} not in a function", "nested-python")

        def lines(*args: str) -> list[str]:
            done = iii(engine, "logs", *args)
            assert done.returncode == 0, done.stderr
            return [line.split(maxsplit=1)[1] for line in lines_of(done.stdout)]  # without the time

        short = trace_id[:8]
        assert lines("--function", f"{prefix}.inner") == [f"WARN  nested-python {marker} inner trace={short}"]
        assert lines("--function", f"{prefix}.outer") == [f"INFO  nested-python {marker} outer trace={short}"]
        assert lines("--function", f"{prefix}.outer", "--level", "warn") == []
        assert lines("--function", prefix) == []  # a function's id, not a prefix of one
        assert len([line for line in lines("--worker", "nested-python") if marker in line]) == 3


def test_logs_follow_with_function_shows_a_line_once_its_span_arrives(engine: EngineProcess) -> None:
    function, service = f"tailed{uuid.uuid4().hex[:8]}", f"fn-tail-{uuid.uuid4().hex[:8]}"
    trace_id = uuid.uuid4().hex
    first, running, ended, other = (uuid.uuid4().hex[:16] for _ in range(4))

    def line(body: str, span_id: str, ago_s: float = 0.0) -> bytes:
        stamp = str(time.time_ns() - int(ago_s * 1e9))
        return logs_message(body, service=service, traceId=trace_id, spanId=span_id, timeUnixNano=stamp)

    def execute_span(span_id: str, name: str = function) -> bytes:  # as the SDKs send it: the function is named
        return spans_message({**span(f"execute {name}", span_id, trace=trace_id), "attributes": []})  # only

    terminal = Terminal("logs", "-f", "--function", function, "--url", engine.url)
    try:
        with websockets.sync.client.connect(engine.url + "/otel") as telemetry:
            telemetry.send(line("a line before", first))
            telemetry.send(execute_span(first))
            terminal.wait_for("a line before", 10.0)  # the tail is running (on its first page or after)

            # a call that started 2 s ago (less than the tail's lookback) logged a line then; a call that started
            # after it logged one now and ended now
            telemetry.send(line("a line of a call still running", running, ago_s=2.0))
            telemetry.send(line("a line of a call that ended", ended))
            telemetry.send(execute_span(ended))
            terminal.wait_for("a line of a call that ended", 10.0)
            assert b"a line of a call still running" not in terminal.output, terminal.output  # its span is unknown

            telemetry.send(execute_span(running))  # the call ends: its line, older than one printed, shows now
            sent = time.monotonic()
            assert terminal.wait_for("a line of a call still running", 10.0) - sent <= ARRIVAL_S, terminal.output

            telemetry.send(line("a line of another function", other))
            telemetry.send(execute_span(other, f"{function}.other"))
            telemetry.send(line("the last line", ended))
            terminal.wait_for("the last line", 10.0)

        terminal.process.send_signal(signal.SIGINT)
        assert terminal.process.wait(timeout=30) == 0, terminal.output
        terminal.read_to_end()
        text = _ANSI.sub(b"", terminal.output).decode()
        assert (
            [row.split(maxsplit=3)[3] for row in text.splitlines()]
            == [
                f"a line before trace={trace_id[:8]}",
                f"a line of a call that ended trace={trace_id[:8]}",
                f"a line of a call still running trace={trace_id[:8]}",  # once, though every later ask has it
                f"the last line trace={trace_id[:8]}",
            ]
        ), text
    finally:
        terminal.close()


def test_trace_of_an_unknown_id_says_so_and_exits_1(engine: EngineProcess) -> None:
    done = iii(engine, "trace", "0" * 32)
    assert done.returncode == 1
    assert f"no trace {'0' * 32} in the engine's store".encode() in done.stderr
    assert b"Traceback" not in done.stderr
