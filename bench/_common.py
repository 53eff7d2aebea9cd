"""Shared plumbing for the benchmark scripts.

* Driver side: :class:`Child` runs one benchmark role in its own process and talks to it with JSON lines
  (events on the child's stdout, commands on its stdin); :func:`engine_process` runs a fresh engine;
  :func:`rss_bytes` and :func:`cpu_seconds` read ``/proc``; :class:`Measurement` and :func:`markdown_table`
  make the report.
* Child side: :func:`emit`, :class:`Commands` and :func:`run_role` (uvloop, a deadline, errors reported as
  an ``error`` event); :class:`WorkerClient` is a lean picows client of the worker socket (no SDK).

Every process started here is stopped by its own handle (never by name), and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from iii.testing import EngineProcess

BENCH_DIR: Final = Path(__file__).resolve().parent
KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB
CHUNK: Final = 64 * KIB
"""Frame / buffer size of both relay benchmarks (what the SDKs use for channel data)."""


# --- driver side: child processes ------------------------------------------------------------------------


class ChildError(RuntimeError):
    """A benchmark child process failed, exited early or missed a deadline."""


class Child:
    """One benchmark role (``python bench/<script> --role …``) in a child process.

    The child prints one JSON object per line on stdout (``{"event": name, …}``) and reads commands, one
    per line, on stdin; closing its stdin tells it to exit. ``timeout_s`` bounds the child's whole life:
    every :meth:`expect` fails once it has passed, and :meth:`stop` kills the child if it does not exit.
    ``python`` runs the script with another interpreter (default: this one), e.g. a venv with another SDK;
    that child does not inherit ``PYTHONPATH``.
    """

    def __init__(
        self,
        name: str,
        script: str,
        args: Sequence[str],
        timeout_s: float,
        python: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.deadline = time.monotonic() + timeout_s
        env = None
        if python is not None:  # another venv: our PYTHONPATH (if any) must not shadow its packages
            env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        self.process = subprocess.Popen(
            [str(python or sys.executable), str(BENCH_DIR / script), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=40)
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            text = line.strip()
            if not text:
                continue
            try:
                event = json.loads(text)
            except ValueError:
                self._stderr.append(f"(stdout) {text}")
                continue
            self._events.put(event)
        self._events.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip("\n"))

    def diagnostics(self) -> str:
        """The tail of the child's stderr, for error messages."""
        tail = "\n".join(self._stderr)
        return f"\n--- {self.name} (pid {self.pid}) stderr tail ---\n{tail}" if tail else ""

    def expect(self, event: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the event ``event``; raise :class:`ChildError` on an error event, exit or timeout."""
        limit = self.deadline if timeout_s is None else min(self.deadline, time.monotonic() + timeout_s)
        while True:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                raise ChildError(f"{self.name}: no '{event}' event in time" + self.diagnostics())
            try:
                item = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                self.process.wait(5)
                raise ChildError(
                    f"{self.name} exited (code {self.process.returncode}) before '{event}'" + self.diagnostics()
                )
            if item.get("event") == "error":
                raise ChildError(f"{self.name} failed: {item.get('message')}" + self.diagnostics())
            if item.get("event") == event:
                return item
            raise ChildError(f"{self.name}: expected '{event}', got {item}" + self.diagnostics())

    def send(self, command: str) -> None:
        """Send one command line to the child."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise ChildError(f"{self.name} is gone; could not send {command!r}" + self.diagnostics()) from None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close stdin (the child's cue to exit), then SIGTERM and SIGKILL if it takes too long."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def engine_process(args: Sequence[str] = ()) -> Iterator[EngineProcess]:
    """A fresh engine (``python -m iii engine --port 0``) for one measurement; stopped afterwards."""
    engine = EngineProcess(args=args, start_timeout_s=30.0)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop(timeout_s=15.0)


def raise_nofile_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it); return the new soft limit.

    The hard limit cannot be raised without privileges, so the result may stay below ``wanted``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    return int(soft)


# --- driver side: /proc ----------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    """One ``kB`` field of ``/proc/PID/status``, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS``) of process ``pid`` in bytes."""
    return _status_kib(pid, "VmRSS") * KIB


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of process ``pid`` in bytes."""
    return _status_kib(pid, "VmHWM") * KIB


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process ``pid`` (from ``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs of the machine have spent in processes since boot (``/proc/stat``).

    Only user, nice and system time count: interrupt and softirq time (loopback networking, partly our own
    traffic) and steal are charged to no process, so counting them would overstate the disturbance.
    """
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system = (int(v) for v in stat.readline().split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """CPU used by some processes over a window, and by everything else on the machine (the disturbance)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "driver": os.getpid()}
        self.started = time.perf_counter()
        self._busy0 = machine_busy_seconds()
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.seconds = 0.0
        self.used: dict[str, float] = {}
        self.foreign = 0.0

    def stop(self) -> CpuWindow:
        """End the window: fills ``seconds``, ``used`` (per name) and ``foreign`` (CPU seconds of others)."""
        self.used = {name: cpu_seconds(pid) - self._cpu0[name] for name, pid in self.pids.items()}
        self.seconds = time.perf_counter() - self.started
        self.foreign = max(0.0, machine_busy_seconds() - self._busy0 - sum(self.used.values()))
        return self

    def share(self, name: str) -> float:
        """CPU used by ``name`` as a fraction of one core over the window."""
        return self.used[name] / self.seconds if self.seconds else 0.0

    @property
    def foreign_share(self) -> float:
        """CPU used by processes outside the benchmark, as a fraction of one core."""
        return self.foreign / self.seconds if self.seconds else 0.0


def own_cpu_seconds() -> float:
    """CPU seconds of this process plus its reaped children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def settle_rss(pid: int, settle_s: float = 0.5) -> int:
    """RSS of ``pid`` after a short pause, so that work in flight has finished."""
    time.sleep(settle_s)
    return rss_bytes(pid)


# --- report ---------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One row of the report.

    ``score`` is compared with ``target`` (``higher_is_better`` decides the direction); ``target`` None
    marks a reference row without a target.
    """

    name: str
    result: str
    score: float
    target: float | None
    target_text: str
    higher_is_better: bool = True
    ratio_text: str = ""
    details: str = ""

    @property
    def passed(self) -> bool | None:
        """True / False against the target; None for a reference row."""
        if self.target is None:
            return None
        return self.score >= self.target if self.higher_is_better else self.score <= self.target

    @property
    def verdict(self) -> str:
        """The ratio / verdict column."""
        if self.target is None:
            return self.ratio_text or "reference"
        ratio = self.ratio_text or f"{self.score / self.target:.2f}x target"
        return f"{ratio} — {'PASS' if self.passed else 'MISS'}"


def markdown_table(rows: Sequence[Measurement]) -> str:
    """The report table (markdown), plus one details line per row that has details."""
    lines = ["| measurement | result | target | ratio / verdict |", "|---|---|---|---|"]
    lines += [f"| {m.name} | {m.result} | {m.target_text} | {m.verdict} |" for m in rows]
    notes = [f"* {m.name}: {m.details}" for m in rows if m.details]
    if notes:
        lines += ["", "Details:", "", *notes]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    """The median of ``values`` as a float."""
    return float(statistics.median(values))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


def fmt_bytes(value: float) -> str:
    """Bytes as B / KiB / MiB / GiB with 2 decimals."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def fmt_runs(values: Sequence[float], digits: int = 2) -> str:
    """Per-run values as a comma-separated list."""
    return ", ".join(f"{v:.{digits}f}" for v in values)


# --- child side ------------------------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    """Report one event to the driver (one JSON line on stdout)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Commands:
    """The driver's commands (stdin lines) as an async stream; EOF reads as ``exit``.

    A daemon thread does the blocking reads, so a child never hangs on stdin at exit.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed when stdin ends
            for line in sys.stdin:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line.strip())
            self._loop.call_soon_threadsafe(self._queue.put_nowait, "exit")

    async def next(self) -> str:
        """The next command line."""
        return await self._queue.get()

    async def expect(self, command: str) -> None:
        """Wait for ``command``; anything else (including EOF) is an error."""
        got = await self.next()
        if got != command:
            raise RuntimeError(f"expected command {command!r}, got {got!r}")


def run_role(main: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    """Run a child role on uvloop under a deadline; any failure becomes an ``error`` event and exit code 1."""
    import uvloop

    async def guarded() -> None:
        await asyncio.wait_for(main(), timeout_s)

    try:
        uvloop.run(guarded())
    except BaseException as exc:  # report everything, including the deadline, to the driver
        emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.exit(1)


def start_watchdog(timeout_s: float) -> None:
    """End this process (exit code 3, after an ``error`` event) if it is still alive after ``timeout_s``.

    For the SDK roles, which block in plain code (sync calls) and keep SDK threads: a deadline inside an
    event loop cannot bound them.
    """

    def fire() -> None:
        time.sleep(timeout_s)
        emit("error", message=f"deadline of {timeout_s:.0f} s passed")
        os._exit(3)

    threading.Thread(target=fire, daemon=True, name="bench-watchdog").start()


def run_sdk_role(main: Callable[[], None], timeout_s: float) -> None:
    """Run an SDK role in plain code under :func:`start_watchdog`; a failure becomes an ``error`` event, exit 1.

    Unlike :func:`run_role` there is no event loop here: the role decides where it runs ``asyncio.run``.
    """
    start_watchdog(timeout_s)
    try:
        main()
    except BaseException as exc:  # report everything to the driver
        emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        os._exit(1)


def sdk_worker(url: str, role: str) -> Any:
    """A worker connection with our SDK (``register_worker``), named after the benchmark role."""
    from iii import InitOptions, register_worker

    return register_worker(url, InitOptions(worker_name=f"bench-{role}-{os.getpid()}"))


def channel_url(engine_url: str, ref: dict[str, str]) -> str:
    """The URL of the channel end that ``ref`` opens (its own key and direction)."""
    key = quote(ref["access_key"], safe="")
    return f"{engine_url}/ws/channels/{quote(ref['channel_id'], safe='')}?key={key}&dir={ref['direction']}"


class IdMaker:
    """UUID-shaped invocation ids: a random prefix per process and a counter (cheaper than ``uuid4()``)."""

    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())[:24]
        self._counter = 0

    def next(self) -> str:
        """A fresh invocation id."""
        self._counter += 1
        return f"{self._prefix}{self._counter:012x}"


class Incoming(msgspec.Struct):
    """The fields a lean client reads from engine messages (everything else is ignored)."""

    type: str
    invocation_id: str | None = None
    function_id: str | None = None
    worker_id: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    result: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()
    """Absent fields are empty ``Raw`` values (``msgspec.Raw`` cannot be part of a union with ``None``)."""


def is_absent(raw: msgspec.Raw) -> bool:
    """True for a field that was absent or JSON ``null``."""
    return len(raw) == 0 or bytes(raw) == b"null"


class InvokeFunction(msgspec.Struct, tag_field="type", tag="invokefunction"):
    """A call, as a worker sends it."""

    invocation_id: str
    function_id: str
    data: Any


INCOMING_DECODER: Final = msgspec.json.Decoder(Incoming)
ENCODER: Final = msgspec.json.Encoder()


class WorkerClient(WSListener):
    """A lean client of the worker socket: waits for ``workerregistered`` and awaits call results.

    Use :meth:`connect`, then :meth:`call`. For tight loops, set ``on_message``: it then receives every
    decoded message after registration, synchronously, and must not keep the message's ``Raw`` fields.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.registered: asyncio.Future[str] = loop.create_future()
        self.disconnected: asyncio.Future[None] = loop.create_future()
        self.pending: dict[str, asyncio.Future[Incoming]] = {}
        self.ids = IdMaker()
        self.on_message: Callable[[Incoming], None] | None = None

    @classmethod
    async def connect(cls, engine_url: str, timeout_s: float = 10.0) -> WorkerClient:
        """Connect to ``/`` and wait for ``workerregistered``."""
        _, client = await ws_connect(cls, engine_url + "/", websocket_handshake_timeout=timeout_s)
        assert isinstance(client, WorkerClient)
        await asyncio.wait_for(client.registered, timeout_s)
        return client

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        error = ConnectionError("worker socket disconnected")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()
        if not self.registered.done():
            self.registered.set_exception(error)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT:
            on_message = self.on_message
            # msgspec.Raw fields point into the decoded buffer, and picows reuses its buffer once this callback
            # returns: decode the frame in place only when the message is used up inside the callback.
            payload = frame.get_payload_as_memoryview() if on_message is not None else frame.get_payload_as_bytes()
            message = INCOMING_DECODER.decode(payload)
            if message.type == "workerregistered":
                if not self.registered.done():
                    self.registered.set_result(message.worker_id or "")
                return
            if on_message is not None:
                on_message(message)
                return
            if message.type == "invocationresult" and message.invocation_id is not None:
                future = self.pending.pop(message.invocation_id, None)
                if future is not None and not future.done():
                    future.set_result(message)
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def send(self, payload: bytes) -> None:
        """Send one text message."""
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, payload)

    def call_nowait(self, function_id: str, data: Any) -> asyncio.Future[Incoming]:
        """Send a call; the future resolves with the ``invocationresult`` message."""
        invocation_id = self.ids.next()
        future: asyncio.Future[Incoming] = asyncio.get_running_loop().create_future()
        self.pending[invocation_id] = future
        self.send(ENCODER.encode(InvokeFunction(invocation_id=invocation_id, function_id=function_id, data=data)))
        return future

    async def call(self, function_id: str, data: Any) -> Any:
        """Call ``function_id`` and return its decoded result; raise ``RuntimeError`` with an error result."""
        message = await self.call_nowait(function_id, data)
        if not is_absent(message.error):
            raise RuntimeError(f"{function_id} failed: {bytes(message.error).decode()}")
        return None if is_absent(message.result) else msgspec.json.decode(message.result)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close with 1000 and wait (bounded) for the disconnect."""
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.disconnected), timeout_s)


async def create_channel(client: WorkerClient, buffer_size: int = 64) -> dict[str, dict[str, str]]:
    """``engine::channels::create``: returns ``{"writer": ref, "reader": ref}``."""
    result: dict[str, dict[str, str]] = await client.call("engine::channels::create", {"buffer_size": buffer_size})
    return result
