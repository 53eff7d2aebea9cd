"""Channel relay through our engine: writer, engine and reader in three processes, lean picows clients.

The writer process connects to the worker socket ``/``, calls ``engine::channels::create`` and reports
the reader ref to the driver, which starts the reader process with it. Both connect to
``/ws/channels/…`` with their own ref's key; when both are connected the driver tells the writer to go.
The writer sends the payload in 64 KiB binary frames (each stamped with its index in the first 8 bytes),
pausing whenever picows calls ``pause_writing`` (so its memory stays bounded), and closes with 1000. The
reader counts bytes and checks the frame order until the engine closes its socket (it expects 1000).
Throughput is measured in the reader, from the first byte received to the last, as for the bare relay.

Run alone: ``python bench/channel_relay.py [--quick] [--verify] [--repeat N] [--no-baseline]``; by default
the bare TCP relay runs too (interleaved), since the target is the ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import tcp_relay
from _common import (
    CHUNK,
    GIB,
    MIB,
    Child,
    Commands,
    CpuWindow,
    Measurement,
    bench_main,
    check_stream,
    emit,
    engine_process,
    fmt_bytes,
    fmt_runs,
    median,
    peak_rss_bytes,
    rss_bytes,
    run_role,
)
from _lean_client import Ref, WorkerClient, channel_url, create_channel
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

CHILD_TIMEOUT_S = 240.0
SCRIPT = "channel_relay.py"
TARGET_RATIO = 0.85


@dataclass
class ChannelRun:
    """One channel relay run: what the reader measured, and what the engine spent."""

    bytes: int
    seconds: float
    cpu: CpuWindow
    engine_peak_growth: int
    """How far the engine's peak RSS rose above its RSS before the run (the largest of the engines' rises)."""
    writer_pauses: int
    verified: bool | None

    @property
    def gb_per_s(self) -> float:
        """Throughput in GB/s (10^9 bytes per second)."""
        return self.bytes / self.seconds / 1e9


def close_code_of(frame: WSFrame) -> int:
    """The close code of a CLOSE frame as an int."""
    code: int = frame.get_close_code().value
    return code


# --- roles (child processes) -----------------------------------------------------------------------------


class WriterEnd(WSListener):
    """The writer's channel socket: tracks picows flow control and the end of the connection."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.pauses = 0
        self.close_code: int | None = None
        self.disconnected: asyncio.Future[None] = loop.create_future()

    def pause_writing(self) -> None:
        self.can_write.clear()
        self.pauses += 1

    def resume_writing(self) -> None:
        self.can_write.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.close_code = close_code_of(frame)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.can_write.set()  # wake a paused sender so it notices
        if not self.disconnected.done():
            self.disconnected.set_result(None)


async def writer_main(url: str, total: int, verify: bool) -> None:
    """Create the channel, report the reader ref, connect the write end, send on ``go``, close with 1000."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    refs = await create_channel(client, buffer_size=64)
    emit("channel", reader=refs["reader"])
    transport, end = await ws_connect(WriterEnd, channel_url(url, **refs["writer"]))
    assert isinstance(end, WriterEnd)
    emit("connected")
    await commands.expect("go")
    chunk = bytearray(b"\xa5" * CHUNK)
    crc = 0
    for index in range(total // CHUNK):
        if not end.can_write.is_set():
            await end.can_write.wait()
        if transport.is_disconnected:
            raise ConnectionError(f"the engine dropped the writer after {index} frames (close {end.close_code})")
        struct.pack_into("<Q", chunk, 0, index)
        if verify:
            crc = zlib.crc32(chunk, crc)
        transport.send(WSMsgType.BINARY, chunk)
    transport.send_close(WSCloseCode.OK)
    await asyncio.wait_for(end.disconnected, 60)
    emit("done", pauses=end.pauses, close_code=end.close_code, crc=crc if verify else None)
    await commands.expect("exit")
    await client.close()


class ReaderEnd(WSListener):
    """The reader's channel socket: counts bytes and frames, checks order, notes the close code."""

    def __init__(self, verify: bool) -> None:
        self.verify = verify
        self.frames = 0
        self.bytes = 0
        self.out_of_order = 0
        self.crc = 0
        self.t_first = self.t_last = 0.0
        self.close_code: int | None = None
        self.disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.BINARY:
            now = time.perf_counter()
            if not self.frames:
                self.t_first = now
            payload = frame.get_payload_as_memoryview()
            if int.from_bytes(payload[:8], "little") != self.frames:
                self.out_of_order += 1
            if self.verify:
                self.crc = zlib.crc32(payload, self.crc)
            self.frames += 1
            self.bytes += len(payload)
            self.t_last = now
        elif msg_type is WSMsgType.CLOSE:
            self.close_code = close_code_of(frame)
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(None)


async def reader_main(url: str, ref: Ref, verify: bool) -> None:
    """Connect the read end and count until the engine closes it."""
    commands = Commands()
    _, end = await ws_connect(lambda: ReaderEnd(verify), channel_url(url, **ref))
    assert isinstance(end, ReaderEnd)
    emit("connected")
    await end.disconnected
    emit(
        "done",
        bytes=end.bytes,
        frames=end.frames,
        seconds=end.t_last - end.t_first,
        out_of_order=end.out_of_order,
        close_code=end.close_code,
        crc=end.crc if verify else None,
    )
    await commands.expect("exit")


# --- driver ----------------------------------------------------------------------------------------------


def run_once(total: int, verify: bool) -> ChannelRun:
    """One relay of ``total`` bytes through a fresh engine."""
    with engine_process() as engine:
        return run_ends(engine.url, engine.url, {"engine": engine.pid}, total, verify)


def run_ends(writer_url: str, reader_url: str, engines: Mapping[str, int], total: int, verify: bool) -> ChannelRun:
    """One relay of ``total`` bytes with a fresh writer on ``writer_url`` (which creates the channel there) and a
    fresh reader on ``reader_url`` (the same engine, or another engine of a cluster, which relays the end to the
    channel's engine). ``engines`` (name → pid) go into the CPU window; the RSS growth is the largest of theirs."""
    flag = ["--verify"] if verify else []
    with contextlib.ExitStack() as stack:
        args = ["--role", "writer", "--url", writer_url, "--bytes", str(total), *flag]
        writer = stack.enter_context(Child("channel-writer", SCRIPT, args, CHILD_TIMEOUT_S))
        reader_ref = writer.expect("channel")["reader"]
        args = ["--role", "reader", "--url", reader_url, "--ref", json.dumps(reader_ref), *flag]
        reader = stack.enter_context(Child("channel-reader", SCRIPT, args, CHILD_TIMEOUT_S))
        reader.expect("connected")
        writer.expect("connected")
        time.sleep(0.2)  # let the engine(s) finish attaching both ends
        rss_before = {name: rss_bytes(pid) for name, pid in engines.items()}
        window = CpuWindow({**engines, "writer": writer.pid, "reader": reader.pid})
        writer.send("go")
        got = reader.expect("done")
        window.stop()
        sent = writer.expect("done")
        growth = max(peak_rss_bytes(pid) - rss_before[name] for name, pid in engines.items())
        writer.send("exit")
        reader.send("exit")
    verified = check_stream("channel relay", total, got, sent, verify)
    return ChannelRun(
        bytes=got["bytes"],
        seconds=got["seconds"],
        cpu=window,
        engine_peak_growth=growth,
        writer_pauses=sent["pauses"],
        verified=verified,
    )


def channel_measurement(runs: list[ChannelRun], bare_gbps: float | None) -> Measurement:
    """The report row for the channel relay; the score is the ratio to the bare relay of the same session."""
    gbps = median([r.gb_per_s for r in runs])
    frames = runs[0].bytes / CHUNK
    cpu_us = median([r.cpu.used["engine"] for r in runs]) / frames * 1e6
    seconds = median([r.seconds for r in runs])
    shares = ", ".join(
        f"{name} {median([r.cpu.share(name) for r in runs]) * 100:.0f}%" for name in ("engine", "writer", "reader")
    )
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    peak_growth = max(r.engine_peak_growth for r in runs)
    verified = "; CRC32 verified" if runs[0].verified else ""
    details = (
        f"{fmt_bytes(runs[0].bytes)} per run, median of {len(runs)} runs [{fmt_runs([r.gb_per_s for r in runs])}] "
        f"GB/s over {seconds:.2f} s; engine CPU {cpu_us:.1f} µs per 64 KiB frame; "
        f"CPU (% of one core): {shares}, other processes {foreign:.0f}%; "
        f"engine peak RSS at most {fmt_bytes(peak_growth)} above its pre-run RSS; "
        f"writer paused by flow control {median([r.writer_pauses for r in runs]):.0f} times; "
        f"exact byte count, frame order and close code 1000 checked{verified}"
    )
    if bare_gbps is None:
        return Measurement(
            name="2. channel relay through the engine, 64 KiB frames",
            result=f"{gbps:.2f} GB/s",
            score=gbps,
            target=None,
            target_text=f"≥ {TARGET_RATIO:.2f}x bare relay",
            ratio_text="no bare relay in this session",
            details=details,
        )
    ratio = gbps / bare_gbps
    return Measurement(
        name="2. channel relay through the engine, 64 KiB frames",
        result=f"{gbps:.2f} GB/s",
        score=ratio,
        target=TARGET_RATIO,
        target_text=f"≥ {TARGET_RATIO:.2f}x bare relay",
        ratio_text=f"{ratio:.2f}x bare relay",
        details=details,
    )


def measure(quick: bool, verify: bool, repeat: int, baseline: bool = True) -> list[Measurement]:
    """Bare relay and channel relay runs, interleaved (so that both see the same machine load)."""
    total = 64 * MIB if quick else GIB
    bare_runs: list[tcp_relay.RelayRun] = []
    channel_runs: list[ChannelRun] = []
    for _ in range(repeat):
        if baseline:
            bare_runs.append(tcp_relay.run_once(total, verify))
        channel_runs.append(run_once(total, verify))
    rows = []
    bare_gbps = None
    if bare_runs:
        bare_row = tcp_relay.bare_measurement(bare_runs)
        bare_gbps = bare_row.score
        rows.append(bare_row)
    channel_row = channel_measurement(channel_runs, bare_gbps)
    if bare_runs:
        pairs = [c.gb_per_s / b.gb_per_s for b, c in zip(bare_runs, channel_runs, strict=True)]
        channel_row.details += f"; run-by-run ratios to the bare relay [{fmt_runs(pairs)}]"
    rows.append(channel_row)
    return rows


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-baseline", action="store_true", help="skip the bare TCP relay")

    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.verify, args.repeat, baseline=not args.no_baseline),
        {
            "writer": lambda args: run_role(lambda: writer_main(args.url, args.bytes, args.verify), CHILD_TIMEOUT_S),
            "reader": lambda args: run_role(lambda: reader_main(args.url, args.ref, args.verify), CHILD_TIMEOUT_S),
        },
        quick_help="64 MiB instead of 1 GiB, one run",
        verify_help="also check a CRC32 of the whole stream",
        default_repeat=5,
        options=options,
        role_options={"url": str, "bytes": int, "ref": json.loads},
    )


if __name__ == "__main__":
    main()
