"""The iii command, run for real (``python -m iii ...``) against a real engine and a worker serving functions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii import III, ChannelReader, ChannelWriter, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.observe_client import observing

MIB = 1024 * 1024
FLIP = bytes(b ^ 0x5A for b in range(256))
"""What pipe.flip does to every byte."""


@pytest.fixture(scope="module")
def served(shared_engine: EngineProcess) -> Iterator[III]:
    with register_worker(shared_engine.url, InitOptions(worker_name="cli-tests")) as client:

        def fail(data: Any) -> None:
            raise ValueError("no such widget")

        async def sha256(data: dict[str, Any]) -> dict[str, Any]:
            reader: ChannelReader = data["reader"]
            digest, size = hashlib.sha256(), 0
            async for chunk in reader:
                digest.update(chunk)
                size += len(chunk)
            return {"bytes": size, "sha256": digest.hexdigest(), "label": data.get("label")}

        async def copy(data: dict[str, Any]) -> dict[str, int]:
            source: ChannelReader = data["input"]
            sink: ChannelWriter = data["output"]
            size = 0
            async for chunk in source:
                await sink.write(chunk.translate(FLIP))  # proof that the bytes went through the function
                size += len(chunk)
            await sink.close_async()
            return {"bytes": size}

        def echo(data: Any) -> Any:  # the engine tells the callee who called; the caller need not see it
            return {k: v for k, v in data.items() if k != "_caller_worker_id"} if isinstance(data, dict) else data

        served = [
            client.register_function({"id": "cli.echo", "description": "returns its payload"}, echo),
            client.register_function("cli.fail", fail),
            client.register_function("cli.ignore", lambda data: {"ignored": True}),
            client.register_function("files.sha256", sha256),
            client.register_function("pipe.flip", copy),
        ]
        # The CLI calls them from its own connection, which the engine may read before this one's registrations.
        assert all(function.wait_active(10) for function in served)
        yield client


def iii(
    engine: EngineProcess, *args: str, stdin: bytes | None = None, url: bool = True
) -> subprocess.CompletedProcess[bytes]:
    env = {key: value for key, value in os.environ.items() if key not in ("III_URL", "III_TOKEN")}
    argv = [sys.executable, "-m", "iii", *args]
    if url:
        argv += ["--url", engine.url]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=120, env=env)


def test_call_prints_the_result_as_json(served: III, shared_engine: EngineProcess, tmp_path: Path) -> None:
    done = iii(shared_engine, "call", "cli.echo", "--data", '{"n": 1, "s": "ü"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"n": 1, "s": "ü"}
    payload = tmp_path / "payload.json"
    payload.write_text("[1, 2, 3]")
    from_file = iii(shared_engine, "call", "cli.echo", "--data", f"@{payload}")
    assert json.loads(from_file.stdout) == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("call", "cli.fail"), b"invocation_failed: no such widget"),
        (("call", "no.such.function"), b"function_not_found: Function no.such.function not found"),
        (("call", "cli.echo", "--data", "{nope"), b"not valid JSON"),
    ],
)
def test_failures_are_one_clear_line_and_exit_code_1(
    served: III, shared_engine: EngineProcess, args: tuple[str, ...], message: bytes
) -> None:
    done = iii(shared_engine, *args)
    assert done.returncode in (1, 2)  # 2: click's usage errors
    assert message in done.stderr
    assert b"Traceback" not in done.stderr


def test_an_unreachable_engine_and_a_wrong_token_are_clear_errors(tmp_path: Path) -> None:
    with EngineProcess(["--token", "right"]) as engine:
        refused = iii(engine, "functions", "--token", "wrong")
        assert refused.returncode == 1 and b"refused the token" in refused.stderr
        ok = iii(engine, "functions", "--token", "right")
        assert ok.returncode == 0, ok.stderr
        url = engine.url
    gone = subprocess.run([sys.executable, "-m", "iii", "workers", "--url", url], capture_output=True, timeout=60)
    assert gone.returncode == 1 and b"Traceback" not in gone.stderr
    assert f"could not connect to the iii engine at {url}: connection refused".encode() in gone.stderr
    malformed = subprocess.run(
        [sys.executable, "-m", "iii", "workers", "--url", url.removeprefix("ws://")], capture_output=True, timeout=60
    )
    assert malformed.returncode == 1 and b"must start with ws:// or wss://" in malformed.stderr


def test_listings_as_tables_and_as_json(served: III, shared_engine: EngineProcess) -> None:
    table = iii(shared_engine, "functions").stdout.decode()
    assert "FUNCTION" in table and "cli.echo" in table and "returns its payload" in table
    assert "engine::functions::list" not in table
    listed = json.loads(iii(shared_engine, "functions", "--json").stdout)
    assert {"cli.echo", "files.sha256"} <= {f["function_id"] for f in listed["functions"]}
    workers = iii(shared_engine, "workers").stdout.decode()
    assert "cli-tests" in workers and "iii-cli" not in workers
    assert [w["name"] for w in json.loads(iii(shared_engine, "workers", "--json").stdout)["workers"]] == ["cli-tests"]
    channel = served.create_channel()
    channel.writer.write(b"x" * 1000)
    channels = iii(shared_engine, "channels").stdout.decode()
    assert channel.reader_ref.channel_id in channels and "waiting" in channels
    as_json = json.loads(iii(shared_engine, "channels", "--json").stdout)["channels"]
    assert any(c["channel_id"] == channel.reader_ref.channel_id for c in as_json)
    assert channel.reader_ref.access_key not in channels  # never the keys


def test_triggers_lists_bindings_with_their_status_and_a_cron_jobs_next_run(engine: EngineProcess) -> None:
    with register_worker(engine.url, InitOptions(worker_name="cli-triggers")) as client:
        client.register_function("cli.nightly", lambda data: None)
        client.register_function("cli.on_news", lambda data: None)
        client.register_trigger(
            {"type": "cron", "function_id": "cli.nightly", "config": {"expression": "0 30 3 * * *"}}
        )
        client.register_trigger({"type": "subscribe", "function_id": "cli.on_news", "config": {"topic": "news"}})
        client.register_trigger({"type": "nobody-provides-this", "function_id": "cli.on_news", "config": {}})
        listed: dict[str, Any] = {}
        deadline = time.monotonic() + 10  # the bindings reach the engine after this client's messages
        while len(listed.get("registered_triggers", [])) < 3 and time.monotonic() < deadline:
            listed = json.loads(iii(engine, "triggers", "--json").stdout)
        rows = {row["trigger_type"]: row for row in listed["registered_triggers"]}
        assert rows["cron"]["status"] == "active" and rows["cron"]["details"]["next_run"].endswith("T03:30:00+00:00")
        assert rows["nobody-provides-this"]["status"] == "waiting"
        table = iii(engine, "triggers").stdout.decode()
        assert "NEXT RUN" in table and "cli.nightly" in table and "T03:30:00+00:00" in table
        assert "waiting" in table and "cli.on_news" in table


def test_queues_lists_the_queues_with_their_waiting_in_flight_and_dead_messages(engine: EngineProcess) -> None:
    with register_worker(engine.url, InitOptions(worker_name="cli-queues")) as client:
        client.register_function("cli.on_order", lambda data: None)
        client.register_trigger({"type": "durable:subscriber", "function_id": "cli.on_order", "config": {"topic": "o"}})
        listed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10  # the binding reaches the engine after this client's messages
        while not any(row["kind"] == "topic" for row in listed) and time.monotonic() < deadline:
            listed = json.loads(iii(engine, "queues", "--json").stdout)
        rows = {row["name"]: row for row in listed}
        assert rows["default"]["kind"] == "queue" and rows["default"]["consumer_count"] == 10
        assert (rows["o"]["kind"], rows["o"]["consumer_count"], rows["o"]["dlq_depth"]) == ("topic", 1, 0)
        table = iii(engine, "queues").stdout.decode()
        assert "WAITING" in table and "IN FLIGHT" in table and "DEAD" in table
        assert any(line.split()[:2] == ["default", "queue"] for line in table.splitlines())


def test_send_streams_100_mib_to_a_function(served: III, shared_engine: EngineProcess, tmp_path: Path) -> None:
    file = tmp_path / "big.bin"
    block = os.urandom(MIB)
    with file.open("wb") as out:
        for index in range(100):
            out.write(index.to_bytes(4, "big") + block[4:])
    done = iii(shared_engine, "send", str(file), "--to", "files.sha256", "--data", '{"label": "big"}', "--progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "bytes": 100 * MIB,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "label": "big",
    }
    assert b"100.0/100.0 MiB" in done.stderr  # the progress bar's last state: all of it, in binary units


def test_send_to_a_missing_function_fails_fast(served: III, shared_engine: EngineProcess, tmp_path: Path) -> None:
    file = tmp_path / "small.bin"
    file.write_bytes(b"x" * (40 * MIB))  # more than the channel holds without a reader
    done = iii(shared_engine, "send", str(file), "--to", "no.such.function")
    assert done.returncode == 1 and b"function_not_found" in done.stderr


def test_send_to_a_function_that_does_not_read_reports_it(
    served: III, shared_engine: EngineProcess, tmp_path: Path
) -> None:
    file = tmp_path / "unread.bin"
    file.write_bytes(b"u" * (40 * MIB))  # more than the channel holds while nobody reads
    done = iii(shared_engine, "send", str(file), "--to", "cli.ignore")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ignored": True}
    assert b"warning: cli.ignore returned after reading" in done.stderr


def test_pipe_round_trip(served: III, shared_engine: EngineProcess) -> None:
    data = os.urandom(20 * MIB + 5)
    done = iii(shared_engine, "pipe", "pipe.flip", stdin=data)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == hashlib.sha256(data.translate(FLIP)).hexdigest()
    assert done.stderr == b""  # no progress when stderr is not a terminal


def test_pipe_in_a_shell_pipeline(served: III, shared_engine: EngineProcess, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    out = tmp_path / "out.txt"
    command = f"cat {source} | {sys.executable} -m iii pipe pipe.flip --url {shared_engine.url} > {out}"
    subprocess.run(command, shell=True, check=True, timeout=120)
    assert out.read_bytes() == source.read_bytes().translate(FLIP)


def test_observers_lists_each_observer_with_its_state_filters_and_fires(engine: EngineProcess) -> None:
    source = {"function_id": "cli.charge", "filters": {"input.amount": {"$gte": 500}}}
    with register_worker(engine.url, InitOptions(worker_name="cli-observed")) as client:
        client.register_function("cli.charge", lambda data: {"charged": data["amount"]})
        client.register_function("cli.on_big_charge", lambda data: None)
        with observing(engine.url, "cli-watcher", "obs-1", source, "cli.on_big_charge"):
            client.trigger({"function_id": "cli.charge", "payload": {"amount": 750}})
            client.trigger({"function_id": "cli.charge", "payload": {"amount": 5}})
            listed = json.loads(iii(engine, "observers", "--json").stdout)
            [row] = listed["observers"]
            assert (row["source"]["function_id"], row["target"]["function_id"]) == ("cli.charge", "cli.on_big_charge")
            assert row["fires"] == 1 and row["worker_name"] == "cli-watcher"
            table = iii(engine, "observers").stdout.decode()
            assert "cli.charge" in table and "cli-watcher" in table and "active" in table and "$gte" in table
