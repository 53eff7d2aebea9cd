"""A flood of workers' log records at the engine (issue 17): memory within its bounds, calls unaffected.

One fresh engine process with its default modules (``observability`` keeps the logs in its ring, bounded by
``[observability] logs_max_count`` and ``logs_max_bytes``), and:

* **senders**: ``SENDERS`` processes, each with one ``/otel`` connection, sending ``LOGS`` messages as the
  official Python SDK (PyPI ``iii-sdk`` 0.25.0) does: the messages are made by that SDK itself
  (``bench/_official_sdk_logs.py``: its ``Logger``, its batch processor with its default batch size of one record
  per message, its exporter's OTLP/JSON), byte for byte, one WebSocket binary frame each (client frames, masked
  with a zero key so that the payload is sent as made). Together they aim at ``RATE`` records/s for ``SECONDS``
  (paced every 10 ms). Like the SDK, whose connection queue holds 1,000 messages and drops past that, a sender
  drops (and counts) a message when 1,000 messages' bytes already wait in its socket's send buffer (so an engine
  that reads slower than the flood arrives holds no worker back);
* an unrelated **caller/worker pair** (the lean clients of ``bench/invocations.py``: worker B echoes, worker A
  calls with ``IN_FLIGHT`` calls in flight) measuring calls/s and the round trip's median and p99 for
  ``SECONDS`` before the flood, during it, and after it (the ring full, once the engine has taken in what the
  senders' sockets still held).

Reported per run: records/s sent by the senders (and dropped by them, as the SDK would) and accepted by the engine
(``iii_observability_messages_total{signal="logs",outcome="stored"}``: one record each) during the flood; the
engine's RSS before the flood, at its peak (sampled every 50 ms) and after; the logs ring's records, bytes and
dropped count (``/metrics``) and what ``engine::health::check`` says; calls/s and latencies before, during and
after, and their ratios.

Run alone: ``python bench/log_flood.py [--quick] [--repeat N] [--rate R] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from _common import (
    BENCH_DIR,
    MIB,
    Child,
    Commands,
    CpuWindow,
    Measurement,
    bench_main,
    emit,
    engine_process,
    fmt_bytes,
    fmt_runs,
    median,
    percentile,
    rss_bytes,
    run_role,
)

CHILD_TIMEOUT_S: Final = 300.0
SCRIPT: Final = "log_flood.py"
GENERATOR: Final = BENCH_DIR / "_official_sdk_logs.py"
SENDERS: Final = 10
RATE: Final = 100_000
"""Records/s offered by all senders together."""
SECONDS: Final = 10.0
IN_FLIGHT: Final = 16
SDK_QUEUE_MESSAGES: Final = 1_000
"""The official SDK's telemetry connection queue (``SharedEngineConnection.MAX_QUEUE``): past it, it drops."""
TICK_S: Final = 0.01
TARGET_CALL_RATIO: Final = 0.5
"""Calls/s during the flood at least this share of calls/s without it."""
MEMORY_TARGET_BOUNDS: Final = 2
"""The engine's RSS growth at most this many times ``logs_max_bytes``: the ring's records (their estimated memory,
``record_size``) plus the intake's queue, the sockets' buffers and the allocator's slack."""


# --- the messages ----------------------------------------------------------------------------------------


def make_messages(python: Path, count: int) -> list[bytes]:
    """``count`` log messages made by the official SDK (``_official_sdk_logs.py`` in its venv)."""
    with tempfile.TemporaryDirectory(prefix="iii-flood-") as tmp:
        out = Path(tmp) / "messages.bin"
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        subprocess.run(
            [str(python), str(GENERATOR), "--out", str(out), "--count", str(count)],
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
        )
        return read_messages(out)


def read_messages(path: Path) -> list[bytes]:
    """The length-prefixed messages of a file written by ``_official_sdk_logs.py``."""
    data = path.read_bytes()
    messages: list[bytes] = []
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        messages.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    if not messages or any(not m.startswith(b"LOGS") for m in messages):
        raise RuntimeError(f"{path}: no LOGS messages from the official SDK")
    return messages


def client_frame(message: bytes) -> bytes:
    """``message`` as one final binary WebSocket frame from a client (masked, with a zero key)."""
    size = len(message)
    if size < 126:
        header = bytes([0x82, 0x80 | size])
    elif size < 1 << 16:
        header = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + message


# --- sender (child) --------------------------------------------------------------------------------------


async def open_otel(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket connection to the engine's ``/otel`` (the handshake by hand: the frames are written raw)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        (
            f"GET /otel HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"/otel refused the WebSocket upgrade: {head[:80]!r}")
    return reader, writer


async def sender_main(url: str, messages_file: Path, rate: float, seconds: float, offset: int) -> None:
    """Connect, then on ``go`` send ``rate`` messages/s for ``seconds``, dropping past the SDK's queue; report."""
    commands = Commands()
    frames = [client_frame(m) for m in read_messages(messages_file)]
    frames = frames[offset % len(frames) :] + frames[: offset % len(frames)]
    queue_bytes = SDK_QUEUE_MESSAGES * max(len(f) for f in frames)
    reader, writer = await open_otel(url)
    drain = asyncio.get_running_loop().create_task(_discard(reader))
    emit("ready")
    await commands.expect("go")
    transport = writer.transport
    sent = dropped = nbytes = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        owed = int(rate * elapsed) - sent - dropped
        batch: list[bytes] = []
        room = queue_bytes - transport.get_write_buffer_size()
        for n in range(sent + dropped, sent + dropped + owed):
            frame = frames[n % len(frames)]
            if room >= len(frame):
                batch.append(frame)
                room -= len(frame)
            else:
                dropped += 1
        if batch:
            data = b"".join(batch)
            writer.write(data)
            sent += len(batch)
            nbytes += len(data)
        await asyncio.sleep(TICK_S)
    elapsed = time.perf_counter() - started
    emit("done", sent=sent, dropped=dropped, bytes=nbytes, seconds=elapsed, unsent=transport.get_write_buffer_size())
    await commands.expect("exit")
    drain.cancel()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and drop what the engine sends (nothing, or a close at shutdown)."""
    while await reader.read(65536):
        pass


# --- caller (child) --------------------------------------------------------------------------------------


async def caller_main(url: str, in_flight: int) -> None:
    """Wait for B's echo, warm up, then on ``measure S`` call for S seconds and report; ``health`` asks
    ``engine::health::check``."""
    from _lean_client import WorkerClient
    from invocations import Caller, wait_until_registered

    commands = Commands()
    client = await WorkerClient.connect(url)
    await wait_until_registered(client)
    caller = Caller(client, verify=False)
    await caller.run(2_000, in_flight)
    emit("warm")
    while (command := await commands.next()) != "exit":
        if command == "health":
            client.on_message = None  # the answer goes to call()
            emit("health", answer=await asyncio.wait_for(client.call("engine::health::check", {}), 30))
            client.on_message = caller.on_message
            continue
        seconds = float(command.removeprefix("measure "))
        elapsed = await timed_calls(caller, seconds, in_flight)
        latencies = sorted(caller.latencies_ns)
        emit(
            "measured",
            calls=caller.completed,
            seconds=elapsed,
            errors=len(caller.errors),
            first_error=caller.errors[0] if caller.errors else None,
            median_us=percentile(latencies, 0.5) / 1000,
            p99_us=percentile(latencies, 0.99) / 1000,
        )
    client.on_message = None
    await client.close()


async def timed_calls(caller: Any, seconds: float, in_flight: int) -> float:
    """Keep ``in_flight`` calls going for ``seconds`` (then let the last ones finish); the elapsed seconds."""
    caller.errors.clear()
    loop = asyncio.get_running_loop()

    def stop_sending() -> None:
        caller.total = caller.sent  # the outstanding calls finish the run

    timer = loop.call_later(seconds, stop_sending)
    try:
        return float(await caller.run(1 << 62, in_flight))
    finally:
        timer.cancel()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class Calls:
    """One measured window of the caller."""

    calls: int
    seconds: float
    median_us: float
    p99_us: float

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.calls / self.seconds


@dataclass
class FloodRun:
    """One run: the caller before, during and after the flood, what the senders sent, what the engine kept."""

    before: Calls
    during: Calls
    after: Calls
    sent: int
    sender_dropped: int
    sent_bytes: int
    flood_seconds: float
    stored_during: float
    stored_total: float
    drain_seconds: float
    rss_before: int
    rss_peak: int
    rss_after: int
    ring: dict[str, float]
    health_logs: dict[str, Any]
    cpu: CpuWindow


def scrape(url: str) -> dict[tuple[str, str], float]:
    """The engine's ``/metrics`` samples named ``iii_observability_*``: (name, its ``signal`` label) → value, summed
    over the other labels with ``outcome="stored"`` or none."""
    parts = urlsplit(url)
    with urllib.request.urlopen(f"http://{parts.hostname}:{parts.port}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("iii_observability"):
            continue
        sample, _, value = line.rpartition(" ")
        name, _, label_text = sample.partition("{")
        labels = dict(item.split("=", 1) for item in label_text.rstrip("}").split(",") if "=" in item)
        if labels.get("outcome", '"stored"') == '"stored"':
            key = (name, labels.get("signal", "").strip('"'))
            samples[key] = samples.get(key, 0.0) + float(value)
    return samples


STORED: Final = ("iii_observability_messages_total", "logs")
"""Log messages decoded and kept (each of one record here)."""


class RssSampler:
    """The highest RSS of a process, sampled every 50 ms on a thread until :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        """Stop sampling; the peak seen."""
        self._stop.set()
        self._thread.join(5)
        return max(self.peak, rss_bytes(self.pid))


def wait_until_drained(url: str, timeout_s: float = 60.0) -> float:
    """Wait until the engine has taken in what the senders' sockets still held (its stored count stays put for
    0.3 s); the seconds that took."""
    started = time.monotonic()
    last = scrape(url).get(STORED, 0.0)
    while time.monotonic() - started < timeout_s:
        time.sleep(0.3)
        now = scrape(url).get(STORED, 0.0)
        if now == last:
            break
        last = now
    return time.monotonic() - started


def measure_calls(caller: Child, seconds: float) -> Calls:
    """One measured window of the caller."""
    caller.send(f"measure {seconds}")
    done = caller.expect("measured")
    if done["errors"]:
        raise RuntimeError(f"log flood: {done['errors']} calls failed (first: {done['first_error']})")
    return Calls(done["calls"], done["seconds"], done["median_us"], done["p99_us"])


def run_once(messages_file: Path, rate: float, seconds: float, in_flight: int) -> FloodRun:
    """One run in a fresh engine (see the module docstring)."""
    with engine_process() as engine, contextlib.ExitStack() as stack:
        echo_args = ["--role", "echo", "--url", engine.url]
        echo = stack.enter_context(Child("worker-b", "invocations.py", echo_args, CHILD_TIMEOUT_S))
        echo.expect("registered")
        caller_args = ["--role", "caller", "--url", engine.url, "--in-flight", str(in_flight)]
        caller = stack.enter_context(Child("worker-a", SCRIPT, caller_args, CHILD_TIMEOUT_S))
        caller.expect("warm")
        senders = []
        for n in range(SENDERS):
            args = ["--role", "sender", "--url", engine.url, "--messages", str(messages_file)]
            args += ["--rate", str(rate / SENDERS), "--duration", str(seconds), "--offset", str(n * 97)]
            senders.append(stack.enter_context(Child(f"sender-{n}", SCRIPT, args, CHILD_TIMEOUT_S)))
        for sender in senders:
            sender.expect("ready")
        before = measure_calls(caller, seconds)
        metrics0 = scrape(engine.url)
        rss_before = rss_bytes(engine.pid)
        sampler = RssSampler(engine.pid)
        pids = {"engine": engine.pid, "A": caller.pid, "B": echo.pid}
        window = CpuWindow({**pids, **{f"sender-{n}": sender.pid for n, sender in enumerate(senders)}})
        for sender in senders:
            sender.send("go")
        during = measure_calls(caller, seconds)
        sent = [sender.expect("done") for sender in senders]
        window.stop()
        metrics1 = scrape(engine.url)
        drained = wait_until_drained(engine.url)
        after = measure_calls(caller, seconds)
        rss_peak = sampler.stop()
        metrics2 = scrape(engine.url)
        caller.send("health")
        health = caller.expect("health")["answer"]
        rss_after = rss_bytes(engine.pid)
        for child in (caller, echo, *senders):
            child.send("exit")
    flood_seconds = max(s["seconds"] for s in sent)
    return FloodRun(
        before=before,
        during=during,
        after=after,
        sent=sum(s["sent"] for s in sent),
        sender_dropped=sum(s["dropped"] for s in sent),
        sent_bytes=sum(s["bytes"] for s in sent),
        flood_seconds=flood_seconds,
        stored_during=metrics1.get(STORED, 0.0) - metrics0.get(STORED, 0.0),
        stored_total=metrics2.get(STORED, 0.0),
        drain_seconds=drained,
        rss_before=rss_before,
        rss_peak=rss_peak,
        rss_after=rss_after,
        ring={
            key: metrics2.get((f"iii_observability_{key}", "logs"), 0.0)
            for key in ("records", "bytes", "dropped_total")
        },
        health_logs=health["components"]["logs"]["details"],
        cpu=window,
    )


def measure(quick: bool, repeat: int, rate: float = RATE, seconds: float | None = None) -> list[Measurement]:
    """The flood's rows: memory (RSS growth against the ring's bound) and calls during the flood against before."""
    from sdk_relay import official_python

    seconds = seconds if seconds is not None else (1.0 if quick else SECONDS)
    runs: list[FloodRun] = []
    with tempfile.TemporaryDirectory(prefix="iii-flood-") as tmp:
        messages_file = Path(tmp) / "messages.bin"
        messages = make_messages(official_python(), 200 if quick else 1000)
        messages_file.write_bytes(b"".join(len(m).to_bytes(4, "big") + m for m in messages))
        for _ in range(repeat):
            runs.append(run_once(messages_file, rate, seconds, IN_FLIGHT))
    return rows(runs, rate, seconds, messages)


def rows(runs: Sequence[FloodRun], rate: float, seconds: float, messages: Sequence[bytes]) -> list[Measurement]:
    """The report's rows for ``runs`` (medians)."""
    from iii.modules.observability.settings import ObservabilitySettings

    settings = ObservabilitySettings()
    growth = median([r.rss_peak - r.rss_before for r in runs])
    ratio = median([r.during.rate / r.before.rate for r in runs])
    p50_ratio = median([r.during.median_us / r.before.median_us for r in runs])
    p99_ratio = median([r.during.p99_us / r.before.p99_us for r in runs])
    sent_rate = median([r.sent / r.flood_seconds for r in runs])
    accepted_rate = median([r.stored_during / r.flood_seconds for r in runs])
    last = runs[-1]
    before_p50, during_p50 = median([r.before.median_us for r in runs]), median([r.during.median_us for r in runs])
    before_p99, during_p99 = median([r.before.p99_us for r in runs]), median([r.during.p99_us for r in runs])

    def share(name: str) -> str:
        return f"{median([r.cpu.share(name) for r in runs]) * 100:.0f}"

    size = sum(len(m) for m in messages) / len(messages)
    bound = settings.logs_max_bytes
    memory_target = MEMORY_TARGET_BOUNDS * bound
    return [
        Measurement(
            name=f"15a. engine RSS growth under a log flood ({rate:,.0f} records/s offered, {seconds:.0f} s)",
            result=f"+{fmt_bytes(growth)} at the peak",
            score=growth / MIB,
            target=memory_target / MIB,
            target_text=f"≤ {MEMORY_TARGET_BOUNDS} x logs_max_bytes ({fmt_bytes(memory_target)})",
            higher_is_better=False,
            details=(
                f"{SENDERS} sender processes, LOGS messages as the official Python SDK makes them (1 record each, "
                f"mean {size:.0f} bytes); sent {sent_rate:,.0f} records/s (the senders dropped "
                f"{median([r.sender_dropped for r in runs]):,.0f} past the SDK's 1,000-message queue), engine "
                f"accepted {accepted_rate:,.0f} records/s during the flood, "
                f"{median([r.stored_total for r in runs]):,.0f} in all (what the senders' sockets still held taken "
                f"in {median([r.drain_seconds for r in runs]):.1f} s after the flood); RSS before "
                f"{fmt_bytes(median([r.rss_before for r in runs]))}, peak "
                f"{fmt_bytes(median([r.rss_peak for r in runs]))}, after "
                f"{fmt_bytes(median([r.rss_after for r in runs]))}; logs ring (last run): "
                f"{last.ring['records']:,.0f} records, {fmt_bytes(last.ring['bytes'])} counted "
                f"(bounds {settings.logs_max_count:,} records, {fmt_bytes(bound)}), "
                f"{last.ring['dropped_total']:,.0f} oldest dropped and counted; engine::health::check logs: "
                f"{last.health_logs}; median of {len(runs)} run(s): growth "
                f"[{fmt_runs([(r.rss_peak - r.rss_before) / MIB for r in runs], 1)}] MiB"
            ),
        ),
        Measurement(
            name="15b. calls/s during the log flood ÷ calls/s without it",
            result=f"{ratio:.2f}x ({median([r.during.rate for r in runs]):,.0f} vs "
            f"{median([r.before.rate for r in runs]):,.0f} calls/s)",
            score=ratio,
            target=TARGET_CALL_RATIO,
            target_text=f"≥ {TARGET_CALL_RATIO:.2f}x",
            details=(
                f"{IN_FLIGHT} calls in flight (lean caller and echo worker of bench/invocations.py), {seconds:.0f} s "
                f"before, during and after the flood; runs [{fmt_runs([r.during.rate / r.before.rate for r in runs])}]"
                f"x; round trip median {before_p50:.0f} → {during_p50:.0f} µs "
                f"({p50_ratio:.2f}x), p99 {before_p99:.0f} → {during_p99:.0f} µs ({p99_ratio:.2f}x); after the flood "
                f"(ring full, once taken in) {median([r.after.rate for r in runs]):,.0f} calls/s; CPU during the "
                f"flood (% of one core): engine {share('engine')}%, A {share('A')}%, B {share('B')}%, the senders "
                f"{median([senders_share(r.cpu) for r in runs]) * 100:.0f}%, other processes "
                f"{median([r.cpu.foreign_share for r in runs]) * 100:.0f}% (the machine's other work, and the kernel's "
                f"for the loopback traffic)"
            ),
        ),
    ]


def senders_share(window: CpuWindow) -> float:
    """The senders' CPU over a window, as a fraction of one core."""
    return sum(window.share(name) for name in window.used if name.startswith("sender-"))


def report(args: argparse.Namespace) -> list[Measurement]:
    """The driver: the rows of ``--repeat`` runs."""
    return measure(args.quick, args.repeat, args.rate, args.seconds)


def options(parser: argparse.ArgumentParser) -> None:
    """The driver's options beyond ``--quick`` and ``--repeat``."""
    parser.add_argument("--rate", type=float, default=RATE, help="records/s offered by all senders together")
    parser.add_argument("--seconds", type=float, default=None, help=f"the flood's length (default {SECONDS:.0f})")


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""
    bench_main(
        __doc__ or "",
        report,
        {
            "sender": lambda args: run_role(
                lambda: sender_main(args.url, Path(args.messages), args.rate, args.duration, args.offset),
                CHILD_TIMEOUT_S,
            ),
            "caller": lambda args: run_role(lambda: caller_main(args.url, args.in_flight), CHILD_TIMEOUT_S),
        },
        quick_help="a 1 s flood and 1 s windows (a smoke test)",
        default_repeat=1,
        options=options,
        role_options={"url": str, "messages": str, "duration": float, "offset": int, "in-flight": int},
    )


if __name__ == "__main__":
    main()
