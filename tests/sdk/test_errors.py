"""Clear errors: what a wrong URL, a server that is not an engine, a call after shutdown, a bad write and a refused
channel end raise, and how fast (the cause is known at once, so nobody waits out a timeout to learn it)."""

from __future__ import annotations

import array
import asyncio
import gc
import os
import socket
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from iii import (
    III,
    ChannelBrokenError,
    ChannelError,
    ChannelRefusedError,
    EngineUnavailableError,
    FunctionError,
    InitOptions,
    InvocationError,
    ReconnectionConfig,
    UsageError,
    register_worker,
)
from iii.testing import EngineProcess

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0)
QUICKLY_S = 2.0
"""A bound for "at once" with room for a loaded machine; the old behaviour took the whole connect timeout."""
LONG_TIMEOUT = InitOptions(connect_timeout_s=10.0, reconnection_config=FAST_RECONNECT)


@contextmanager
def elapsed() -> Iterator[list[float]]:
    """``with elapsed() as took: ...``; then ``took[0]`` is the block's duration in seconds."""
    took: list[float] = []
    start = time.monotonic()
    try:
        yield took
    finally:
        took.append(time.monotonic() - start)


@asynccontextmanager
async def tcp_server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A plain TCP server on a loopback port running ``answer`` per connection; yields its ``ws://`` URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def connect_in_thread(url: str, options: InitOptions) -> III:
    return await asyncio.to_thread(register_worker, url, options)


# --- engine URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:49134", "must start with ws:// or wss://"),
        ("localhost:49134", "did you mean 'ws://localhost:49134'"),
        ("tcp://127.0.0.1:49134", "must start with ws:// or wss://"),
        ("ws://", "names no host"),
        ("ws://127.0.0.1:port", "port that is not a number"),
    ],
)
def test_a_malformed_url_fails_at_once_naming_the_problem(url: str, problem: str) -> None:
    with elapsed() as took, pytest.raises(UsageError) as raised:
        register_worker(url, InitOptions(connect_timeout_s=3.0))
    assert took[0] < QUICKLY_S
    assert problem in str(raised.value) and repr(url) in str(raised.value)


def test_a_malformed_iii_url_is_named_as_iii_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_URL", "127.0.0.1:49134")
    with pytest.raises(UsageError, match=r"^III_URL must start with ws://"):
        III()


def test_http_urls_mean_ws_as_in_the_node_sdk(engine: EngineProcess) -> None:
    with register_worker(engine.url.replace("ws://", "http://"), InitOptions(connect_timeout_s=5.0)) as worker:
        assert worker.get_address() == engine.url
        channel = worker.create_channel()  # channel sockets use the converted URL too
        channel.writer.write(b"through")
        channel.writer.close()
        assert channel.reader.read_all() == b"through"


def test_a_path_that_answers_404_fails_at_once_and_is_not_retried(engine: EngineProcess) -> None:
    url = engine.url + "/not-the-worker-socket"
    with elapsed() as took, pytest.raises(EngineUnavailableError) as raised:
        register_worker(url, LONG_TIMEOUT)
    assert took[0] < QUICKLY_S
    assert f"no iii engine at {url}" in str(raised.value) and "HTTP 404 Not Found" in str(raised.value)


def test_the_engines_http_trigger_port_is_not_taken_for_the_engine(engine: EngineProcess) -> None:
    with elapsed() as took, pytest.raises(EngineUnavailableError, match=r"no iii engine at .*HTTP 404"):
        register_worker(engine.http_url, LONG_TIMEOUT)
    assert took[0] < QUICKLY_S


async def test_a_server_that_does_not_speak_websocket_fails_at_once() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b"220 smtp.example ESMTP ready\r\n\r\n")
        await writer.drain()

    async with tcp_server(banner) as url:
        with elapsed() as took, pytest.raises(EngineUnavailableError) as raised:
            await connect_in_thread(url, LONG_TIMEOUT)
    assert took[0] < QUICKLY_S
    assert f"no iii engine at {url}: the server there does not speak WebSocket" in str(raised.value)


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (b"", "the server closed the connection during the WebSocket handshake"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "the server answered HTTP 503"),
    ],
)
async def test_what_a_starting_engine_looks_like_is_retried_and_named(answer: bytes, cause: str) -> None:
    """An accept-then-close or a 503 is what an engine starting behind a proxy looks like: retried, and the
    timeout says what the last attempt met."""
    connections = 0

    async def starting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(4096)
        writer.write(answer)
        await writer.drain()

    async with tcp_server(starting) as url:
        options = InitOptions(connect_timeout_s=1.0, reconnection_config=FAST_RECONNECT)
        with pytest.raises(EngineUnavailableError) as raised:
            await connect_in_thread(url, options)
    assert f"could not connect to the iii engine at {url} within 1.0s: {cause}" in str(raised.value)
    assert connections >= 2


def test_connection_refused_is_retried_and_says_connection_refused() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailableError) as raised:
        register_worker(url, InitOptions(connect_timeout_s=0.5, reconnection_config=FAST_RECONNECT))
    assert f"could not connect to the iii engine at {url} within 0.5s: connection refused" in str(raised.value)

    client = III(url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        with pytest.raises(InvocationError) as waited:
            client.trigger({"function_id": "anything", "timeout_ms": 500})
        assert waited.value.code == "TIMEOUT" and "connection refused" in waited.value.message
        with EngineProcess(["--port", url.rsplit(":", 1)[1]]):  # the engine comes up: the client gets in
            client.wait_until_connected(10.0)
            assert client.get_connection_state() == "connected"
    finally:
        client.shutdown()


# --- after shutdown --------------------------------------------------------------------------------------


def test_calls_after_shutdown_raise_usage_error_without_warnings(engine: EngineProcess) -> None:
    client = register_worker(engine.url, InitOptions(connect_timeout_s=5.0))
    channel = client.create_channel()
    client.shutdown()
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("trigger", lambda: client.trigger({"function_id": "engine::functions::list"})),
        ("trigger_async", lambda: asyncio.run(client.trigger_async({"function_id": "engine::functions::list"}))),
        ("trigger in async code", lambda: asyncio.run(_await(client.trigger, {"function_id": "x"}))),
        ("create_channel", client.create_channel),
        ("create_channel_async", lambda: asyncio.run(client.create_channel_async())),
        ("register_function", lambda: client.register_function("late.fn", lambda data: data)),
        ("register_trigger", lambda: client.register_trigger({"type": "cron", "function_id": "late.fn"})),
        ("register_trigger_type", lambda: client.register_trigger_type({"id": "late"}, object())),  # type: ignore[arg-type]
        ("writer.write", lambda: channel.writer.write(b"late")),
        ("writer.send_message", lambda: channel.writer.send_message("late")),
        ("writer.stream.write", lambda: channel.writer.stream.write(b"late")),
        ("writer.close", channel.writer.close),
        ("reader.read_all", channel.reader.read_all),
        ("reader()", lambda: client.reader(channel.reader_ref)),
    ]
    gc.collect()  # earlier garbage (other tests' files, say) warns now, not in the block below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for what, call in calls:
            with pytest.raises(UsageError, match="this III client has been shut down"):
                call()
                pytest.fail(f"{what} after shutdown did not raise")
        gc.collect()  # an abandoned coroutine warns when it is collected
    assert [str(warning.message) for warning in caught if issubclass(warning.category, RuntimeWarning)] == []
    client.unregister_function("late.fn")  # withdrawing after shutdown has nothing to do, and does not fail
    channel.reader.close()
    client.shutdown()  # idempotent


async def _await(method: Callable[..., Any], *args: Any) -> Any:
    return await method(*args)


# --- writes ----------------------------------------------------------------------------------------------


def test_write_sends_str_as_utf8_and_any_buffer_and_refuses_other_types(engine: EngineProcess) -> None:
    with register_worker(engine.url, InitOptions(connect_timeout_s=5.0)) as client:
        channel = client.create_channel()
        for wrong in (5, {"a": 1}, None, 1.5):
            with pytest.raises(UsageError, match=rf"write\(\) takes bytes, .* not {type(wrong).__name__}"):
                channel.writer.write(wrong)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"stream\.write\(\) takes bytes, .* not int"):
            channel.writer.stream.write(7)  # type: ignore[arg-type]
        channel.writer.write("héllo ")
        channel.writer.write(bytearray(b"bytearray "))
        channel.writer.write(memoryview(b"memoryview "))
        channel.writer.write(array.array("B", b"array "))
        channel.writer.stream.write("stream ")
        channel.writer.stream.end("end")
        assert channel.reader.read_all() == "héllo bytearray memoryview array stream end".encode()


# --- refused channel ends --------------------------------------------------------------------------------


async def test_a_second_reader_or_writer_is_refused_not_broken(engine: EngineProcess) -> None:
    client = await connect_in_thread(engine.url, InitOptions(connect_timeout_s=5.0))
    try:
        channel = await client.create_channel_async()
        await channel.writer.write(b"first")
        first_reader = aiter(channel.reader)
        assert await anext(first_reader) == b"first"  # both ends are connected now

        with elapsed() as took, pytest.raises(ChannelRefusedError) as reader_refused:
            await client.reader(channel.reader_ref).read_all()
        assert took[0] < QUICKLY_S
        assert not isinstance(reader_refused.value, ChannelBrokenError)
        assert "read end of this channel is already taken" in str(reader_refused.value)
        assert reader_refused.value.code == 1008

        second_writer = client.writer(channel.writer_ref)
        await second_writer.write(b"intruder")
        with pytest.raises(ChannelRefusedError, match="write end of this channel is already taken"):
            await second_writer.close_async()

        await channel.writer.write(b" still")  # the refusals touched nothing of the real stream
        await channel.writer.close_async()
        assert [chunk async for chunk in first_reader] == [b" still"]
    finally:
        await asyncio.to_thread(client.shutdown)


def test_a_wrong_key_or_the_wrong_direction_is_refused(engine: EngineProcess) -> None:
    with register_worker(engine.url, InitOptions(connect_timeout_s=5.0)) as client:
        channel = client.create_channel()
        wrong_key = {"channel_id": channel.reader_ref.channel_id, "access_key": "wrong", "direction": "read"}
        with pytest.raises(ChannelRefusedError, match="does not exist or the key is wrong") as not_found:
            client.reader(wrong_key).read_all()
        assert not_found.value.status == 404

        writer_key_as_reader = {**channel.writer_ref.model_dump(), "direction": "read"}
        with pytest.raises(ChannelRefusedError, match="the key does not open it") as wrong_direction:
            client.reader(writer_key_as_reader).read_all()
        assert wrong_direction.value.status == 403
        assert not isinstance(wrong_direction.value, ChannelBrokenError)


async def test_a_channel_server_that_hangs_up_mid_handshake_fails_instead_of_hanging() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)

    async with tcp_server(hang_up) as url:
        client = III(url, InitOptions(reconnection_config=FAST_RECONNECT))
        try:
            reader = client.reader({"channel_id": "c", "access_key": "k", "direction": "read"})
            with pytest.raises(ChannelError, match="closed during the handshake"):
                await asyncio.wait_for(reader.read_all(), 5.0)
        finally:
            await asyncio.to_thread(client.shutdown)


def test_a_client_used_in_a_forked_child_says_so(engine: EngineProcess) -> None:
    """A fork has the client's objects but not its thread: calls raise UsageError instead of waiting forever,
    and the child exits without waiting on the parent's connection."""
    with register_worker(engine.url, InitOptions(worker_name="forking")) as client:
        client.register_function("fork.echo", lambda data: data)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what a call does, then leave at once
            try:
                client.trigger({"function_id": "fork.echo", "payload": 1})
                outcome = b"no error"
            except UsageError as exc:
                outcome = str(exc).encode()
            except BaseException as exc:
                outcome = repr(exc).encode()
            os.write(write_end, outcome)
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            outcome = reader.read()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert b"not to a fork" in outcome, outcome
        assert client.trigger({"function_id": "fork.echo", "payload": 2}) == 2  # the parent is unaffected


@pytest.mark.parametrize("style", ["def", "async def"])
def test_a_handler_answers_with_its_own_error_code(engine: EngineProcess, style: str) -> None:
    """``raise FunctionError(code, message)`` in a handler: the caller's InvocationError carries that code;
    any other exception stays ``invocation_failed``."""

    def plain(data: Any) -> None:
        if data["which"] == "coded":
            raise FunctionError("version_conflict", "expected version 3, found 4")
        raise KeyError("oops")

    async def coroutine(data: Any) -> None:
        plain(data)

    with register_worker(engine.url, InitOptions(worker_name="coded")) as client:
        handler = plain if style == "def" else coroutine
        assert client.register_function("coded.fail", handler).wait_active(10)
        with pytest.raises(InvocationError) as coded:
            client.trigger({"function_id": "coded.fail", "payload": {"which": "coded"}})
        assert (coded.value.code, coded.value.message) == ("version_conflict", "expected version 3, found 4")
        with pytest.raises(InvocationError) as other:
            client.trigger({"function_id": "coded.fail", "payload": {"which": "other"}})
        assert other.value.code == "invocation_failed"
