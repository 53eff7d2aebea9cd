"""What the in-process module host gives a module beyond calls, without sockets: channels whose module ends are the
engine's own (backpressure, clean and broken ends, release), and calls a module stops waiting for."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from iii.engine.channels import Channel, FrameKind, Role
from iii.engine.config import EngineConfig
from iii.engine.core import Core
from iii.engine.module_host import InProcessHost
from iii.modules.api import ChannelBrokenError, InvocationError, ModuleChannel
from iii.protocol.messages import InvocationResult, RegisterFunction
from tests.engine.test_core import connect, raw

QUICK_S = 5.0


@pytest.fixture
def core() -> Core:
    return Core(EngineConfig(modules=""))


class FunctionEnd:
    """The function's end of a channel, as a socket would be: it keeps what it is sent and how it was closed."""

    write_paused = False

    def __init__(self) -> None:
        self.frames: list[tuple[FrameKind, bytes]] = []
        self.closed: tuple[int, str] | None = None
        self.paused = False

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        self.frames.append((kind, bytes(payload)))

    def close(self, code: int, reason: str) -> None:
        self.closed = self.closed or (code, reason)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def hung_up(self) -> bool:
        return False


def relay_of(core: Core, module_channel: ModuleChannel) -> Channel:
    ref = module_channel.reader_ref
    found = core.channels.find(ref["channel_id"], ref["access_key"])
    assert found is not None
    return found[0]


def connect_function(core: Core, module_channel: ModuleChannel, role: Role) -> tuple[Channel, FunctionEnd]:
    """Connect the function's end (the one the module handed out) as a socket presenting its key would."""
    relay, end = relay_of(core, module_channel), FunctionEnd()
    core.channels.take(relay, role)
    relay.attach(role, end)
    return relay, end


async def test_the_refs_open_the_two_ends_of_a_new_channel(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel(8)
    writer_ref, reader_ref = channel.writer_ref, channel.reader_ref
    assert (writer_ref["direction"], reader_ref["direction"]) == ("write", "read")
    assert writer_ref["channel_id"] == reader_ref["channel_id"] and writer_ref["access_key"] != reader_ref["access_key"]
    assert core.channels.find(writer_ref["channel_id"], writer_ref["access_key"]) == (
        relay_of(core, channel),
        Role.WRITER,
    )
    assert relay_of(core, channel).buffer_frames == 8


async def test_a_module_writer_is_held_back_until_its_reader_reads_and_ends_cleanly(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel(4)
    writer, reader = channel.writer(), channel.reader()
    sent = [bytes([index]) * 300_000 for index in range(4)]
    for data in sent:
        writer.write(data)
    draining = asyncio.ensure_future(writer.drain())
    await asyncio.sleep(0.01)
    assert not draining.done()  # the module reader holds 1 MiB unread: the writer waits
    received = []
    while sum(map(len, received)) < 1_200_000:
        chunk = await reader.read()
        assert isinstance(chunk, bytes) and len(chunk) <= 64 * 1024  # written in frames of 64 KiB at most
        received.append(chunk)
    await asyncio.wait_for(draining, QUICK_S)
    writer.close()
    assert await reader.read() is None
    assert await reader.read() is None  # and after the end
    assert b"".join(received) == b"".join(sent)
    assert len(core.channels) == 0  # a finished channel is forgotten


async def test_a_module_reader_gets_text_messages_in_stream_order_and_holds_the_writer_back(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel()
    reader = channel.reader()
    relay, function = connect_function(core, channel, Role.WRITER)
    relay.on_writer_frame(FrameKind.TEXT, b'{"type": "set_status", ', False)
    relay.on_writer_frame(FrameKind.CONTINUATION, b'"status_code": 201}', True)
    relay.on_writer_frame(FrameKind.BINARY, b"body", True)
    relay.on_writer_frame(FrameKind.TEXT, b"later", True)
    assert await reader.read() == '{"type": "set_status", "status_code": 201}'
    assert await reader.read() == b"body"
    assert await reader.read() == "later"
    for _ in range(20):  # 1.25 MiB the module does not read
        relay.on_writer_frame(FrameKind.BINARY, bytes(64 * 1024), True)
    assert function.paused
    while function.paused:
        assert isinstance(await reader.read(), bytes)
    relay.on_writer_end(1000, "done")
    while (item := await reader.read()) is not None:
        assert isinstance(item, bytes)


async def test_an_aborted_module_writer_breaks_the_stream_after_what_was_written(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel()
    writer = channel.writer()
    writer.write(b"partial")
    writer.abort("the client left")
    _, function = connect_function(core, channel, Role.READER)  # a reader that connects later gets both
    assert function.frames == [(FrameKind.BINARY, b"partial")]
    assert function.closed == (4001, "the client left")


async def test_a_broken_stream_is_an_error_for_the_module_reader_after_the_data(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel()
    reader = channel.reader()
    relay, _ = connect_function(core, channel, Role.WRITER)
    relay.on_writer_frame(FrameKind.BINARY, b"some", True)
    relay.on_writer_end(4001, "writer lost")
    assert await reader.read() == b"some"
    with pytest.raises(ChannelBrokenError) as broken:
        await reader.read()
    assert (broken.value.code, broken.value.reason) == (4001, "writer lost")


async def test_a_module_reader_that_closes_fails_the_writer_and_its_waiting_read(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel()
    reader = channel.reader()
    _, function = connect_function(core, channel, Role.WRITER)
    reading = asyncio.ensure_future(reader.read())
    await asyncio.sleep(0)
    reader.close("the HTTP client disconnected")
    with pytest.raises(ChannelBrokenError):
        await asyncio.wait_for(reading, QUICK_S)
    assert function.closed is not None and function.closed[0] == 4002
    assert "the HTTP client disconnected" in function.closed[1]
    assert len(core.channels) == 0


async def test_a_module_writer_learns_that_its_reader_went_away(core: Core) -> None:
    channel = await InProcessHost(core, "demo").create_channel(1)
    writer = channel.writer()
    relay, _ = connect_function(core, channel, Role.READER)
    writer.write(b"x")
    relay.on_reader_gone("the function closed it")
    await asyncio.wait_for(writer.drain(), QUICK_S)  # returns: the stream is over
    assert writer.cut
    writer.write(b"dropped")  # harmless


async def test_release_finishes_only_the_ends_no_one_connected(core: Core) -> None:
    host = InProcessHost(core, "demo")
    unread = await host.create_channel()
    writer = unread.writer()
    writer.write(b"never read")
    writer.close()
    unread.release("the call returned")  # its reader never connected: gone, with what waited for it
    unwritten = await host.create_channel()
    reader = unwritten.reader()
    unwritten.release("the call returned")
    with pytest.raises(ChannelBrokenError) as released:
        await reader.read()
    assert released.value.code == 4004  # a writer released unused: never a clean, empty stream
    in_use = await host.create_channel()
    in_use.reader()
    _, function = connect_function(core, in_use, Role.WRITER)
    in_use.release("the call returned")
    assert function.closed is None  # a connected end is its holder's business
    assert len(core.channels) == 1


async def test_a_module_that_stops_waiting_drops_its_call_and_metadata_goes_with_calls(core: Core) -> None:
    host = InProcessHost(core, "demo")
    owner = connect(core, "owner")
    core.on_worker_message(owner, RegisterFunction(id="svc::slow"))
    call = asyncio.ensure_future(host.invoke("svc::slow", {"n": 1}, metadata={"route": "/x"}))
    await asyncio.sleep(0)
    [delivery] = owner.of_type("invokefunction")
    assert delivery["metadata"] == {"route": "/x"}
    assert len(core.router) == 1
    call.cancel()
    await asyncio.sleep(0)  # the future's callbacks run on the loop's next iteration
    assert len(core.router) == 0  # dropped then, not at its deadline
    core.on_worker_message(owner, InvocationResult(invocation_id=delivery["invocation_id"], result=raw(1)))  # ignored


async def test_a_result_no_python_value_holds_is_a_deserialization_error(core: Core) -> None:
    host = InProcessHost(core, "demo")
    owner = connect(core, "owner")
    core.on_worker_message(owner, RegisterFunction(id="svc::odd"))
    call = asyncio.ensure_future(host.invoke("svc::odd", None))
    await asyncio.sleep(0)
    [delivery] = owner.of_type("invokefunction")
    core.on_worker_message(
        owner, InvocationResult(invocation_id=delivery["invocation_id"], result=msgspec.Raw(b"1e999"))
    )
    with pytest.raises(InvocationError) as caught:
        await asyncio.wait_for(call, QUICK_S)
    assert caught.value.code == "deserialization_error"
