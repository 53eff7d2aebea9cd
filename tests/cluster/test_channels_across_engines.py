"""Channels across two engines of a cluster (issue 15): a channel end opened at an engine that does not own the
channel is relayed to its owner, and behaves as if it had been opened there.

Two kinds of tests:

* the relay's contract, with raw WebSocket clients and two in-process engines on a real Redis: every outcome an
  end sees (data, text messages, close code and reason, refusals) is the same wherever each end is opened, and
  what only a relay can do wrong (an unknown owner, a stopped relaying engine) fails clearly and at once;
* streams between our SDK's workers on two engine processes: 1 GiB each way with matching sha256, a slow
  reader holding back a writer on the other engine with both engines' memory bounded, and SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from iii import ChannelBrokenError, ChannelError
from iii.channels import ChannelReader, ChannelWriter
from iii.engine import Engine
from iii.protocol import close_codes
from iii.protocol.refs import channel_url
from iii.testing import EngineProcess
from tests.cluster.channel_helpers import Cluster, masked_frame, pipelined, read_all, start_cluster
from tests.engine.wire import RawWorker, connect_raw
from tests.procfs import status_kib
from tests.redis_server import RedisServer

FRAME = 64 * 1024
MIB = 1024 * 1024
Where = Literal["A", "B"]
"""A is the engine that owns the channel (its creator's), B the other one."""
PLACES: list[Where] = ["A", "B"]
DEADLINE_S = 10.0
"""No outcome in these tests may take longer (a hang fails instead of stalling the run)."""


@dataclass
class Pair:
    """Two in-process engines of one cluster, and a worker on A that creates channels (so A owns them)."""

    a: Engine
    b: Engine
    creator: RawWorker

    def at(self, where: Where) -> Engine:
        return self.a if where == "A" else self.b

    async def create(self) -> tuple[dict[str, Any], dict[str, Any]]:
        refs = await self.creator.result_of("engine::channels::create", {})
        return refs["writer"], refs["reader"]

    async def open(self, where: Where, ref: dict[str, Any], **changes: str) -> ClientConnection:
        """A raw socket for ``ref`` (with ``changes`` to its fields) opened at engine ``where``."""
        ref = {**ref, **changes}
        url = channel_url(self.at(where).url, ref["channel_id"], ref["access_key"], ref["direction"])
        return await connect_raw(url)


async def start_pair(start_engine: Any, redis: RedisServer, **options: Any) -> Pair:
    """Engines A and B (with ``options``) in one cluster on ``redis``; they are stopped with ``start_engine``'s."""
    a = await start_engine(redis_url=redis.url, modules="", **options)
    b = await start_engine(redis_url=redis.url, modules="", **options)
    return Pair(a, b, await RawWorker.connect(a.url))


@pytest.fixture
async def pair(redis_server: RedisServer, start_engine: Any) -> AsyncIterator[Pair]:
    started = await start_pair(start_engine, redis_server)
    yield started
    await started.creator.close()


async def closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    """Wait for the engine to close ``ws`` (reading and dropping what it sends); its close code and reason."""
    async with asyncio.timeout(DEADLINE_S):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            received = closed.rcvd
    return (received.code, received.reason) if received is not None else (None, "")


# --- the relay's contract: the same outcomes wherever an end is opened -------------------------------------

WriterEnding = Literal["close", "error-close", "vanish"]


async def reader_sees(pair: Pair, writer_at: Where, reader_at: Where, ending: WriterEnding) -> tuple[Any, ...]:
    writer_ref, reader_ref = await pair.create()
    writer = await pair.open(writer_at, writer_ref)
    reader = await pair.open(reader_at, reader_ref)
    await writer.send(b"partial" * 1000)
    await writer.send("a note")
    if ending == "close":
        await writer.close()
    elif ending == "error-close":
        await writer.close(code=1011, reason="disk on fire")
    else:
        assert writer.transport is not None
        writer.transport.abort()
    async with asyncio.timeout(DEADLINE_S):
        return await read_all(reader)


@pytest.mark.parametrize("ending", ["close", "error-close", "vanish"])
async def test_the_reader_sees_the_same_stream_and_close_wherever_either_end_is(
    pair: Pair, ending: WriterEnding
) -> None:
    seen = {(w, r): await reader_sees(pair, w, r, ending) for w in PLACES for r in PLACES}
    local = seen["A", "A"]
    data, texts, code, reason = local
    assert data == b"partial" * 1000 and texts == ["a note"]
    if ending == "close":
        assert (code, reason) == (close_codes.NORMAL, "stream complete")
    elif ending == "error-close":
        assert code == close_codes.WRITER_LOST and "disk on fire" in reason
    else:
        assert code == close_codes.WRITER_LOST
    for placement, outcome in seen.items():
        assert outcome == local, f"writer at {placement[0]}, reader at {placement[1]}"


@pytest.mark.parametrize("how", ["close", "vanish"])
async def test_the_writer_sees_the_same_close_when_its_reader_leaves_wherever_either_end_is(
    pair: Pair, how: str
) -> None:
    seen = {}
    for writer_at, reader_at in itertools.product(PLACES, PLACES):
        writer_ref, reader_ref = await pair.create()
        writer = await pair.open(writer_at, writer_ref)
        reader = await pair.open(reader_at, reader_ref)
        await writer.send(b"hello")
        assert await asyncio.wait_for(reader.recv(), DEADLINE_S) == b"hello"  # both ends are connected
        if how == "close":
            await reader.close()
        else:
            assert reader.transport is not None
            reader.transport.abort()
        seen[writer_at, reader_at] = await closed_with(writer)
    assert seen["A", "A"][0] == close_codes.READER_LOST
    assert all(outcome == seen["A", "A"] for outcome in seen.values()), seen


@pytest.mark.parametrize(("writer_at", "reader_at"), [("A", "B"), ("B", "A"), ("B", "B")])
async def test_text_messages_cross_in_order_with_the_data(pair: Pair, writer_at: Where, reader_at: Where) -> None:
    writer_ref, reader_ref = await pair.create()
    reader = await pair.open(reader_at, reader_ref)
    writer = await pair.open(writer_at, writer_ref)
    sent: list[bytes | str] = []
    for index in range(200):
        sent.append(index.to_bytes(4, "big") * (FRAME // 4))
        if index % 7 == 0:
            sent.append(f"message {index}")
    for item in sent:
        await writer.send(item)
    await writer.close()
    received = []
    async with asyncio.timeout(DEADLINE_S):
        async for item in reader:
            received.append(item)
    assert received == sent
    assert reader.close_code == close_codes.NORMAL


@pytest.mark.parametrize(("writer_at", "reader_at"), [("A", "B"), ("B", "A"), ("B", "B")])
async def test_fragmented_messages_cross_whole(pair: Pair, writer_at: Where, reader_at: Where) -> None:
    writer_ref, reader_ref = await pair.create()
    reader = await pair.open(reader_at, reader_ref)
    writer = await pair.open(writer_at, writer_ref)
    await writer.send([b"first ", b"binary ", b"message"])  # one message in three frames
    await writer.send(["a text ", "in two"])
    await writer.send(b"last")
    await writer.close()
    assert await asyncio.wait_for(read_all(reader), DEADLINE_S) == (
        b"first binary messagelast",
        ["a text in two"],
        close_codes.NORMAL,
        "stream complete",
    )


@pytest.mark.parametrize("writer_at", PLACES)
async def test_frames_sent_right_behind_the_upgrade_request_are_not_lost(pair: Pair, writer_at: Where) -> None:
    # They arrive in the same read as the request, before the relay's link to the owner is open.
    writer_ref, reader_ref = await pair.create()
    reader = await pair.open("A", reader_ref)
    url = channel_url(pair.at(writer_at).url, writer_ref["channel_id"], writer_ref["access_key"], "write")
    early = masked_frame(0x2, b"early data") + masked_frame(0x1, b"a note") + masked_frame(0x8, struct.pack("!H", 1000))
    _, connection = await pipelined(url, early)
    try:
        outcome = await asyncio.wait_for(read_all(reader), DEADLINE_S)
    finally:
        connection.close()
    assert outcome == (b"early data", ["a note"], close_codes.NORMAL, "stream complete")


async def test_a_relayed_end_answers_pings(pair: Pair) -> None:
    _, reader_ref = await pair.create()
    reader = await pair.open("B", reader_ref)
    for _ in range(3):
        await asyncio.wait_for(await reader.ping(), DEADLINE_S)


async def test_an_oversized_frame_ends_the_stream_as_it_does_at_the_owner(
    redis_server: RedisServer, start_engine: Any
) -> None:
    limited = await start_pair(start_engine, redis_server, max_message_bytes=1024 * 1024)
    seen = {}
    for writer_at in PLACES:
        writer_ref, reader_ref = await limited.create()
        reader = await limited.open("B", reader_ref)
        writer = await limited.open(writer_at, writer_ref)
        await writer.send(b"fits")
        await writer.send(bytes(1024 * 1024 + 1))
        writer_code, _ = await closed_with(writer)
        data, _, code, reason = await asyncio.wait_for(read_all(reader), DEADLINE_S)
        seen[writer_at] = (writer_code, data, code, reason)
    assert seen["A"][:3] == (close_codes.MESSAGE_TOO_BIG, b"fits", close_codes.WRITER_LOST)
    assert seen["B"] == seen["A"]


async def test_an_expired_channel_tells_a_relayed_end_as_it_does_a_local_one(
    redis_server: RedisServer, start_engine: Any
) -> None:
    expiring = await start_pair(start_engine, redis_server, channel_ttl_s=0.3)
    seen = {}
    for reader_at in PLACES:
        _, reader_ref = await expiring.create()  # its writer never connects
        reader = await expiring.open(reader_at, reader_ref)
        seen[reader_at] = await asyncio.wait_for(read_all(reader), DEADLINE_S)
    assert seen["A"][2] == close_codes.PEER_NEVER_CONNECTED
    assert seen["B"] == seen["A"]


@pytest.mark.parametrize(("first_at", "second_at"), list(itertools.product(PLACES, PLACES)))
async def test_a_second_opener_of_a_taken_end_is_refused_wherever_it_comes_from(
    pair: Pair, first_at: Where, second_at: Where
) -> None:
    writer_ref, reader_ref = await pair.create()
    first = await pair.open(first_at, reader_ref)
    writer = await pair.open("A", writer_ref)
    await writer.send(b"one")  # the first reader is connected at the owner before the second comes
    assert await asyncio.wait_for(first.recv(), DEADLINE_S) == b"one"
    second = await pair.open(second_at, reader_ref)
    code, reason = await closed_with(second)
    assert code == close_codes.POLICY_VIOLATION and "already taken" in reason
    await writer.send(b"two")  # the first reader keeps its stream
    await writer.close()
    assert await asyncio.wait_for(read_all(first), DEADLINE_S) == (b"two", [], 1000, "stream complete")


async def test_a_wrong_key_or_an_unknown_channel_at_another_engine_is_refused_at_once(pair: Pair) -> None:
    writer_ref, reader_ref = await pair.create()
    owner_id = reader_ref["channel_id"].split(".", 1)[0]
    assert owner_id == pair.a.engine_id and owner_id != pair.b.engine_id
    wrong = [
        ({"access_key": "not-the-key"}, "Channel not found"),
        ({"channel_id": f"{owner_id}.00000000-0000-0000-0000-000000000000"}, "Channel not found"),
        ({"channel_id": "0123456789ab.00000000-0000-0000-0000-000000000000"}, "not in the cluster"),
        ({"direction": "write"}, "refused by the channel's engine"),  # the reader's key for the writer's end
    ]
    for changes, why in wrong:
        started = time.monotonic()
        refused = await pair.open("B", reader_ref, **changes)
        code, reason = await closed_with(refused)
        assert code == close_codes.POLICY_VIOLATION and why in reason, (changes, code, reason)
        assert time.monotonic() - started < 2.0, changes
    # Refusals lose nothing: the channel's real ends still work, through B too.
    writer = await pair.open("B", writer_ref)
    reader = await pair.open("B", reader_ref)
    await writer.send(b"intact")
    await writer.close()
    assert await asyncio.wait_for(read_all(reader), DEADLINE_S) == (b"intact", [], 1000, "stream complete")
    assert len(pair.b._relays) == 0  # the relays are gone with their sockets


@pytest.mark.parametrize("relayed", ["reader", "writer"])
async def test_a_slow_reader_holds_back_the_relay_which_buffers_little(pair: Pair, relayed: str) -> None:
    # The relay passes on a frame only into a socket with room; what it has buffered (the socket it writes to)
    # stays near its high-water mark. Seen before: one read from a socket took all the kernel held (its buffer
    # autotuned to tens of MiB) and pushed it into the other socket's buffer, paused or not.
    writer_ref, reader_ref = await pair.create()
    reader_at: Where = "B" if relayed == "reader" else "A"
    reader = await pair.open(reader_at, reader_ref)
    writer = await pair.open("B" if relayed == "writer" else "A", writer_ref)
    (relay,) = pair.b._relays  # what a relay holds is the point here

    def buffered() -> int:
        socket = relay.transport if relayed == "reader" else (relay.upstream.transport if relay.upstream else None)
        return socket.underlying_transport.get_write_buffer_size() if socket is not None else 0

    chunk, total = bytes(FRAME), 64 * MIB

    async def write() -> None:
        for _ in range(total // FRAME):
            await writer.send(chunk)
        await writer.close()

    writing = asyncio.ensure_future(write())
    received, most = 0, 0
    async with asyncio.timeout(30):
        async for data in reader:
            received += len(data)
            most = max(most, buffered())
            if received % MIB == 0:
                await asyncio.sleep(0.01)  # the pace of a slow consumer: about 100 MB/s at most
        await writing
    print(f"relayed {relayed}: at most {most / MIB:.2f} MiB buffered in the relay")
    assert received == total and reader.close_code == close_codes.NORMAL
    assert most <= 4 * MIB, most / MIB


@pytest.mark.parametrize("relayed", ["reader", "writer"])
async def test_stopping_the_relaying_engine_cuts_its_end_with_1012_and_the_other_end_is_told(
    pair: Pair, relayed: str
) -> None:
    writer_ref, reader_ref = await pair.create()
    writer = await pair.open("B" if relayed == "writer" else "A", writer_ref)
    reader = await pair.open("B" if relayed == "reader" else "A", reader_ref)
    await writer.send(b"some")
    assert await asyncio.wait_for(reader.recv(), DEADLINE_S) == b"some"
    await pair.b.stop()
    at_b, at_a = (reader, writer) if relayed == "reader" else (writer, reader)
    code, reason = await closed_with(at_b)
    assert code == close_codes.SERVICE_RESTART and "shutting down" in reason
    other_code, _ = await closed_with(at_a)
    assert other_code == (close_codes.READER_LOST if relayed == "reader" else close_codes.WRITER_LOST)


async def test_stopping_the_owner_cuts_relayed_ends_as_it_does_local_ones(pair: Pair) -> None:
    ends = []
    for writer_at, reader_at in [("A", "B"), ("B", "A"), ("B", "B")]:
        writer_ref, reader_ref = await pair.create()
        writer = await pair.open(writer_at, writer_ref)
        reader = await pair.open(reader_at, reader_ref)
        await writer.send(b"some")
        assert await asyncio.wait_for(reader.recv(), DEADLINE_S) == b"some"
        ends += [writer, reader]
    await pair.a.stop()
    for end in ends:
        code, reason = await closed_with(end)
        assert code == close_codes.SERVICE_RESTART and "shutting down" in reason


# --- streams between SDK workers on two engine processes ---------------------------------------------------

BLOCK = MIB
_PATTERNS = [random.Random(seed).randbytes(BLOCK) for seed in range(8)]


def block(index: int) -> bytes:
    """Block ``index`` of the test stream: pseudo-random, reproducible, and different from every other block
    (its index leads it), so a lost, repeated or reordered block changes the hash."""
    return index.to_bytes(8, "big") + _PATTERNS[index % len(_PATTERNS)][8:]


def prefix_sha256(size: int) -> str:
    """The sha256 of the stream's first ``size`` bytes."""
    digest = hashlib.sha256()
    for index in range(size // BLOCK):
        digest.update(block(index))
    digest.update(block(size // BLOCK)[: size % BLOCK])
    return digest.hexdigest()


@dataclass
class Progress:
    written: int = 0
    received: int = 0
    error: BaseException | None = None
    digest: Any = field(default_factory=hashlib.sha256)
    """Of what was written."""
    read_digest: Any = field(default_factory=hashlib.sha256)
    """Of what was read."""


def write_blocks(writer: ChannelWriter, progress: Progress, count: int | None) -> None:
    """Write ``count`` blocks (forever if None) from this thread, then close; a failure is kept in ``progress``."""
    try:
        for index in range(count) if count is not None else itertools.count():
            data = block(index)
            writer.write(data)  # blocks while the stream is held back
            progress.digest.update(data)
            progress.written += len(data)
        writer.close()
    except BaseException as error:  # kept for the test to look at
        progress.error = error


async def read_stream(reader: ChannelReader, progress: Progress, pause_s: float = 0.0) -> str:
    """Read to the end (``pause_s`` after each MiB: a slow reader); the sha256 of what arrived."""
    digest = progress.read_digest
    next_pause = MIB
    async for chunk in reader:
        digest.update(chunk)
        progress.received += len(chunk)
        if pause_s and progress.received >= next_pause:
            next_pause += MIB
            await asyncio.sleep(pause_s)  # the pace of a slow consumer
    return digest.hexdigest()


class MemoryWatch:
    """The largest resident memory of engine processes while a stream runs, over a baseline taken at start.

    Sampled often, and checked against the kernel's high-water mark (``VmHWM``) so a peak between samples is
    not missed."""

    def __init__(self, engines: dict[str, EngineProcess]) -> None:
        self.pids = {name: engine.pid for name, engine in engines.items()}
        self.baseline = {name: status_kib(pid, "VmRSS") for name, pid in self.pids.items()}
        self.hwm = {name: status_kib(pid, "VmHWM") for name, pid in self.pids.items()}
        self.peak = dict(self.baseline)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], status_kib(pid, "VmRSS"))

    def growth_mib(self) -> dict[str, float]:
        self.sample()
        for name, pid in self.pids.items():
            hwm = status_kib(pid, "VmHWM")
            if hwm > self.hwm[name]:  # a new high-water mark was set during the stream
                self.peak[name] = max(self.peak[name], hwm)
        return {name: (self.peak[name] - self.baseline[name]) / 1024 for name in self.pids}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster() as started:
        yield started


async def stream(
    writer: ChannelWriter, reader: ChannelReader, count: int, watch: MemoryWatch | None = None, pause_s: float = 0.0
) -> tuple[Progress, str, float, int]:
    """Stream ``count`` blocks from ``writer`` (in a thread) to ``reader`` (here); what the writer did, the reader's
    sha256, the seconds taken and the most data ever in flight (written, not yet read)."""
    progress = Progress()
    started = time.monotonic()
    writing = asyncio.ensure_future(asyncio.to_thread(write_blocks, writer, progress, count))
    in_flight = 0
    done = False

    async def sample() -> None:
        nonlocal in_flight
        while not done:
            in_flight = max(in_flight, progress.written - progress.received)
            if watch is not None:
                watch.sample()
            await asyncio.sleep(0.01)  # the sampling period

    sampling = asyncio.ensure_future(sample())
    try:
        received_sha = await read_stream(reader, progress, pause_s)
        await writing
    finally:
        done = True
        await sampling
    return progress, received_sha, time.monotonic() - started, in_flight


@pytest.mark.parametrize("writer_at", ["A", "B"])
async def test_1_gib_crosses_the_engines_intact_both_ways(cluster: Cluster, writer_at: Where) -> None:
    # The channel is A's; with its writer on A the relay carries the reader's end, else the writer's.
    channel = await cluster.client_a.create_channel_async()
    if writer_at == "A":
        writer, reader = channel.writer, cluster.client_b.reader(channel.reader_ref)
    else:
        writer, reader = cluster.client_b.writer(channel.writer_ref), channel.reader
    watch = MemoryWatch({"A": cluster.a, "B": cluster.b})
    count = 1024
    async with asyncio.timeout(120):
        progress, received_sha, took, _ = await stream(writer, reader, count, watch)
    growth = watch.growth_mib()
    print(
        f"1 GiB, writer on {writer_at}: {count * BLOCK / took / 1e6:.0f} MB/s; engines' RSS growth "
        + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in growth.items())
    )
    assert progress.error is None
    assert progress.received == progress.written == count * BLOCK
    assert received_sha == progress.digest.hexdigest() == prefix_sha256(count * BLOCK)
    assert all(mib < 32 for mib in growth.values()), growth


async def test_a_slow_reader_holds_back_the_writer_on_the_other_engine_with_memory_bounded(cluster: Cluster) -> None:
    channel = await cluster.client_a.create_channel_async()
    writer, reader = channel.writer, cluster.client_b.reader(channel.reader_ref)
    watch = MemoryWatch({"A": cluster.a, "B": cluster.b})
    count = 256
    async with asyncio.timeout(60):
        progress, received_sha, took, in_flight = await stream(writer, reader, count, watch, pause_s=0.02)
    growth = watch.growth_mib()
    print(
        f"slow reader: {count * BLOCK / took / 1e6:.0f} MB/s, at most {in_flight / MIB:.1f} MiB in flight; engines' "
        "RSS growth " + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in growth.items())
    )
    assert progress.error is None and received_sha == prefix_sha256(count * BLOCK)
    # The reader takes 1 MiB per 20 ms at most, the writer five times as much: unchecked, it would be some 200 MiB
    # ahead when it is done. Held back, it is ahead by what the buffers on the way hold: the sockets' (the kernel's
    # receive buffer of the reader's socket alone may grow to 32 MiB here), the SDKs' and the engines'.
    assert in_flight < 96 * MIB, in_flight / MIB
    assert all(mib < 32 for mib in growth.values()), growth


@pytest.fixture
def doomed() -> Iterator[Cluster]:
    """A cluster of its own, for a test that kills one of its engines."""
    with start_cluster() as started:
        yield started


async def start_streaming(
    writer: ChannelWriter, reader: ChannelReader
) -> tuple[Progress, asyncio.Future[None], asyncio.Future[str]]:
    """An endless stream, running; returns once 8 MiB have arrived."""
    progress = Progress()
    writing = asyncio.ensure_future(asyncio.to_thread(write_blocks, writer, progress, None))
    reading = asyncio.ensure_future(read_stream(reader, progress))
    async with asyncio.timeout(DEADLINE_S):
        while progress.received < 8 * MIB and not reading.done():  # noqa: ASYNC110 - progress has no event
            await asyncio.sleep(0.005)
    assert not reading.done(), reading
    return progress, writing, reading


@pytest.mark.parametrize("owner", ["writer's engine", "reader's engine"])
async def test_killing_the_writers_engine_mid_stream_never_looks_like_a_clean_end_to_the_reader(
    doomed: Cluster, owner: str
) -> None:
    creator = doomed.client_a if owner == "writer's engine" else doomed.client_b
    channel = await creator.create_channel_async()
    writer, reader = doomed.client_a.writer(channel.writer_ref), doomed.client_b.reader(channel.reader_ref)
    progress, writing, reading = await start_streaming(writer, reader)
    doomed.a.kill()
    with pytest.raises(ChannelBrokenError) as caught:
        await asyncio.wait_for(reading, DEADLINE_S)
    assert caught.value.code == close_codes.WRITER_LOST, caught.value
    assert caught.value.code != close_codes.NORMAL
    # What did arrive is the stream's start, intact.
    assert caught.value.received == progress.received > 0
    assert progress.read_digest.hexdigest() == prefix_sha256(progress.received)
    await asyncio.wait_for(writing, DEADLINE_S)
    assert isinstance(progress.error, ChannelError)


async def test_killing_the_owner_fails_a_writer_on_the_other_engine(doomed: Cluster) -> None:
    channel = await doomed.client_a.create_channel_async()
    writer, reader = doomed.client_b.writer(channel.writer_ref), channel.reader
    progress, writing, reading = await start_streaming(writer, reader)
    doomed.a.kill()
    await asyncio.wait_for(writing, DEADLINE_S)
    assert isinstance(progress.error, ChannelBrokenError), progress.error
    assert progress.error.code == close_codes.READER_LOST
    with pytest.raises(ChannelError):  # the reader was on A: its connection is gone
        await asyncio.wait_for(reading, DEADLINE_S)
