"""The official Node SDK (npm ``iii-sdk@0.22.1``) works unchanged against our engine, alone and with Python.

Every function runs in its own worker process on an official SDK, so each call and every channel byte goes
through our engine: the seed's two Node examples with caller and callee in separate Node processes, and
channel exchanges between a Node worker and an official-Python (PyPI ``iii-sdk`` 0.25.0) worker in both
directions, with either side creating the channel and either end (reader or writer) handed over.

Workers print ``READY`` once the engine lists their functions (see ``node/worker.mjs`` and
``official_python_worker.py``); a test starts a caller only after every worker it needs is ready, and stops
every worker through its own process handle.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, run_once, tail

READY_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 120.0
SDK_ENV: dict[str, str] = {}
"""Extra environment of the SDK processes. Empty: the SDKs run with their defaults, telemetry included (each
opens ``<url>/otel``, which our engine accepts and discards); ``{"OTEL_ENABLED": "false"}`` turns it off."""

PYTHON_WORKER = Path(__file__).resolve().parent / "official_python_worker.py"
CHANNEL_BYTES = 6 * 64 * 1024 + 25
"""Six full 64 KiB frames and a short one: several frames per channel, more than one socket buffer's worth."""

pytestmark = pytest.mark.timeout(1200)  # includes building the environments on a cold machine


def pattern(length: int) -> bytes:
    """The deterministic bytes that ``roles.mjs`` and ``official_python_worker.py`` write."""
    return bytes((i * 31 + (i >> 10)) % 251 for i in range(length))


@pytest.fixture
def workers(engine: EngineProcess) -> Iterator[ExitStack]:
    """Every worker a test enters here is stopped (stdin closed, then killed after a grace period) at the end.

    Afterwards the engine's log must hold no warning or error: official SDKs never sent it anything it
    judged malformed, and nothing failed inside it, calls, channels and disconnects included.
    """
    with ExitStack() as stack:
        yield stack
    complaints = engine_complaints(engine)
    assert not complaints, "engine complained:\n" + "\n".join(complaints)


def node_executable() -> str:
    node = shutil.which("node")
    assert node is not None, "node must be on PATH for the Node SDK interop tests"
    return node


def start_node_worker(
    stack: ExitStack,
    scripts: Path,
    engine: EngineProcess,
    role: str,
    everyone: list[WorkerProcess],
    env: dict[str, str] | None = None,
) -> tuple[WorkerProcess, dict[str, Any]]:
    """Start ``node worker.mjs ROLE`` (added to ``everyone``) and wait for READY; return it and its READY record."""
    worker = stack.enter_context(
        WorkerProcess(
            f"node worker {role}",
            [node_executable(), "worker.mjs", role],
            cwd=scripts,
            env=child_env(engine, {**SDK_ENV, **(env or {})}),
        )
    )
    everyone.append(worker)
    return worker, wait_ready(worker, engine, everyone)


def start_python_worker(
    stack: ExitStack,
    official_python: PythonEnv,
    engine: EngineProcess,
    everyone: list[WorkerProcess],
    env: dict[str, str] | None = None,
) -> tuple[WorkerProcess, dict[str, Any]]:
    """Start the official-Python worker (``interop.python.*``, added to ``everyone``) and wait for READY."""
    worker = stack.enter_context(
        WorkerProcess(
            "official python worker",
            [official_python.python, PYTHON_WORKER],
            cwd=official_python.root,
            env=child_env(engine, {**SDK_ENV, **(env or {})}),
        )
    )
    everyone.append(worker)
    return worker, wait_ready(worker, engine, everyone)


def wait_ready(worker: WorkerProcess, engine: EngineProcess, everyone: list[WorkerProcess]) -> dict[str, Any]:
    try:
        return worker.wait_ready(READY_TIMEOUT_S)
    except AssertionError as exc:
        others = [process for process in everyone if process is not worker]
        raise AssertionError(f"{exc}\n{diagnostics(engine, others)}") from None


def diagnostics(engine: EngineProcess, processes: list[WorkerProcess]) -> str:
    """Everything worth reading when a call fails: each worker's output and the engine log's tail."""
    parts = [process.output() for process in processes]
    parts.append(f"--- engine log:\n{tail(engine.log_text(), 80)}")
    return "\n".join(parts)


def node_call(
    scripts: Path,
    engine: EngineProcess,
    function_id: str,
    payload: Any,
    processes: list[WorkerProcess],
    env: dict[str, str] | None = None,
) -> Any:
    """Trigger ``function_id`` from a one-shot Node caller process and return the result (request/response)."""
    timeout_ms = str(int(CALL_TIMEOUT_S * 1000) - 10_000)
    code, out, err = run_once(
        [node_executable(), "call.mjs", function_id],
        cwd=scripts,
        env=child_env(engine, {**SDK_ENV, **(env or {}), "III_CALL_TIMEOUT_MS": timeout_ms}),
        timeout_s=CALL_TIMEOUT_S,
        stdin_text=json.dumps(payload),
    )
    results = [line.removeprefix("RESULT ") for line in out.splitlines() if line.startswith("RESULT ")]
    if code != 0 or len(results) != 1:
        raise AssertionError(
            f"call of {function_id} failed (exit code {code})\n--- caller stdout:\n{tail(out)}\n"
            f"--- caller stderr:\n{tail(err)}\n{diagnostics(engine, processes)}"
        )
    return json.loads(results[0])


def owner(ready: dict[str, Any], function_id: str) -> str:
    """The engine's worker id for ``function_id`` as listed in a READY record."""
    [entry] = [entry for entry in ready["functions"] if entry["function_id"] == function_id]
    worker_id: str = entry["worker_id"]
    return worker_id


# ---- the seed's Node examples, each function in its own process ------------------------------------------------


def test_seed_one_way_example_across_two_node_processes(
    engine: EngineProcess, node_scripts: Path, workers: ExitStack
) -> None:
    """Proves the seed's one-way Node example runs on our engine with sender and processor in two processes.

    ``data.sender`` (process 1) creates a channel, ends its writer with the JSON records and triggers
    ``data.processor`` (process 2) with the reader ref; the processor reads the stream to its end.
    The statistics can only be right if every byte crossed the engine and the stream ended.
    """
    everyone: list[WorkerProcess] = []
    _, processor = start_node_worker(workers, node_scripts, engine, "data.processor", everyone)
    _, sender = start_node_worker(workers, node_scripts, engine, "data.sender", everyone)
    assert owner(processor, "data.processor") != owner(sender, "data.sender")

    records = [
        {"name": "cpu_usage", "value": 72},
        {"name": "memory_mb", "value": 2048},
        {"name": "disk_iops", "value": 340},
        {"name": "network_mbps", "value": 95},
        {"name": "latency_ms", "value": 12},
    ]
    result = node_call(node_scripts, engine, "data.sender", {"records": records}, everyone)

    assert result == {"label": "metrics-batch", "count": 5, "sum": 2567, "average": 513.4}


SEED_TEXT = "The quick brown fox jumps over the lazy dog and then runs around the park"
LARGE_TEXT = " ".join(f"word{i:05d}" for i in range(20_000)) + "\n"
"""About 200 KB in 1000-byte chunks: far more frames than a channel buffers, so the writer is paused."""


@pytest.mark.parametrize(("text", "chunk_size"), [(SEED_TEXT, 10), (LARGE_TEXT, 1000)], ids=["seed-text", "large-text"])
def test_seed_bidirectional_example_across_two_node_processes(
    engine: EngineProcess, node_scripts: Path, workers: ExitStack, text: str, chunk_size: int
) -> None:
    """Proves the seed's bidirectional Node example runs on our engine with coordinator and worker apart.

    ``stream.coordinator`` (process 1) writes the text in chunks into one channel (honouring ``drain``) and
    triggers ``stream.worker`` (process 2) with that channel's reader and a second channel's writer; the
    worker sends a progress text message per chunk read, a ``complete`` message and a binary JSON result,
    which the coordinator receives on the second channel. Checks the messages' order and content, the
    binary result and the worker's return value.
    """
    everyone: list[WorkerProcess] = []
    _, worker = start_node_worker(workers, node_scripts, engine, "stream.worker", everyone)
    _, coordinator = start_node_worker(workers, node_scripts, engine, "stream.coordinator", everyone)
    assert owner(worker, "stream.worker") != owner(coordinator, "stream.coordinator")

    result = node_call(node_scripts, engine, "stream.coordinator", {"text": text, "chunkSize": chunk_size}, everyone)

    words = text.split()
    size = len(text.encode())
    messages = result["messages"]
    progress = [message for message in messages if message["type"] == "progress"]
    # Node's Readable may join frames that arrive together, so a read can cover several written chunks.
    assert 1 <= len(progress) <= math.ceil(size / chunk_size)
    assert [message["chunks_received"] for message in progress] == list(range(1, len(progress) + 1))
    assert messages[: len(progress)] == progress, "progress messages come first"
    assert messages[len(progress) :] == [{"type": "complete", "word_count": len(words), "byte_count": size}]
    assert result["binaryResult"] == {"words": words[:5], "total": len(words)}
    assert result["workerResult"] == {"status": "done"}


# ---- Node <-> official Python channel exchange ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "peer", "writer_lang"),
    [
        ("interop.node.send_to", "interop.python.digest", "node"),
        ("interop.python.send_to", "interop.node.digest", "python"),
        ("interop.node.fetch_from", "interop.python.produce", "python"),
        ("interop.python.fetch_from", "interop.node.produce", "node"),
    ],
    ids=[
        "node-creates-writes-python-reads",
        "python-creates-writes-node-reads",
        "node-creates-reads-python-writes",
        "python-creates-reads-node-writes",
    ],
)
def test_channel_between_node_and_official_python(
    engine: EngineProcess,
    node_scripts: Path,
    official_python: PythonEnv,
    workers: ExitStack,
    entry: str,
    peer: str,
    writer_lang: str,
) -> None:
    """Proves channel refs and channel data pass between the official Node and Python SDKs through our engine.

    ``entry`` creates a channel in one SDK and triggers ``peer`` in the other SDK's process with one end
    (``send_to`` hands over the reader and writes; ``fetch_from`` hands over the writer and reads). The
    writer sends a text message, 384 KiB of deterministic bytes, another text message and closes; the
    reader reads to the end (Python: ``await reader.read_all()``; Node: ``readAll()``). Both sides report
    sha256 and length, which must equal those of the bytes the test computes itself, with the two text
    messages delivered in order around the data.
    """
    everyone: list[WorkerProcess] = []
    _, python_ready = start_python_worker(workers, official_python, engine, everyone)
    _, node_ready = start_node_worker(workers, node_scripts, engine, "interop.node", everyone)
    assert owner(python_ready, "interop.python.digest") != owner(node_ready, "interop.node.digest")

    result = node_call(node_scripts, engine, entry, {"target": peer, "size": CHANNEL_BYTES}, everyone)

    expected = {"sha256": hashlib.sha256(pattern(CHANNEL_BYTES)).hexdigest(), "length": CHANNEL_BYTES}
    assert result["written"] == expected
    assert result["read"] == {**expected, "messages": [f"start:{writer_lang}", f"end:{writer_lang}"]}


@pytest.mark.parametrize(
    ("entry", "peer"),
    [("interop.node.send_to", "interop.python.digest"), ("interop.python.fetch_from", "interop.node.produce")],
    ids=["node-creates-writes", "python-creates-node-writes"],
)
def test_node_channels_work_with_an_engine_token(
    node_scripts: Path, official_python: PythonEnv, entry: str, peer: str
) -> None:
    """Proves a Node worker streams through a channel of an engine started with ``--token``.

    The Node SDK sends the bearer token on its control socket only: its channel sockets carry no header, so
    the channel end's own key must open them, and its telemetry socket none either, so ``/otel`` must not
    answer 401 (the SDK would reconnect forever). The official Python SDK takes the token from
    ``III_TOKEN``. Before channel keys alone opened channel sockets, the Node writer failed with
    "Unexpected server response: 401".
    """
    token = "node-channel-token"
    sdk_env = {"III_TOKEN": token}
    everyone: list[WorkerProcess] = []
    with EngineProcess(["--token", token]) as engine, ExitStack() as stack:
        _, python_ready = start_python_worker(stack, official_python, engine, everyone, sdk_env)
        node_worker, node_ready = start_node_worker(stack, node_scripts, engine, "interop.node", everyone, sdk_env)
        assert owner(python_ready, "interop.python.digest") != owner(node_ready, "interop.node.digest")

        result = node_call(node_scripts, engine, entry, {"target": peer, "size": CHANNEL_BYTES}, everyone, sdk_env)

        expected = {"sha256": hashlib.sha256(pattern(CHANNEL_BYTES)).hexdigest(), "length": CHANNEL_BYTES}
        assert result["written"] == expected
        assert result["read"]["sha256"] == expected["sha256"]
        assert "Unexpected server response" not in node_worker.output(), node_worker.output()
        assert not engine_complaints(engine), "\n".join(engine_complaints(engine))
