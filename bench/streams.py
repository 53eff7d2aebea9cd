"""Stream subscriptions (issue 16): every change of a stream group fanned out to 1,000 subscriber sockets.

Each case runs in a fresh engine process (its subscription port on a free loopback port, ``--stream-port 0``;
the stream module's SQLite backend: ``synchronous=FULL``, group commit, so every set is durable before it is
answered and fanned out):

* a **setter** worker process (our SDK, ``register_worker``) first writes the group's items
  (``stream::set`` of ``ITEMS`` items), then makes the measured ``stream::set`` calls one at a time (``--window``
  N: N coroutines, each owning every N-th item, so an item's changes never overlap). Each set's data carries its
  sequence number ``seq`` and its call time;
* **subscriber** processes (picows on uvloop, the subscribers spread evenly over them, so that the clients
  are not the bottleneck) each open their share of the subscriber sockets on the engine's stream port, join the
  one group with ``{"type": "join", ...}`` and check the ``sync`` that answers (every item of the group). Every
  change message is stamped on arrival with the machine's monotonic clock (``CLOCK_MONOTONIC``, shared by every
  process on the machine, as the setter's call times are);
* **stalled** (the second case): one more subscriber, a raw socket in the driver with a small receive buffer,
  joins and then never reads. The engine must drop it (close code 1013, counted in
  ``iii_stream_subscribers_dropped_total``) and the other subscribers must get every update as before. So that
  this happens within the run, it also joins a group of its own, to which the setter writes large items before
  the measured sets, filling its socket's buffers (:func:`filler_items`), and the engine's subscriber queue
  (``[stream] subscriber_queue_messages``, in both cases) holds half the sets: it is dropped about halfway.

After a warm-up of a few sets (not measured) the setter makes the measured sets. Checked in every run: every
subscriber got every update exactly once, each item's updates in order (with ``--window 1``: all updates in
order), nothing else and no close; in the stalled case also that the engine dropped exactly that one
subscriber. Reported:

* **updates/s** and **messages delivered/s**: the measured updates (and updates times subscribers) over the time
  from the first measured set's call to the last subscriber's receipt of the last update;
* **fan-out latency** per update: the time from the set's call to the receipt by the last subscriber, and by the
  median subscriber; the median and the p99 of those over the updates. The set's own round trip (call to
  answer) is in the details;
* the CPU of the engine (per delivered message), of the setter and of the subscriber processes, and of other
  processes on the machine during the window.

The two cases run interleaved, each in a fresh engine (every other round the stalled case first).

Run alone: ``python bench/streams.py [--quick] [--repeat N] [--subscribers N] [--updates N] [--window N]
[--queue-messages N]``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import os
import socket
import struct
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
from _common import (
    Child,
    Commands,
    CpuWindow,
    Measurement,
    bench_main,
    emit,
    engine_process,
    fmt_runs,
    median,
    percentile,
    raise_nofile_limit,
    run_role,
    run_sdk_role,
    sdk_worker,
)
from engine_modules import metric_sums, metrics_url
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

CHILD_TIMEOUT_S: Final = 600.0
SCRIPT: Final = "streams.py"
STREAM: Final = "bench"
GROUP: Final = "fanout"
ITEMS: Final = 10
"""The group's items; update ``seq`` goes to item ``seq % ITEMS``."""
TEXT: Final = "a to-do item of a realistic size, for the benchmark of stream subscriptions"
"""Part of every item's data (each change message is then ~270 bytes)."""
FILLER_GROUP: Final = "filler"
"""A group only the stalled subscriber joins: see :data:`FILLER_ITEMS`."""
FILLER_BYTES: Final = 512 * 1024
"""The size of each filler item; see :func:`filler_items`."""
CLIENT_PROCESSES: Final = 2
CONNECT_BATCH: Final = 50
"""Sockets one subscriber process opens at once."""
REPORT_WAIT_S: Final = 60.0
"""How long a subscriber process waits for its last updates once the driver asks for its report."""
STALLED_RCVBUF: Final = 4096
"""The stalled subscriber's receive buffer (set before connecting; the kernel doubles it)."""
SUBSCRIBER_METRICS: Final = (
    "iii_stream_subscribers",
    "iii_stream_subscriptions",
    "iii_stream_subscriber_messages_total",
    "iii_stream_subscribers_dropped_total",
)


def filler_items() -> int:
    """How many filler items the setter writes before the measured sets, to the group only the stalled subscriber
    joins: 2 MiB more than the system's largest TCP send buffer (``net.ipv4.tcp_wmem``, 4 MiB by default).

    The engine's send buffer of a socket that is not read is 256 KiB (its ``SO_SNDBUF``, doubled by the kernel),
    which ~1,000 changes of the measured group would fill; older engines let it grow to the maximum (~11,000
    changes), which is what the filler is sized for. It fills the buffers at once, so that the stalled
    subscriber's queue then overflows within the measured sets, as it would later with changes alone. What the
    buffers do not take waits in its queue (under 6 MiB, within the queue's byte bound of 8 MiB).
    """
    try:
        largest = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        largest = 4 * 1024 * 1024
    return -(-(largest + 2 * 1024 * 1024) // FILLER_BYTES)


def item_id(seq: int) -> str:
    """The item that update ``seq`` changes."""
    return f"item-{seq % ITEMS}"


def join_message(subscription_id: str, group_id: str = GROUP) -> bytes:
    """A client's join of a group of the benchmark's stream (by default the measured one)."""
    data = {"subscriptionId": subscription_id, "streamName": STREAM, "groupId": group_id}
    return msgspec.json.encode({"type": "join", "data": data})


# --- subscriber processes (child side) ---------------------------------------------------------------------


class Item(msgspec.Struct):
    """An item of the measured group as a change carries it (only its ``seq``: the rest is skipped unread)."""

    seq: int


class Event(msgspec.Struct):
    """The ``event`` of a stream message (only what the subscribers look at): a change's item (a filler item is
    a string), or a sync's list."""

    type: str
    data: Item | list[Any] | str | None = None


class StreamMessage(msgspec.Struct):
    """An engine → subscriber message (``{"type": "stream", ..., "event": {...}}``)."""

    type: str
    event: Event


_decode_message = msgspec.json.Decoder(StreamMessage).decode


@dataclass
class Tally:
    """What one subscriber process's sockets saw; ``arrivals[socket * updates + seq]`` is the monotonic ns at
    which that socket received update ``seq`` (0: never)."""

    updates: int
    sockets: int
    arrivals: array.array[int] = field(init=False)
    complete: int = 0
    duplicates: int = 0
    misordered: int = 0
    """Updates that came after a later update of the same item."""
    out_of_sequence: int = 0
    """Updates that came after a later update of any item (a fault only with one set at a time)."""
    unexpected: list[str] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.arrivals = array.array("q", bytes(8 * self.updates * self.sockets))

    def note_unexpected(self, what: str) -> None:
        """Keep the first few surprises (the driver fails the run on any)."""
        if len(self.unexpected) < 5:
            self.unexpected.append(what)
        else:
            self.unexpected[-1] = f"... and more, last: {what}"


class Subscriber(WSListener):
    """One subscriber socket: joins the group, checks the sync, stamps and checks every change."""

    def __init__(self, tally: Tally, index: int) -> None:
        self.tally = tally
        self.base = index * tally.updates
        self.index = index
        self.received = 0
        self.last_seq = [-1] * ITEMS
        self.last_any = -1
        self.synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, join_message(f"sub-{self.index}"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = time.monotonic_ns()
        if frame.msg_type is WSMsgType.TEXT:
            message = _decode_message(frame.get_payload_as_memoryview())
            kind = message.event.type
            data = message.event.data
            if kind == "update" and isinstance(data, Item) and self.synced.done():
                self.on_update(now, data.seq)
            elif kind == "sync" and not self.synced.done():
                if not isinstance(data, list) or len(data) != ITEMS:
                    self.tally.note_unexpected(f"socket {self.index}: sync of {data!r}, expected {ITEMS} items")
                self.synced.set_result(None)
            else:
                self.tally.note_unexpected(
                    f"socket {self.index}: {kind} message {bytes(frame.get_payload_as_bytes())!r}"
                )
        elif frame.msg_type is WSMsgType.CLOSE:
            self.tally.closes.append(int(frame.get_close_code()))
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_update(self, now: int, seq: int) -> None:
        tally = self.tally
        if not 0 <= seq < tally.updates:
            tally.note_unexpected(f"socket {self.index}: update seq {seq}")
            return
        slot = self.base + seq
        if tally.arrivals[slot]:
            tally.duplicates += 1
            return
        tally.arrivals[slot] = now
        item = seq % ITEMS
        if seq < self.last_seq[item]:
            tally.misordered += 1
        if seq < self.last_any:
            tally.out_of_sequence += 1
        self.last_seq[item] = seq
        self.last_any = max(self.last_any, seq)
        self.received += 1
        if self.received == tally.updates:
            tally.complete += 1
            if tally.complete == tally.sockets:
                tally.done.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.synced.done():
            self.synced.set_exception(ConnectionError(f"socket {self.index} closed before its sync"))


async def subscribers_main(url: str, count: int, updates: int, out: str) -> None:
    """Open ``count`` subscriber sockets, join, report ``joined``; on ``report``, wait
    (bounded) for every update on every socket, write the arrival times to ``out`` and report ``done``."""
    commands = Commands()
    raise_nofile_limit(count + 256)
    tally = Tally(updates=updates, sockets=count)
    transports: list[WSTransport] = []
    for start in range(0, count, CONNECT_BATCH):

        async def open_one(index: int) -> None:
            transport, listener = await ws_connect(
                lambda: Subscriber(tally, index), url + "/", websocket_handshake_timeout=30
            )
            assert isinstance(listener, Subscriber)
            transports.append(transport)
            await asyncio.wait_for(listener.synced, 30)

        await asyncio.gather(*(open_one(index) for index in range(start, min(start + CONNECT_BATCH, count))))
    emit("joined", sockets=len(transports))
    await commands.expect("report")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(tally.done.wait(), REPORT_WAIT_S)
    await asyncio.to_thread(Path(out).write_bytes, tally.arrivals.tobytes())
    emit(
        "done",
        complete=tally.complete,
        duplicates=tally.duplicates,
        misordered=tally.misordered,
        out_of_sequence=tally.out_of_sequence,
        unexpected=tally.unexpected,
        closes=tally.closes,
    )
    await commands.expect("exit")
    for transport in transports:
        transport.disconnect()


# --- the setter (child side, our SDK) ------------------------------------------------------------------------


def set_request(seq: int) -> dict[str, Any]:
    """``stream::set`` of update ``seq`` (negative: the items' first values, written before anyone joins)."""
    item = item_id(seq)
    data = {"id": item, "seq": seq, "called_ns": time.monotonic_ns(), "text": TEXT}
    payload = {"stream_name": STREAM, "group_id": GROUP, "item_id": item, "data": data}
    return {"function_id": "stream::set", "payload": payload}


async def fill(client: Any, items: int, size: int) -> None:
    """Write ``items`` items of ``size`` characters to the filler group (only the stalled subscriber's)."""
    text = "f" * size
    for index in range(items):
        payload = {"stream_name": STREAM, "group_id": FILLER_GROUP, "item_id": f"filler-{index}", "data": text}
        await client.trigger_async({"function_id": "stream::set", "payload": payload})


def setter_main(url: str, updates: int, window: int) -> None:
    """Write the group's items, report ``ready``; on ``fill ITEMS SIZE``, write the filler group
    (:func:`fill`) and report ``filled``; on ``go``, make ``updates`` sets (``window`` coroutines, each
    owning the items ``≡ j mod window``) and report the call times and round trips (``done``)."""
    client = sdk_worker(url, "setter")
    try:

        async def prepare() -> None:
            for seq in range(-ITEMS, 0):
                await client.trigger_async(set_request(seq))

        asyncio.run(prepare())
        emit("ready")
        command = sys.stdin.readline().split()
        if command[:1] == ["fill"]:
            asyncio.run(fill(client, int(command[1]), int(command[2])))
            emit("filled")
            command = sys.stdin.readline().split()
        if command != ["go"]:
            return
        called = [0] * updates
        answered = [0] * updates

        async def one_lane(lane: int) -> None:
            for seq in range(lane, updates, window):
                request = set_request(seq)
                called[seq] = request["payload"]["data"]["called_ns"]
                await client.trigger_async(request)
                answered[seq] = time.monotonic_ns()

        async def run() -> None:
            await asyncio.gather(*(one_lane(lane) for lane in range(window)))

        asyncio.run(run())
        emit("done", called=called, answered=answered)
        sys.stdin.readline()  # exit
    finally:
        client.shutdown()


# --- the stalled subscriber (driver side) ---------------------------------------------------------------------


class StalledSubscriber:
    """A raw socket with a small receive buffer that opens the subscription socket, joins, and never reads.

    :meth:`outcome` reads afterwards what did arrive: the number of text messages, the close code (None if the
    engine reset the connection instead, or ended it without one).
    """

    def __init__(self, stream_url: str) -> None:
        address = urllib.parse.urlsplit(stream_url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: nothing past the head is read here
            if not chunk:
                raise RuntimeError(f"stalled subscriber: the engine closed during the handshake: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"stalled subscriber: no upgrade: {head.decode(errors='replace')}")
        self.sock.sendall(masked_text_frame(join_message("stalled")))
        self.sock.sendall(masked_text_frame(join_message("stalled-filler", FILLER_GROUP)))

    def outcome(self) -> tuple[int, int | None]:
        """(updates of the measured group received, close code or None), reading until the engine ends the
        connection: the updates are those the engine wrote before it dropped the subscriber."""
        data = bytearray()
        with contextlib.suppress(OSError):  # a reset, or a timeout: what arrived before it is what counts
            while chunk := self.sock.recv(1 << 16):
                data += chunk
        texts, close_code = parse_frames(bytes(data))
        updates = 0
        for text in texts:
            message = _decode_message(text)
            if message.event.type == "update" and isinstance(message.event.data, Item):
                updates += 1
        return updates, close_code

    def close(self) -> None:
        self.sock.close()


def masked_text_frame(payload: bytes) -> bytes:
    """One client → server text frame (FIN, masked, as a client must send)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


def parse_frames(data: bytes) -> tuple[list[bytes], int | None]:
    """(text frames' payloads, close code or None) in unmasked server → client frames, up to a truncated tail."""
    texts: list[bytes] = []
    close_code, offset = None, 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            if offset + 2 > len(data):
                break
            (length,) = struct.unpack_from("!H", data, offset)
            offset += 2
        elif length == 127:
            if offset + 8 > len(data):
                break
            (length,) = struct.unpack_from("!Q", data, offset)
            offset += 8
        if offset + length > len(data):
            break
        if opcode == 0x1:
            texts.append(data[offset : offset + length])
        elif opcode == 0x8 and length >= 2:
            (close_code,) = struct.unpack_from("!H", data, offset)
        offset += length
    return texts, close_code


# --- driver side ------------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    """How much one case moves."""

    subscribers: int
    updates: int
    warmup: int
    window: int
    queue_messages: int
    """The engine's ``[stream] subscriber_queue_messages`` in both cases."""


def sizes(quick: bool, subscribers: int | None, updates: int | None, window: int, queue_messages: int | None) -> Sizes:
    """The quick (smoke test) or the measuring sizes, with the command line's overrides. The subscriber queue
    holds half the sets (warm-up included) unless given: the stalled subscriber, its socket buffers full, is
    then dropped about halfway through, and both halves of the run are measured."""
    subscribers = subscribers or (100 if quick else 1000)
    updates = updates or (100 if quick else 1000)
    warmup = 10 if quick else 50
    return Sizes(subscribers, updates, warmup, window, queue_messages or (warmup + updates) // 2)


@dataclass
class Run:
    """One case's measurement."""

    stalled: bool
    updates: int
    subscribers: int
    seconds: float
    """First measured call to the last subscriber's receipt of the last update."""
    last_ms: list[float]
    """Per measured update: call to receipt by the last subscriber."""
    median_ms: list[float]
    """Per measured update: call to receipt by the median subscriber."""
    answer_ms: list[float]
    """Per measured update: the set's round trip (call to answer)."""
    cpu: CpuWindow
    stalled_updates: int = 0
    stalled_close: int | None = None
    engine_system_share: float = 0.0
    """The part of the engine's CPU time spent in the kernel (its sends, mostly)."""

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds

    @property
    def messages_per_s(self) -> float:
        return self.updates * self.subscribers / self.seconds


@contextlib.contextmanager
def temporary_directory() -> Iterator[Path]:
    """A directory for the subscriber processes' arrival files."""
    with tempfile.TemporaryDirectory(prefix="iii-bench-streams-") as name:
        yield Path(name)


def system_seconds(pid: int) -> float:
    """System (kernel) CPU time used so far by process ``pid`` (``/proc/PID/stat``, field 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def wait_for_metrics(engine: Any, wanted: dict[str, float], timeout_s: float = 60.0) -> dict[str, float]:
    """Poll ``/metrics`` until every named sum has reached its wanted value; the sums."""
    deadline = time.monotonic() + timeout_s
    while True:
        sums = metric_sums(metrics_url(engine), SUBSCRIBER_METRICS)
        if all(sums[name] >= value for name, value in wanted.items()):
            return sums
        if time.monotonic() > deadline:
            raise RuntimeError(f"streams: the engine's metrics did not reach {wanted} in time: {sums}")
        time.sleep(0.05)


def engine_args(size: Sizes, directory: Path) -> list[str]:
    """The engine's options: a config file with the subscriber queue's bound."""
    config = directory / "engine.toml"
    config.write_text(f"[stream]\nsubscriber_queue_messages = {size.queue_messages}\n")
    return ["--config", str(config)]


def run_case(size: Sizes, stalled: bool) -> Run:
    """One case in a fresh engine: setter, subscriber processes, optionally the stalled socket; checked."""
    total = size.warmup + size.updates
    raise_nofile_limit(size.subscribers + 1024)  # inherited by the engine
    with temporary_directory() as directory, engine_process(engine_args(size, directory)) as engine:
        stream_url = engine.stream_url
        with contextlib.ExitStack() as stack:
            setter_args = ["--role", "setter", "--url", engine.url, "--updates", str(total)]
            setter = stack.enter_context(
                Child("setter", SCRIPT, [*setter_args, "--window", str(size.window)], CHILD_TIMEOUT_S)
            )
            setter.expect("ready")
            shares = [
                size.subscribers // CLIENT_PROCESSES + (i < size.subscribers % CLIENT_PROCESSES)
                for i in range(CLIENT_PROCESSES)
            ]
            clients: list[Child] = []
            for index, count in enumerate(shares):
                args = ["--role", "subscribers", "--url", stream_url, "--count", str(count)]
                args += ["--updates", str(total), "--out", str(directory / f"arrivals-{index}")]
                clients.append(stack.enter_context(Child(f"subscribers-{index}", SCRIPT, args, CHILD_TIMEOUT_S)))
            for client in clients:
                client.expect("joined")
            stall = StalledSubscriber(stream_url) if stalled else None
            if stall is not None:
                stack.callback(stall.close)
            subscriptions = size.subscribers + (2 if stalled else 0)
            before = wait_for_metrics(engine, {"iii_stream_subscriptions": subscriptions})
            setter.send(f"fill {filler_items()} {FILLER_BYTES}")  # in both cases, so that they differ only in the stall
            setter.expect("filled")
            pids = {"engine": engine.pid, "setter": setter.pid, **{c.name: c.pid for c in clients}}
            cpu = CpuWindow(pids)
            engine_system = system_seconds(engine.pid)
            setter.send("go")
            sets = setter.expect("done")
            for client in clients:
                client.send("report")
            reports = [client.expect("done") for client in clients]
            cpu.stop()
            engine_system = system_seconds(engine.pid) - engine_system
            stalled_updates, stalled_close = 0, None
            after = metric_sums(metrics_url(engine), SUBSCRIBER_METRICS)  # a drop is counted when it happens
            if stall is not None:
                stalled_updates, stalled_close = stall.outcome()
            setter.send("exit")
            for client in clients:
                client.send("exit")
            arrivals = array.array("q")
            for index in range(len(clients)):
                arrivals.frombytes((directory / f"arrivals-{index}").read_bytes())
    check(size, stalled, reports, after[SUBSCRIBER_METRICS[3]] - before[SUBSCRIBER_METRICS[3]])
    run = summarize(size, stalled, sets, arrivals, cpu, stalled_updates, stalled_close)
    run.engine_system_share = engine_system / cpu.used["engine"] if cpu.used["engine"] else 0.0
    return run


def check(size: Sizes, stalled: bool, reports: Sequence[dict[str, Any]], dropped: float) -> None:
    """Raise ``RuntimeError`` unless every subscriber got every update once, in order, and only the stalled
    subscriber (if any) was dropped."""
    problems = []
    complete = sum(r["complete"] for r in reports)
    if complete != size.subscribers:
        problems.append(f"{size.subscribers - complete} of {size.subscribers} subscribers missed updates")
    for name in ("duplicates", "misordered", *(("out_of_sequence",) if size.window == 1 else ())):
        count = sum(r[name] for r in reports)
        if count:
            problems.append(f"{count} updates {name.replace('_', ' ')}")
    unexpected = [what for r in reports for what in r["unexpected"]]
    if unexpected:
        problems.append(f"unexpected messages: {unexpected}")
    closes = [code for r in reports for code in r["closes"]]
    if closes:
        problems.append(f"{len(closes)} subscribers closed by the engine, codes {sorted(set(closes))}")
    if dropped != (1 if stalled else 0):
        problems.append(f"the engine dropped {dropped:.0f} subscribers, expected {1 if stalled else 0}")
    if problems:
        case = "with a stalled subscriber" if stalled else "all subscribers reading"
        raise RuntimeError(f"streams ({case}): " + "; ".join(problems))


def summarize(
    size: Sizes,
    stalled: bool,
    sets: dict[str, Any],
    arrivals: array.array[int],
    cpu: CpuWindow,
    stalled_updates: int,
    stalled_close: int | None,
) -> Run:
    """The run's figures from the call times and every socket's arrival times (measured updates only)."""
    total = size.warmup + size.updates
    called, answered = sets["called"], sets["answered"]
    last_ms, median_ms, answer_ms = [], [], []
    last_arrival = 0
    for seq in range(size.warmup, total):
        times = sorted(arrivals[seq::total])  # socket k's arrival of seq is at k * total + seq
        last_arrival = max(last_arrival, times[-1])
        last_ms.append((times[-1] - called[seq]) / 1e6)
        median_ms.append((percentile(times, 0.5) - called[seq]) / 1e6)
        answer_ms.append((answered[seq] - called[seq]) / 1e6)
    return Run(
        stalled=stalled,
        updates=size.updates,
        subscribers=size.subscribers,
        seconds=(last_arrival - called[size.warmup]) / 1e9,
        last_ms=last_ms,
        median_ms=median_ms,
        answer_ms=answer_ms,
        cpu=cpu,
        stalled_updates=stalled_updates,
        stalled_close=stalled_close,
    )


def measure(
    quick: bool,
    repeat: int,
    subscribers: int | None = None,
    updates: int | None = None,
    window: int = 1,
    queue_messages: int | None = None,
) -> list[Measurement]:
    """``repeat`` rounds of both cases (each in a fresh engine; every other round the stalled case first)."""
    if ITEMS % window:
        raise ValueError(f"--window must divide {ITEMS} (each lane owns whole items)")
    size = sizes(quick, subscribers, updates, window, queue_messages)
    plain: list[Run] = []
    stalled: list[Run] = []
    for round_index in range(repeat):
        order = (True, False) if round_index % 2 else (False, True)
        for with_stall in order:
            run = run_case(size, with_stall)
            (stalled if with_stall else plain).append(run)
    return report(size, plain, stalled)


# --- report ---------------------------------------------------------------------------------------------------


def latency_text(runs: Sequence[Run]) -> str:
    """Median and p99 (over the updates) of the last and the median subscriber's latency, medians of the runs."""

    def stat(pick: str, fraction: float) -> float:
        return median([percentile(sorted(getattr(r, pick)), fraction) for r in runs])

    return (
        f"last subscriber {stat('last_ms', 0.5):.1f} / {stat('last_ms', 0.99):.1f} ms, "
        f"median subscriber {stat('median_ms', 0.5):.1f} / {stat('median_ms', 0.99):.1f} ms"
    )


def cpu_text(runs: Sequence[Run]) -> str:
    """Median CPU shares (percent of one core) of the case's processes and of foreign processes."""
    names = [name for name in runs[0].cpu.used if name != "driver"]
    parts = [f"{name} {median([r.cpu.share(name) for r in runs]) * 100:.0f}%" for name in names]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU (% of one core): " + ", ".join(parts) + f", other processes {foreign:.0f}%"


def details(runs: Sequence[Run], size: Sizes) -> str:
    """One case's details line."""
    engine_us = median([r.cpu.used["engine"] / (r.updates * r.subscribers) for r in runs]) * 1e6
    text = (
        f"{size.updates:,} sets (window {size.window}) after {size.warmup} to warm up, {size.subscribers:,} "
        f"subscribers in {CLIENT_PROCESSES} processes; median of {len(runs)} runs: updates/s "
        f"[{fmt_runs([r.updates_per_s for r in runs], 0)}], last subscriber p50 "
        f"[{fmt_runs([percentile(sorted(r.last_ms), 0.5) for r in runs], 1)}] ms, p99 "
        f"[{fmt_runs([percentile(sorted(r.last_ms), 0.99) for r in runs], 1)}] ms; the set's round trip "
        f"median {median([percentile(sorted(r.answer_ms), 0.5) for r in runs]):.2f} ms, p99 "
        f"{median([percentile(sorted(r.answer_ms), 0.99) for r in runs]):.2f} ms; engine CPU per delivered "
        f"message {engine_us:.1f} µs ({median([r.engine_system_share for r in runs]) * 100:.0f}% of it in the kernel); "
        f"{cpu_text(runs)}; every subscriber got every update once, "
        f"{'in order' if size.window == 1 else 'each item in order'}, no close"
    )
    stalled = [r for r in runs if r.stalled]
    if stalled:
        closes = sorted({str(r.stalled_close) if r.stalled_close is not None else "none (reset)" for r in stalled})
        text += (
            f"; the stalled subscriber was dropped in every run (iii_stream_subscribers_dropped_total +1), "
            f"close code seen by it: {', '.join(closes)}, having been sent "
            f"[{fmt_runs([r.stalled_updates for r in stalled], 0)}] of the {size.warmup + size.updates:,} "
            f"updates (warm-up included) before its queue of {size.queue_messages} overflowed"
        )
    return text


def report(size: Sizes, plain: Sequence[Run], stalled: Sequence[Run]) -> list[Measurement]:
    """Two rows: every subscriber reading, and the same with one stalled subscriber."""
    rows = []
    for runs, name in (
        (plain, f"13a. stream fan-out: {size.updates:,} sets to {size.subscribers:,} subscribers"),
        (stalled, "13b. the same with one stalled subscriber (dropped)"),
    ):
        updates_per_s = median([r.updates_per_s for r in runs])
        messages_per_s = median([r.messages_per_s for r in runs])
        rows.append(
            Measurement(
                name=name,
                result=(
                    f"{updates_per_s:,.0f} updates/s, {messages_per_s:,.0f} messages/s; latency p50 / p99: "
                    f"{latency_text(runs)}"
                ),
                score=updates_per_s,
                target=None,
                target_text="— (all delivered, in order)",
                ratio_text="reference"
                if runs is plain
                else f"{updates_per_s / median([r.updates_per_s for r in plain]):.2f}x 13a's updates/s",
                details=details(runs, size),
            )
        )
    return rows


def options(parser: argparse.ArgumentParser) -> None:
    """The driver's own options."""
    parser.add_argument("--subscribers", type=int, help="subscriber sockets (default 1,000; quick 100)")
    parser.add_argument("--updates", type=int, help="measured sets (default 1,000; quick 100)")
    parser.add_argument("--window", type=int, default=1, help="sets in flight (default 1: one at a time)")
    parser.add_argument("--queue-messages", type=int, help="the engine's [stream] subscriber_queue_messages")


def main() -> None:
    """Command line: the driver, or one child role."""
    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.repeat, args.subscribers, args.updates, args.window, args.queue_messages),
        {
            "subscribers": lambda args: run_role(
                lambda: subscribers_main(args.url, args.count, args.updates, args.out), CHILD_TIMEOUT_S
            ),
            "setter": lambda args: run_sdk_role(
                lambda: setter_main(args.url, args.updates, args.window), CHILD_TIMEOUT_S
            ),
        },
        quick_help="100 sets to 100 subscribers, one round",
        default_repeat=3,
        options=options,
        role_options={"url": str, "count": int, "out": str},  # --updates, --window: options()
    )


if __name__ == "__main__":
    main()
