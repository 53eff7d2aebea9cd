"""The seed's Python channel examples (``examples/*.py``) run for real against a real engine.

Each example is used three ways: imported into the test process (its ``connect`` registers the functions on
one worker, so the inner ``trigger`` is a nested call back into the same worker), run as two separate worker
processes (``python examples/X.py URL --only ID``; each prints ``READY`` once the engine lists its function)
with the call made from a third connection, and run as a script with ``--demo``. Results are compared
exactly. The large variants move 5 MiB, more than a channel's 64-frame buffer (64 x 64 KiB = 4 MiB) holds,
so the engine must hold the writer back until the reader catches up; they must finish, not deadlock.

Worker processes are stopped with SIGTERM through their own ``Popen`` handle and must exit 0; after every
test the engine's log must hold no warning or error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from iii import III, register_worker
from iii.testing import EngineProcess
from tests.interop.processes import STOP_GRACE_S, WorkerProcess, engine_complaints, run_once, tail

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
READY_TIMEOUT_S = 30.0
SCRIPT_TIMEOUT_S = 60.0
CALL_TIMEOUT_MS = 60_000
FRAME_BYTES = 64 * 1024
BUFFER_FRAMES = 64
"""The engine's default channel buffer: 64 frames (of at most 64 KiB each)."""
LARGE_BYTES = 5 * 1024 * 1024
"""5 MiB: more than a channel buffers (``BUFFER_FRAMES * FRAME_BYTES``), so backpressure must engage."""

SEED_RECORDS = [
    {"name": "cpu_usage", "value": 72},
    {"name": "memory_mb", "value": 2048},
    {"name": "disk_iops", "value": 340},
    {"name": "network_mbps", "value": 95},
    {"name": "latency_ms", "value": 12},
]
SEED_ONE_WAY_RESULT = {
    "label": "metrics-batch",
    "messages": [
        {"type": "stat", "key": "count", "value": 5},
        {"type": "stat", "key": "sum", "value": 2567},
        {"type": "stat", "key": "average", "value": 513.4},
        {"type": "stat", "key": "min", "value": 12},
        {"type": "stat", "key": "max", "value": 2048},
    ],
}
SEED_TEXT = "The quick brown fox jumps over the lazy dog and then runs around the park"
SEED_CHUNK_SIZE = 10

ONE_WAY = ("one_way_sync", "one_way_async")
BIDIRECTIONAL = ("bidirectional_sync", "bidirectional_async")


# --- helpers ---------------------------------------------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    """A fresh, private import of ``examples/<name>.py`` (its module-level client is not shared between tests)."""
    spec = importlib.util.spec_from_file_location(f"iii_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_way_result(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``data.processor`` must answer for ``records``, computed here independently."""
    values = [record["value"] for record in records]
    total = sum(values)
    stats = {"count": len(values), "sum": total, "average": total / len(values), "min": min(values)}
    stats["max"] = max(values)
    return {
        "label": "metrics-batch",
        "messages": [{"type": "stat", "key": key, "value": value} for key, value in stats.items()],
    }


def large_records() -> list[dict[str, Any]]:
    """Records whose JSON is a little over :data:`LARGE_BYTES`, with distinct values."""
    records = []
    size = 2  # the brackets
    index = 0
    while size <= LARGE_BYTES:
        record = {"name": f"sensor-{index:07d}", "value": (index * 7919) % 100_003 - 50_000}
        records.append(record)
        size += len(json.dumps(record)) + 2  # ", " between records
        index += 1
    return records


def large_text() -> str:
    """About :data:`LARGE_BYTES` of ASCII words separated by spaces and newlines."""
    words = []
    size = 0
    index = 0
    while size < LARGE_BYTES:
        word = f"word{index:07d}" + ("\n" if index % 16 == 15 else " ")
        words.append(word)
        size += len(word)
        index += 1
    return "".join(words)


def assert_bidirectional_result(result: dict[str, Any], text: str, chunk_size: int) -> None:
    """The coordinator's answer for ``text`` written in ``chunk_size``-byte writes, exactly.

    Our reader yields one chunk per frame and each write of at most 64 KiB is one frame, so the worker
    counts exactly one progress message per write, in order, followed by one ``complete`` message.
    """
    size = len(text.encode())
    words = text.split()
    writes = math.ceil(size / chunk_size)
    progress = [{"type": "progress", "chunks_received": count} for count in range(1, writes + 1)]
    assert len(result["messages"]) == writes + 1
    assert result["messages"][:writes] == progress
    assert result["messages"][writes] == {"type": "complete", "word_count": len(words), "byte_count": size}
    assert result["binaryResult"] == {"words": words[:5], "total": len(words)}
    assert result["workerResult"] == {"status": "done"}


class ExampleWorker(WorkerProcess):
    """``python examples/<name>.py URL --only ID`` as a worker process; stopped by SIGTERM (as a user's Ctrl-C)."""

    def __init__(self, engine: EngineProcess, example: str, function_id: str) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        env["PYTHONUNBUFFERED"] = "1"
        super().__init__(
            f"{example} --only {function_id}",
            [sys.executable, EXAMPLES / f"{example}.py", engine.url, "--only", function_id],
            cwd=ROOT,
            env=env,
        )

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM through our own handle, then the base class's wait (and kill after ``grace_s``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        return super().stop(grace_s)


def start_worker(stack: ExitStack, engine: EngineProcess, example: str, function_id: str) -> tuple[ExampleWorker, str]:
    """Start one example function in its own process, wait for READY; return it and its engine worker id."""
    worker = ExampleWorker(engine, example, function_id)
    stack.enter_context(worker)
    try:
        ready = worker.wait_ready(READY_TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text())}") from None
    [entry] = ready["functions"]
    assert entry["function_id"] == function_id
    worker_id: str = entry["worker_id"]
    return worker, worker_id


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def quiet_engine(engine: EngineProcess) -> Iterator[EngineProcess]:
    """The test's engine; afterwards its log must hold no WARNING or ERROR line (nothing was refused or failed)."""
    yield engine
    complaints = engine_complaints(engine)
    assert not complaints, "engine complained:\n" + "\n".join(complaints)


@pytest.fixture
def connect_example(quiet_engine: EngineProcess) -> Iterator[Callable[[str], tuple[ModuleType, III]]]:
    """``module, client = connect_example("one_way_sync")``: import an example and run its ``connect``
    against the test's engine (both functions on one worker); every client is shut down afterwards."""
    clients: list[III] = []

    def connect(name: str) -> tuple[ModuleType, III]:
        module = load_example(name)
        client: III = module.connect(quiet_engine.url)
        clients.append(client)
        return module, client

    yield connect
    for client in clients:
        client.shutdown()


@pytest.fixture
def caller(quiet_engine: EngineProcess) -> Iterator[III]:
    """A connection of our SDK that serves nothing and only makes calls."""
    client = register_worker(quiet_engine.url)
    yield client
    client.shutdown()


# --- one-way ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ONE_WAY)
def test_one_way_example_in_one_process(example: str, connect_example: Callable[[str], tuple[ModuleType, III]]) -> None:
    """Proves the seed's one-way example (sync handlers as written; and its async form) gives the seed's
    statistics when sender and processor are two functions of one worker: the sender's nested ``trigger``
    goes through the engine back into the same process, and the records through a channel."""
    module, client = connect_example(example)
    assert module.SAMPLE_RECORDS == SEED_RECORDS

    assert module.demo(client) == SEED_ONE_WAY_RESULT


@pytest.mark.parametrize(
    ("processor_example", "sender_example"),
    [("one_way_sync", "one_way_sync"), ("one_way_async", "one_way_async"), ("one_way_sync", "one_way_async")],
    ids=["sync", "async", "sync-processor-async-sender"],
)
def test_one_way_example_across_two_worker_processes(
    quiet_engine: EngineProcess, caller: III, processor_example: str, sender_example: str
) -> None:
    """Proves the one-way example works with ``data.processor`` and ``data.sender`` in two separate worker
    processes (started as ``python examples/X.py URL --only ID``) and the call made from a third
    connection: refs cross a process boundary inside a payload and the channel's bytes cross the engine.
    Both workers stop cleanly (exit code 0) on SIGTERM."""
    with ExitStack() as stack:
        processor, processor_id = start_worker(stack, quiet_engine, processor_example, "data.processor")
        sender, sender_id = start_worker(stack, quiet_engine, sender_example, "data.sender")
        assert processor_id != sender_id

        result = caller.trigger(
            {"function_id": "data.sender", "payload": {"records": SEED_RECORDS}, "timeout_ms": CALL_TIMEOUT_MS}
        )

        assert result == SEED_ONE_WAY_RESULT
        assert processor.stop() == 0, processor.output()
        assert sender.stop() == 0, sender.output()


@pytest.mark.parametrize("example", ONE_WAY)
def test_one_way_example_with_5_mib_of_records(
    example: str, connect_example: Callable[[str], tuple[ModuleType, III]]
) -> None:
    """Proves the one-way example moves 5 MiB of JSON records (80+ full frames, more than the channel's
    64-frame buffer) without deadlock and without losing a byte: every statistic over 100k+ distinct
    values is exact.

    In the sync form the sender writes everything before the processor exists, so the engine fills the
    channel's buffer, stops reading the writer's socket and the rest waits in socket buffers (this is
    the size limit the example's docstring states). In the async form the sender writes while the
    processor reads, each ``await write`` waiting whenever the reader is behind.
    """
    _, client = connect_example(example)
    records = large_records()
    assert len(json.dumps(records)) > BUFFER_FRAMES * FRAME_BYTES

    result = client.trigger(
        {"function_id": "data.sender", "payload": {"records": records}, "timeout_ms": CALL_TIMEOUT_MS}
    )

    assert result == one_way_result(records)


# --- bidirectional ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", BIDIRECTIONAL)
def test_bidirectional_example_in_one_process(
    example: str, connect_example: Callable[[str], tuple[ModuleType, III]]
) -> None:
    """Proves the seed's bidirectional example (async worker + sync coordinator with its input written
    before the trigger; and the all-async form) returns, for the seed's text in 10-byte writes, one
    progress message per write (1..8) then ``complete`` with 15 words and 73 bytes, the binary result
    with the first five words, and the worker's own result."""
    module, client = connect_example(example)
    assert (module.SAMPLE_TEXT, module.SAMPLE_CHUNK_SIZE) == (SEED_TEXT, SEED_CHUNK_SIZE)

    result = module.demo(client)

    assert result == {
        "messages": [{"type": "progress", "chunks_received": count} for count in range(1, 9)]
        + [{"type": "complete", "word_count": 15, "byte_count": 73}],
        "binaryResult": {"words": ["The", "quick", "brown", "fox", "jumps"], "total": 15},
        "workerResult": {"status": "done"},
    }


@pytest.mark.parametrize(
    ("worker_example", "coordinator_example"),
    [
        ("bidirectional_sync", "bidirectional_sync"),
        ("bidirectional_async", "bidirectional_async"),
        ("bidirectional_async", "bidirectional_sync"),
    ],
    ids=["sync", "async", "async-worker-sync-coordinator"],
)
def test_bidirectional_example_across_two_worker_processes(
    quiet_engine: EngineProcess, caller: III, worker_example: str, coordinator_example: str
) -> None:
    """Proves the bidirectional example works with ``stream.worker`` and ``stream.coordinator`` in two
    worker processes and the call from a third connection: two channels cross between the processes,
    one in each direction, carrying binary data and text messages in order."""
    with ExitStack() as stack:
        worker, worker_id = start_worker(stack, quiet_engine, worker_example, "stream.worker")
        coordinator, coordinator_id = start_worker(stack, quiet_engine, coordinator_example, "stream.coordinator")
        assert worker_id != coordinator_id

        result = caller.trigger(
            {
                "function_id": "stream.coordinator",
                "payload": {"text": SEED_TEXT, "chunkSize": SEED_CHUNK_SIZE},
                "timeout_ms": CALL_TIMEOUT_MS,
            }
        )

        assert_bidirectional_result(result, SEED_TEXT, SEED_CHUNK_SIZE)
        assert worker.stop() == 0, worker.output()
        assert coordinator.stop() == 0, coordinator.output()


@pytest.mark.parametrize(
    ("example", "chunk_size"),
    [("bidirectional_sync", FRAME_BYTES), ("bidirectional_async", 1000)],
    ids=["sync-64KiB-writes", "async-1000-byte-writes"],
)
def test_bidirectional_example_with_5_mib_of_text(
    example: str, chunk_size: int, connect_example: Callable[[str], tuple[ModuleType, III]]
) -> None:
    """Proves the bidirectional example moves 5 MiB of text (more than the input channel's 64-frame
    buffer) without deadlock, with every progress message (one per write: 81 or 5243) delivered in
    order before ``complete``, and exact word and byte counts.

    The sync coordinator writes all input before the trigger, so it uses full 64 KiB writes (the engine
    holds 64 of them, socket buffers the rest); the async coordinator writes 1000-byte chunks while the
    worker reads, so it is held back by backpressure thousands of times over, and reads the worker's
    progress messages concurrently.
    """
    _, client = connect_example(example)
    text = large_text()
    assert len(text) > BUFFER_FRAMES * FRAME_BYTES

    result = client.trigger(
        {
            "function_id": "stream.coordinator",
            "payload": {"text": text, "chunkSize": chunk_size},
            "timeout_ms": CALL_TIMEOUT_MS,
        }
    )

    assert_bidirectional_result(result, text, chunk_size)


# --- as scripts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ONE_WAY + BIDIRECTIONAL)
@pytest.mark.parametrize("url_from", ["argument", "III_URL"])
def test_example_runs_as_a_script_with_demo(quiet_engine: EngineProcess, example: str, url_from: str) -> None:
    """Proves ``python examples/<name>.py [URL] --demo`` connects (URL from the argument, or from
    ``III_URL`` when omitted), triggers the example once, prints the result as JSON and exits 0."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    argv: list[str | os.PathLike[str]] = [sys.executable, EXAMPLES / f"{example}.py", "--demo"]
    if url_from == "argument":
        argv.insert(2, quiet_engine.url)
        env.pop("III_URL", None)
    else:
        env["III_URL"] = quiet_engine.url

    code, out, err = run_once(argv, cwd=ROOT, env=env, timeout_s=SCRIPT_TIMEOUT_S)

    assert code == 0, f"exit code {code}\n--- stdout:\n{tail(out)}\n--- stderr:\n{tail(err)}"
    result = json.loads(out)
    if example in ONE_WAY:
        assert result == SEED_ONE_WAY_RESULT
    else:
        assert_bidirectional_result(result, SEED_TEXT, SEED_CHUNK_SIZE)


def test_large_inputs_are_what_they_claim() -> None:
    """The 5 MiB inputs really exceed a channel's buffer, and their values are not all alike."""
    records = large_records()
    assert LARGE_BYTES < len(json.dumps(records).encode()) < LARGE_BYTES + 100
    assert len({record["value"] for record in records}) > 100_000
    text = large_text()
    assert LARGE_BYTES <= len(text.encode()) < LARGE_BYTES + 100
    assert hashlib.sha256(text.encode()).hexdigest() != hashlib.sha256(text[::-1].encode()).hexdigest()
