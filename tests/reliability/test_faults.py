"""Processes killed with SIGKILL mid-stream and mid-call: the survivors learn fast, and nothing leaks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from iii import III, ChannelBrokenError, InitOptions, register_worker
from iii.protocol.refs import channel_url
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker, connect_raw

pytestmark = pytest.mark.timeout(60)

# A child that uses one channel end given on its command line, says READY, then works until killed.
CHILD = """
import sys
from iii import register_worker, InitOptions
url, role, channel_id, key = sys.argv[1:5]
client = register_worker(url, InitOptions(worker_name="victim-" + role))
if role == "reader":
    reader = client.reader({"channel_id": channel_id, "access_key": key, "direction": "read"})
    import asyncio
    async def main():
        async for chunk in reader:
            print("READY", flush=True)
            await asyncio.Event().wait()  # holds the stream open, reads no more
    asyncio.run(main())
elif role == "writer":
    writer = client.writer({"channel_id": channel_id, "access_key": key, "direction": "write"})
    writer.write(b"x" * 1_000_000)
    while True:  # READY once the engine has some of the data (a sync write returns once it is queued)
        listing = client.trigger({"function_id": "engine::channels::list", "payload": {}})
        if any(c["channel_id"] == channel_id and c["writer"] == "open" and c["queued_bytes"] + c["bytes"] > 0
               for c in listing["channels"]):
            break
    print("READY", flush=True)
    while True:
        writer.write(b"y" * 65536)
else:  # caller: call the slow function, never to see its answer
    import threading
    threading.Thread(target=lambda: client.trigger({"function_id": channel_id, "payload": {}}), daemon=True).start()
    print("READY", flush=True)
    threading.Event().wait()
"""


@pytest.fixture(scope="module")
def client(shared_engine: EngineProcess) -> Iterator[III]:
    with register_worker(shared_engine.url, InitOptions(worker_name="faults")) as worker:
        yield worker


def _victim(engine: EngineProcess, role: str, *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, engine.url, role, *args], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    return child


def _kill(child: subprocess.Popen[str]) -> float:
    """SIGKILL ``child`` and wait for it; returns when the signal was sent."""
    sent_at = time.monotonic()
    child.kill()
    child.wait(10)
    return sent_at


def test_a_killed_reader_breaks_the_writer_within_a_second(shared_engine: EngineProcess, client: III) -> None:
    channel = client.create_channel()
    channel.writer.write(b"first")  # the reader says READY once it has this
    reader = _victim(shared_engine, "reader", channel.reader_ref.channel_id, channel.reader_ref.access_key)
    killed_at = _kill(reader)
    with pytest.raises(ChannelBrokenError) as broken:
        while time.monotonic() - killed_at < 10:  # each write returns once buffered; one after the break raises
            channel.writer.write(b"z" * 65536)
    elapsed = time.monotonic() - killed_at
    print(f"writer told {elapsed:.2f} s after its reader was killed")
    assert broken.value.code == 4002 and elapsed < 1.0


def test_a_killed_writer_breaks_the_reader_within_a_second(shared_engine: EngineProcess, client: III) -> None:
    channel = client.create_channel()
    writer = _victim(shared_engine, "writer", channel.writer_ref.channel_id, channel.writer_ref.access_key)
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            channel.reader.read_all()
        except ChannelBrokenError as exc:
            outcome["error"], outcome["at"] = exc, time.monotonic()

    reading = threading.Thread(target=read)
    reading.start()
    killed_at = _kill(writer)
    reading.join(10)
    error = outcome["error"]
    print(f"reader told {outcome['at'] - killed_at:.2f} s after its writer was killed")
    assert error.code == 4001 and error.received > 0 and outcome["at"] - killed_at < 1.0


def test_a_killed_caller_lets_the_target_finish_and_leaves_nothing(shared_engine: EngineProcess, client: III) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(data: Any) -> str:
        started.set()
        release.wait(30)
        finished.set()
        return "done"

    assert client.register_function("faults.slow", slow).wait_active(10)  # before another connection calls it
    caller = _victim(shared_engine, "caller", "faults.slow", "-")
    assert started.wait(10)
    _kill(caller)
    release.set()
    assert finished.wait(10)
    # The engine dropped the answer for the departed caller; nothing stays pending anywhere. The engine learns
    # of the kill when the socket's end reaches it, which may come after this listing's request: ask until then.
    deadline = time.monotonic() + 5
    while True:
        listing = client.trigger({"function_id": "engine::workers::list", "payload": {}})
        victims = [w for w in listing["workers"] if w["name"].startswith("victim-")]
        if not victims or time.monotonic() > deadline:
            break
    assert not victims
    me = next(w for w in listing["workers"] if w["name"] == "faults")
    assert me["active_invocations"] == 0


# A raw writer: four 64 KiB frames into a channel that holds one, then a close frame ("graceful") or nothing,
# and SENT; then it waits on stdin to be killed, or exits at once ("graceful", the close not yet answered).
HELD_BACK_WRITER = """
import sys
from websockets.sync.client import connect
url, mode = sys.argv[1:3]
ws = connect(url, max_size=None, compression=None, close_timeout=0.1)
for i in range(4):
    ws.send(bytes([i]) * 65536)
if mode == "graceful":
    ws.close()  # the engine holds the writer back and reads nothing: the close times out, the process ends
print("SENT", flush=True)
if mode == "killed":
    sys.stdin.read()
"""


def _held_back_writer(url: str, mode: str) -> subprocess.Popen[str]:
    """Start the raw writer and return once it has sent its frames (and, graceful, its close)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HELD_BACK_WRITER, url, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "SENT"
    return child


@pytest.mark.parametrize(("mode", "end_code"), [("killed", 4001), ("graceful", 1000)])
async def test_a_held_back_writer_that_hung_up_is_noticed_at_once(
    shared_engine: EngineProcess, mode: str, end_code: int
) -> None:
    """A writer held back by backpressure that dies (or closes and exits) is seen as ended within a second or
    so, not left ``open`` until a reader catches up or the TTL runs out; the reader still gets all it sent,
    then 4001 for the killed writer and 1000 for the one that closed."""
    lister = await RawWorker.connect(shared_engine.url)
    refs = await lister.result_of("engine::channels::create", {"buffer_size": 1})
    writer_url = channel_url(shared_engine.url, **refs["writer"])
    child = _held_back_writer(writer_url, mode)
    try:
        if mode == "killed":
            child.kill()
        child.wait(10)

        async def writer_state() -> str:
            listing = await lister.result_of("engine::channels::list", {})
            [channel] = [c for c in listing["channels"] if c["channel_id"] == refs["writer"]["channel_id"]]
            return str(channel["writer"])

        # Each round trip to the engine is the wait. (A deadline, not asyncio.timeout: on Python 3.11 a
        # cancellation can be lost inside the client's wait_for, and the loop would go on.)
        deadline = time.monotonic() + 10
        while (state := await writer_state()) != "done":
            assert time.monotonic() < deadline, f"the writer still shows {state!r} 10 s after it hung up"
        reader = await connect_raw(channel_url(shared_engine.url, **refs["reader"]))
        received = [await reader.recv() for _ in range(4)]
        assert received == [bytes([i]) * 65536 for i in range(4)]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await reader.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == end_code
    finally:
        child.kill()
        child.wait(10)
