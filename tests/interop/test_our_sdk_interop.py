"""Our Python SDK exchanges channels with the official SDKs, in both directions, through our engine.

Our worker runs in the test process (``from iii import register_worker``) and serves ``ours.sync.*`` (plain
``def`` handlers: blocking ``read_all``, ``write``, fire-and-forget ``send_message``/``close``) and
``ours.async.*`` (``async def`` handlers: ``await``-ed calls). The peer is an official SDK in its own process:
a Node worker on npm ``iii-sdk@0.22.1`` (role ``interop.node`` of ``node/roles.mjs``) or a Python worker on
PyPI ``iii-sdk`` 0.25.0 (``official_python_worker.py``). Both sides offer the same four functions:

* ``digest``: read the channel end handed over (``reader``) to its end; report sha256, length, text messages;
* ``produce``: write a start message, ``size`` pattern bytes, an end message into the ``writer`` handed over,
  then close; report sha256 and length;
* ``send_to``: create a channel, hand its READER to ``target``'s ``digest`` and write into it;
* ``fetch_from``: create a channel, hand its WRITER to ``target``'s ``produce`` and read from it.

So each test has one side create the channel and pass one end's ref inside a trigger payload to the other
side, which materializes it into a live reader or writer. The bytes are checked by sha256 on both sides
against the test's own computation, and the text messages must arrive in order around the data.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from iii import III, InitOptions, register_worker
from iii.channels import ChannelReader, ChannelWriter
from iii.protocol.refs import channel_url
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker, connect_raw
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

READY_TIMEOUT_S = 60.0
CALL_TIMEOUT_MS = 120_000
PYTHON_WORKER = Path(__file__).resolve().parent / "official_python_worker.py"
CHANNEL_BYTES = 6 * 64 * 1024 + 25
"""Six full 64 KiB frames and a short one (the size the other interop tests use)."""
LARGE_BYTES = 5 * 1024 * 1024 + 3
"""More than a channel's 64-frame buffer: the writer must be held back until the reader catches up."""

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine

SCENARIOS = {
    # id: (the function the test calls, "peer" or "ours"; the function it hands a ref to; who writes)
    "ours-creates-writes-peer-reads": ("ours", "send_to", "peer", "digest", "ours"),
    "ours-creates-reads-peer-writes": ("ours", "fetch_from", "peer", "produce", "peer"),
    "peer-creates-writes-ours-reads": ("peer", "send_to", "ours", "digest", "peer"),
    "peer-creates-reads-ours-writes": ("peer", "fetch_from", "ours", "produce", "ours"),
}
PEERS = {"node": "interop.node", "python": "interop.python"}
"""The function namespace of each official peer; the ``lang`` it puts in its text messages is the key."""


@functools.cache
def pattern(length: int) -> bytes:
    """The deterministic bytes that ``roles.mjs`` and ``official_python_worker.py`` write too."""
    return bytes((i * 31 + (i >> 10)) % 251 for i in range(length))


def described(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}


# --- our worker's functions ------------------------------------------------------------------------------------


def register_ours(iii: III) -> list[str]:
    """Register ``ours.sync.*`` and ``ours.async.*`` on ``iii``; return their ids."""

    # plain def handlers: the dual-mode API blocks where it produces a value or applies backpressure
    def digest_sync(data: dict[str, Any]) -> dict[str, Any]:
        reader: ChannelReader = data["reader"]
        messages: list[str] = []
        reader.on_message(messages.append)
        raw = reader.read_all()
        return {**described(raw), "messages": messages}

    def produce_sync(data: dict[str, Any]) -> dict[str, Any]:
        writer: ChannelWriter = data["writer"]
        payload = pattern(data["size"])
        writer.send_message("start:ours")
        writer.write(payload)
        writer.send_message("end:ours")
        writer.close()
        return described(payload)

    def send_to_sync(data: dict[str, Any]) -> dict[str, Any]:
        channel = iii.create_channel()
        # A sync trigger blocks until the target has read everything, so write (and close) first: the
        # engine holds the bytes until the target connects (the size fits in the channel and socket buffers).
        written = produce_sync({"writer": channel.writer, "size": data["size"]})
        read = iii.trigger(
            {
                "function_id": data["target"],
                "payload": {"reader": channel.reader_ref.model_dump()},
                "timeout_ms": CALL_TIMEOUT_MS,
            }
        )
        return {"written": written, "read": read}

    def fetch_from_sync(data: dict[str, Any]) -> dict[str, Any]:
        channel = iii.create_channel()
        written = iii.trigger(
            {
                "function_id": data["target"],
                "payload": {"writer": channel.writer_ref.model_dump(), "size": data["size"]},
                "timeout_ms": CALL_TIMEOUT_MS,
            }
        )
        return {"written": written, "read": digest_sync({"reader": channel.reader})}

    # async def handlers: every call awaited, and the two sides of a channel run at the same time
    async def digest_async(data: dict[str, Any]) -> dict[str, Any]:
        reader: ChannelReader = data["reader"]
        messages: list[str] = []
        reader.on_message(messages.append)
        raw = await reader.read_all()
        return {**described(raw), "messages": messages}

    async def produce_async(data: dict[str, Any]) -> dict[str, Any]:
        writer: ChannelWriter = data["writer"]
        payload = pattern(data["size"])
        await writer.send_message_async("start:ours")
        await writer.write(payload)
        await writer.send_message_async("end:ours")
        await writer.close_async()
        return described(payload)

    async def send_to_async(data: dict[str, Any]) -> dict[str, Any]:
        channel = await iii.create_channel_async()
        read = asyncio.ensure_future(
            iii.trigger_async(
                {
                    "function_id": data["target"],
                    "payload": {"reader": channel.reader_ref},
                    "timeout_ms": CALL_TIMEOUT_MS,
                }
            )
        )
        written = await produce_async({"writer": channel.writer, "size": data["size"]})
        return {"written": written, "read": await read}

    async def fetch_from_async(data: dict[str, Any]) -> dict[str, Any]:
        channel = await iii.create_channel_async()
        written = asyncio.ensure_future(
            iii.trigger_async(
                {
                    "function_id": data["target"],
                    "payload": {"writer": channel.writer_ref, "size": data["size"]},
                    "timeout_ms": CALL_TIMEOUT_MS,
                }
            )
        )
        read = await digest_async({"reader": channel.reader})
        return {"written": await written, "read": read}

    functions = {
        "ours.sync.digest": digest_sync,
        "ours.sync.produce": produce_sync,
        "ours.sync.send_to": send_to_sync,
        "ours.sync.fetch_from": fetch_from_sync,
        "ours.async.digest": digest_async,
        "ours.async.produce": produce_async,
        "ours.async.send_to": send_to_async,
        "ours.async.fetch_from": fetch_from_async,
    }
    for function_id, handler in functions.items():
        iii.register_function(function_id, handler)
    return list(functions)


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def ours(engine: EngineProcess) -> Iterator[III]:
    """Our worker, in this process, serving ``ours.*``; the engine lists them before the test starts.

    Afterwards the engine's log must hold no warning or error: nothing either SDK sent was refused and
    nothing failed inside the engine, channel ends and disconnects included.
    """
    iii = register_worker(engine.url, InitOptions(worker_name="interop-ours"))
    try:
        ids = register_ours(iii)
        listed = iii.trigger({"function_id": "engine::functions::list", "payload": {}})
        assert set(ids) <= {entry["function_id"] for entry in listed["functions"]}
        yield iii
    finally:
        iii.shutdown()
    complaints = engine_complaints(engine)
    assert not complaints, "engine complained:\n" + "\n".join(complaints)


@pytest.fixture
def workers() -> Iterator[ExitStack]:
    """Every peer process entered here is stopped (stdin closed, killed after a grace period) at the end."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture(params=sorted(PEERS))
def peer(request: pytest.FixtureRequest, engine: EngineProcess, workers: ExitStack) -> tuple[str, WorkerProcess]:
    """``(peer name, its process)``: the official Node or Python worker, started and listed by the engine.

    Only the environment of the peer in use is requested (built on first use), so a machine without
    node still runs the Python half.
    """
    name: str = request.param
    argv: list[str | Path]
    if name == "node":
        node = shutil.which("node")
        assert node is not None, "node must be on PATH for the Node SDK interop tests"
        cwd: Path = request.getfixturevalue("node_scripts")
        argv = [node, "worker.mjs", "interop.node"]
    else:
        official_python: PythonEnv = request.getfixturevalue("official_python")
        cwd = official_python.root
        argv = [official_python.python, PYTHON_WORKER]
    worker = workers.enter_context(WorkerProcess(f"official {name} worker", argv, cwd=cwd, env=child_env(engine)))
    try:
        worker.wait_ready(READY_TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text())}") from None
    return name, worker


# --- the tests -------------------------------------------------------------------------------------------------


def exchange(ours: III, peer_name: str, scenario: str, style: str, size: int) -> tuple[dict[str, Any], str]:
    """Run ``scenario`` between our ``style`` functions and the peer; return the answer and who wrote."""
    caller_side, entry, target_side, target, writer_side = SCENARIOS[scenario]
    namespace = {"ours": f"ours.{style}", "peer": PEERS[peer_name]}
    result: dict[str, Any] = ours.trigger(
        {
            "function_id": f"{namespace[caller_side]}.{entry}",
            "payload": {"target": f"{namespace[target_side]}.{target}", "size": size},
            "timeout_ms": CALL_TIMEOUT_MS,
        }
    )
    return result, ("ours" if writer_side == "ours" else peer_name)


@pytest.mark.parametrize("style", ["sync", "async"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_channel_refs_pass_between_our_sdk_and_an_official_sdk(
    ours: III, peer: tuple[str, WorkerProcess], engine: EngineProcess, scenario: str, style: str
) -> None:
    """Proves a channel created by one SDK can be handed, as a ref in a trigger payload, to a function on
    the other SDK in another process, and used there: our ``sync``/``async`` functions with the official
    Node SDK and the official Python SDK, each side creating the channel, each side writing.

    The writer sends ``start:<lang>``, 384 KiB + 25 bytes of pattern data, ``end:<lang>`` and closes; the
    reader reads to the end with ``read_all`` (ours: sync or awaited) and collects the text messages.
    Both sides' sha256 and length must equal the test's, and the messages arrive in order.
    """
    peer_name, process = peer
    try:
        result, writer = exchange(ours, peer_name, scenario, style, CHANNEL_BYTES)
    except Exception as exc:
        raise AssertionError(f"{exc}\n{process.output()}\n--- engine log:\n{tail(engine.log_text())}") from exc

    expected = described(pattern(CHANNEL_BYTES))
    assert result["written"] == expected
    assert result["read"] == {**expected, "messages": [f"start:{writer}", f"end:{writer}"]}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_5_mib_pass_between_our_async_sdk_and_an_official_sdk(
    ours: III, peer: tuple[str, WorkerProcess], engine: EngineProcess, scenario: str
) -> None:
    """Proves the same exchanges carry 5 MiB (more than a channel buffers, so the writer, ours or the
    official SDK's, is held back until the reader, the other SDK's, catches up) intact, without deadlock."""
    peer_name, process = peer
    try:
        result, writer = exchange(ours, peer_name, scenario, "async", LARGE_BYTES)
    except Exception as exc:
        raise AssertionError(f"{exc}\n{process.output()}\n--- engine log:\n{tail(engine.log_text())}") from exc

    expected = described(pattern(LARGE_BYTES))
    assert result["written"] == expected
    assert result["read"] == {**expected, "messages": [f"start:{writer}", f"end:{writer}"]}


async def test_official_readers_read_a_writers_4_mib_frames(
    engine: EngineProcess, peer: tuple[str, WorkerProcess]
) -> None:
    """Proves a writer's frames larger than 1 MiB reach an official reader intact.

    A raw WebSocket writer sends two 4 MiB binary frames and a 3 MiB fragmented binary message; the official
    peer's ``digest`` reads the stream to its end. The official Python reader connects with websockets'
    default ``max_size`` of 1 MiB, so before the engine cut data into frames of at most 64 KiB it closed
    with 1009 and the stream broke.
    """
    name, process = peer
    frame = pattern(4 * 1024 * 1024)
    fragmented = pattern(3 * 1024 * 1024)
    caller = await RawWorker.connect(engine.url)
    refs = await caller.result_of("engine::channels::create", {})
    call_id = await caller.invoke(f"{PEERS[name]}.digest", {"reader": refs["reader"]})
    writer_ref = refs["writer"]
    writer = await connect_raw(channel_url(engine.url, writer_ref["channel_id"], writer_ref["access_key"], "write"))
    await writer.send(frame)
    await writer.send(frame)
    await writer.send(fragmented[i : i + 1024 * 1024] for i in range(0, len(fragmented), 1024 * 1024))
    await writer.close()
    async with asyncio.timeout(CALL_TIMEOUT_MS / 1000):
        while (answer := await caller.recv_type("invocationresult", CALL_TIMEOUT_MS / 1000))[
            "invocation_id"
        ] != call_id:
            pass
    assert not answer.get("error"), f"{answer}\n{process.output()}"
    expected = frame + frame + fragmented
    assert answer["result"] == {"sha256": hashlib.sha256(expected).hexdigest(), "length": len(expected), "messages": []}
