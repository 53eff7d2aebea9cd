"""``on_message`` callbacks of a reader read from sync code run in the reading thread, not on the SDK's loop.

A ``def`` handler that reads with ``read_all()`` (as the seed's coordinator does) gets its callbacks in its own
thread, in stream order: there ``trigger()`` blocks and returns the value, and a callback that blocks holds
up only that reader, never the worker's other calls. An ``async def`` callback is still scheduled on the SDK
loop, where it may await.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III, ChannelReader, InitOptions, register_worker
from iii.testing import EngineProcess

WAIT_S = 10.0
"""Bound of every wait: a test that would hang fails after this instead."""
CALL = {"timeout_ms": 20_000}
# A function registered by `worker` is called from another connection (`caller`), whose messages the engine may
# read first: each test waits until the engine answered the registration (`wait_active`) before calling it.


@pytest.fixture(scope="module")
def worker(shared_engine: EngineProcess) -> Iterator[III]:
    """The worker whose handlers read (the SDK under test)."""
    with register_worker(shared_engine.url, InitOptions(worker_name="reader-callbacks")) as client:
        client.register_function("cb.echo", lambda data: {"echo": data})
        yield client


@pytest.fixture(scope="module")
def caller(shared_engine: EngineProcess) -> Iterator[III]:
    """Another worker process's stand-in: writes the channels and triggers the handlers."""
    with register_worker(shared_engine.url, InitOptions(worker_name="reader-callbacks-caller")) as client:
        yield client


class Background:
    """A blocking call run in a thread, so the test can act while it waits."""

    def __init__(self, call: Any) -> None:
        self._result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Any) -> None:
        try:
            self._result["value"] = call()
        except BaseException as error:
            self._result["error"] = error

    def result(self) -> Any:
        self._thread.join(WAIT_S * 3)
        assert not self._thread.is_alive(), "the call did not return"
        if "error" in self._result:
            raise self._result["error"]
        return self._result["value"]


def test_callbacks_of_a_sync_reader_run_in_its_thread_in_stream_order(worker: III, caller: III) -> None:
    seen: list[dict[str, Any]] = []
    handler_threads: list[threading.Thread] = []
    middle_dispatched = threading.Event()

    def on_message(text: str) -> None:
        answer = worker.trigger({"function_id": "cb.echo", "payload": text})  # sync: blocks, returns the value
        seen.append({"text": text, "thread": threading.current_thread(), "answer": answer})
        if text == "middle":
            middle_dispatched.set()

    def read(data: dict[str, Any]) -> int:
        reader: ChannelReader = data["reader"]
        handler_threads.append(threading.current_thread())
        reader.on_message(on_message)
        return len(reader.read_all())

    assert worker.register_function("cb.read_in_order", read).wait_active(WAIT_S)
    channel = caller.create_channel()
    channel.writer.send_message("begin")
    channel.writer.write(b"x" * 1000)
    channel.writer.send_message("middle")
    reading = Background(
        lambda: caller.trigger(
            {"function_id": "cb.read_in_order", "payload": {"reader": channel.reader_ref.model_dump()}, **CALL}
        )
    )
    # The data after "middle" is written only once "middle" was dispatched: a reader that put callbacks off
    # until later in the stream (or to its end) fails here.
    assert middle_dispatched.wait(WAIT_S), "'middle' was not dispatched before the data after it was read"
    channel.writer.write(b"y" * 1000)
    channel.writer.send_message("end")
    channel.writer.close()

    assert reading.result() == 2000
    assert [entry["text"] for entry in seen] == ["begin", "middle", "end"]
    assert [entry["answer"] for entry in seen] == [{"echo": "begin"}, {"echo": "middle"}, {"echo": "end"}]
    for entry in seen:
        assert entry["thread"] is handler_threads[0], "callbacks run in the thread that called read_all()"
        assert entry["thread"].name != "iii-sdk"


def test_a_blocking_callback_leaves_the_workers_other_calls_running(worker: III, caller: III) -> None:
    blocking = threading.Event()
    released = threading.Event()
    outcome: dict[str, bool] = {}

    def on_message(text: str) -> None:
        blocking.set()
        outcome["released"] = released.wait(WAIT_S)

    def read(data: dict[str, Any]) -> int:
        reader: ChannelReader = data["reader"]
        reader.on_message(on_message)
        return len(reader.read_all())

    def release(data: Any) -> str:
        released.set()
        return "released"

    assert worker.register_function("cb.read_blocking", read).wait_active(WAIT_S)
    assert worker.register_function("cb.release", release).wait_active(WAIT_S)
    channel = caller.create_channel()
    channel.writer.write(b"before")
    channel.writer.send_message("wait here")
    channel.writer.write(b"after")
    channel.writer.close()
    reading = Background(
        lambda: caller.trigger(
            {"function_id": "cb.read_blocking", "payload": {"reader": channel.reader_ref.model_dump()}, **CALL}
        )
    )
    assert blocking.wait(WAIT_S), "the callback was not called"
    # While the callback blocks, another call of the same worker is served (the SDK's loop is free).
    assert caller.trigger({"function_id": "cb.release", "payload": {}, "timeout_ms": 5_000}) == "released"
    assert reading.result() == len(b"beforeafter")
    assert outcome == {"released": True}


def test_async_callbacks_of_a_sync_reader_run_on_the_sdk_loop(worker: III, caller: III) -> None:
    answers: list[Any] = []
    done = threading.Event()

    async def on_message(text: str) -> None:
        answers.append(await worker.trigger({"function_id": "cb.echo", "payload": text}))
        done.set()

    def read(data: dict[str, Any]) -> str:
        reader: ChannelReader = data["reader"]
        reader.on_message(on_message)
        return str(reader.read_all().decode())

    assert worker.register_function("cb.read_async_callback", read).wait_active(WAIT_S)
    channel = caller.create_channel()
    channel.writer.write(b"data")
    channel.writer.send_message("hello")
    channel.writer.close()
    payload = {"reader": channel.reader_ref.model_dump()}
    assert caller.trigger({"function_id": "cb.read_async_callback", "payload": payload, **CALL}) == "data"
    assert done.wait(WAIT_S), "the async callback did not finish"
    assert answers == [{"echo": "hello"}]
