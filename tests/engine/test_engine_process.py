"""`iii engine` as a process: configuration, shutdown, tokens, and workers that die."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

from iii.protocol.refs import channel_url
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker, connect_raw

HANGING_WORKER = """
import asyncio, json, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        await ws.recv()  # workerregistered
        await ws.send(json.dumps({"type": "registerfunction", "id": "stuck"}))
        await ws.send(json.dumps({"type": "ping"}))
        await ws.recv()  # pong: the registration has been processed
        print("READY", flush=True)
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "invokefunction":
                print("GOT", flush=True)  # and never answer
asyncio.run(main())
"""


def start_hanging_worker(url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_WORKER, url], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "READY"
    return process


async def test_a_caller_learns_within_a_second_that_the_target_worker_died(engine: EngineProcess) -> None:
    target = start_hanging_worker(engine.url)
    try:
        caller = await RawWorker.connect(engine.url)
        invocation_id = await caller.invoke("stuck", {"work": 1})
        assert target.stdout is not None
        assert await asyncio.to_thread(target.stdout.readline) == "GOT\n"
        killed_at = time.monotonic()
        target.kill()
        answer = await caller.recv_type("invocationresult", timeout_s=1.0)
        elapsed = time.monotonic() - killed_at
    finally:
        target.kill()
        target.wait(10)
    assert answer["invocation_id"] == invocation_id
    assert answer["error"]["code"] == "invocation_stopped"
    assert elapsed < 1.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_fails_pending_calls_closes_sockets_and_exits_cleanly(signum: int) -> None:
    engine = EngineProcess().start()
    target = start_hanging_worker(engine.url)
    try:
        caller = await RawWorker.connect(engine.url)
        invocation_id = await caller.invoke("stuck", {})
        assert target.stdout is not None
        assert await asyncio.to_thread(target.stdout.readline) == "GOT\n"
        assert engine.process is not None
        engine.process.send_signal(signum)
        answer = await caller.recv_type("invocationresult", timeout_s=5)
        assert (answer["invocation_id"], answer["error"]["code"]) == (invocation_id, "invocation_stopped")
        with pytest.raises(websockets.ConnectionClosed):
            await caller.recv(timeout_s=5)
        assert await asyncio.to_thread(target.wait, 10) is not None  # the worker saw its socket close
        assert await asyncio.to_thread(engine.process.wait, 10) == 0
    finally:
        target.kill()
        target.wait(10)
        engine.stop()
    log = engine.log_text()
    assert "Traceback" not in log
    assert "iii engine stopped (1 calls stopped)" in log


async def test_with_a_token_nothing_gets_in_without_it() -> None:
    token = "s3cret-token-value"
    with EngineProcess(["--token", token]) as engine:
        refused = await connect_raw(engine.url)
        with pytest.raises(websockets.ConnectionClosed) as caught:
            await asyncio.wait_for(refused.recv(), 5)
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
        assert "unauthorized" in caught.value.rcvd.reason

        headers = {"Authorization": f"Bearer {token}"}
        worker = await RawWorker.connect(engine.url, additional_headers=headers)
        refs = await worker.result_of("engine::channels::create", {})
        wrong = await connect_raw(engine.url, additional_headers={"Authorization": "Bearer nope"})
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(wrong.recv(), 5)
        wrong_in_query = await connect_raw(engine.url + "/?token=nope")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(wrong_in_query.recv(), 5)
        # Where a client cannot send a header, the token may come in the URL.
        in_query = await RawWorker.connect(engine.url + f"/?token={token}")
        await in_query.ping()
        # The Node SDK's telemetry socket can carry no token: it is let in (what it sends is only stored), so it
        # does not reconnect forever.
        telemetry = await connect_raw(engine.url + "/otel")
        await telemetry.send(b"LOGS{}")
        await telemetry.close()
        assert telemetry.close_code == 1000
    log = engine.log_text()
    assert token not in log
    assert refs["reader"]["access_key"] not in log and refs["writer"]["access_key"] not in log


async def test_with_a_token_a_channel_end_is_opened_by_its_key_alone() -> None:
    """The Node, Rust and Go SDKs send no headers on channel sockets: the end's key is the capability."""
    token = "s3cret-token-value"
    with EngineProcess(["--token", token]) as engine:
        worker = await RawWorker.connect(engine.url, additional_headers={"Authorization": f"Bearer {token}"})
        refs = await worker.result_of("engine::channels::create", {})
        ends = {role: refs[role] for role in ("reader", "writer")}
        urls = {
            role: channel_url(engine.url, end["channel_id"], end["access_key"], end["direction"])
            for role, end in ends.items()
        }
        with pytest.raises(websockets.InvalidStatus) as status:
            await connect_raw(urls["reader"].replace(ends["reader"]["access_key"], "not-the-key"))
        assert status.value.response.status_code == 404
        reader = await connect_raw(urls["reader"])
        writer = await connect_raw(urls["writer"])
        await writer.send(b"through the engine")
        await writer.close()
        assert await asyncio.wait_for(reader.recv(), 5) == b"through the engine"
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(reader.recv(), 5)


def test_settings_come_from_flags_and_environment_with_clear_errors() -> None:
    with EngineProcess(["--log-level", "DEBUG"], env={"III_ENGINE_CHANNEL_TTL_S": "7.5"}) as engine:
        assert engine.url.startswith("ws://127.0.0.1:")
    bad_env = subprocess.run(
        [sys.executable, "-m", "iii", "engine", "--port", "0"],
        env={"III_ENGINE_CHANNEL_TTL_S": "soon", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad_env.returncode == 2
    assert "III_ENGINE_CHANNEL_TTL_S: expected float, got 'soon'" in bad_env.stderr
    bad_flag = subprocess.run(
        [sys.executable, "-m", "iii", "engine", "--port", "0", "--channel-ttl-s", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad_flag.returncode == 2
    assert "channel_ttl_s must be positive" in bad_flag.stderr


def test_a_port_in_use_is_a_clear_error(engine: EngineProcess) -> None:
    clash = subprocess.run(
        [sys.executable, "-m", "iii", "engine", "--port", str(engine.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert clash.returncode == 1
    assert f"cannot listen on 127.0.0.1:{engine.port}" in clash.stderr
    assert "Traceback" not in clash.stderr


def test_a_toml_file_sets_defaults_that_environment_and_flags_override(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text('channel-ttl-s = 9\nworker_max_channels = 5\ninvocation_timeout_s = 60\ntoken = "t0p"\n')
    env = {"III_ENGINE_WORKER_MAX_CHANNELS": "6"}
    with EngineProcess(["--config", str(config), "--invocation-timeout-s", "61"], env=env) as engine:
        log = engine.log_text()
    assert f"config loaded from {config}" in log
    settings = next(line for line in log.splitlines() if "settings:" in line)
    for expected in ("channel_ttl_s=9.0", "worker_max_channels=6", "invocation_timeout_s=61.0", "token=<set>"):
        assert expected in settings
    assert "t0p" not in log
    for content, message in [
        ("colour = 'blue'\n", "unknown setting 'colour'"),
        ("channel_ttl_s = 'soon'\n", "channel_ttl_s must be a float, got str"),
        ("channel_ttl_s = \n", "not valid TOML"),
    ]:
        config.write_text(content)
        refused = subprocess.run(
            [sys.executable, "-m", "iii", "engine", "--config", str(config)], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


async def test_json_logs_are_one_object_per_line_with_the_event_s_fields() -> None:
    with EngineProcess(["--log-format", "json"]) as engine:
        worker = await RawWorker.connect(engine.url)
        await worker.send({"type": "registerfunction", "id": "json.fn"})
        await worker.close()
        await asyncio.to_thread(engine.wait_for_log, "disconnected")
    events = [json.loads(line) for line in engine.log_lines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= event.keys() for event in events)
    left = next(e for e in events if "disconnected" in e["message"])
    assert (left["level"], left["worker"], left["functions"]) == ("INFO", worker.worker_id, "1")


async def test_a_worker_name_cannot_forge_log_lines() -> None:
    with EngineProcess() as engine:
        worker = await RawWorker.connect(engine.url)
        forged = "x\n2026-01-01 00:00:00,000 level=ERROR logger=iii.engine forged"
        register = {"type": "invokefunction", "function_id": "engine::workers::register", "data": {"name": forged}}
        await worker.send(register)
        await asyncio.to_thread(engine.wait_for_log, "registered")
        await worker.close()
    assert not any(line.startswith("2026-01-01") for line in engine.log_lines())
    assert any("name=x\\n2026-01-01" in line for line in engine.log_lines())
