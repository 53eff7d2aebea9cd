"""Shared plumbing for the benchmark scripts; standard library only, so that the official SDK's venv can import it.

* Driver side: :class:`Child` runs one benchmark role in its own process and talks to it with JSON lines
  (events on the child's stdout, commands on its stdin); :func:`engine_process` runs a fresh engine and
  :func:`redis_server` a fresh Redis; :func:`rss_bytes` and :func:`cpu_seconds` read ``/proc``;
  :class:`Measurement` and :func:`markdown_table` make the report; :func:`bench_main` is every script's
  command line (driver, or one child role).
* Child side: :func:`emit`, :class:`Commands` and :func:`run_role` (a deadline, errors reported as an
  ``error`` event); :class:`StampedChunks`, :func:`write_stamped` and :func:`read_stamped`, the payload and
  the measuring loops of the SDK relays (ours and the official SDK's); :func:`call_request`,
  :func:`call_loop`, :func:`sync_call_loop` and :func:`serve_call_jobs`, the requests, measuring loops and
  command loop of the SDK call benchmarks (both SDKs too).

The lean picows client of the worker socket (no SDK) is in ``_lean_client.py``: it needs picows and our
``iii`` package, which the official SDK's venv does not have. Every process started here is stopped by its
own handle (never by name), and every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
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
    from iii.testing import EngineProcess

    engine = EngineProcess(args=args, start_timeout_s=30.0)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop(timeout_s=15.0)


class RedisServer:
    """A ``redis-server`` of one case on a free loopback port, without persistence (see :func:`redis_server`)."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, for ``--redis-url``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid


REDIS_READY_LINE: Final = "Ready to accept connections"


@contextlib.contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` (``save ""``, no append-only file) for one case; stopped afterwards.

    Raises ``RuntimeError`` if ``redis-server`` is not installed (Debian: ``apt-get install redis-server``) or
    does not say it is ready within ``timeout_s``.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("the Redis cases need redis-server (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="iii-bench-redis-") as directory:
        with socket.socket() as probe:  # a free port; nothing else on loopback takes it in between, in practice
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        command = [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(
            [*command, "--dir", directory], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            ready = threading.Event()
            output: deque[str] = deque(maxlen=20)

            def watch() -> None:
                assert process.stdout is not None
                for line in process.stdout:
                    output.append(line)
                    if REDIS_READY_LINE in line:
                        ready.set()
                ready.set()  # it exited: the waiter looks at the exit code

            threading.Thread(target=watch, name="redis-server-output", daemon=True).start()
            if not ready.wait(timeout_s) or process.poll() is not None:
                raise RuntimeError("redis-server did not start:\n" + "".join(output))
            yield RedisServer(process, port)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


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


def check_stream(what: str, total: int, got: Mapping[str, Any], sent: Mapping[str, Any], verify: bool) -> bool | None:
    """Check a relayed stream from the reader's and the writer's ``done`` events; raise ``RuntimeError`` if wrong.

    Checked: the exact byte count, the chunk order (when the reader reports ``out_of_order``), a clean close
    (when it reports ``close_code``) and, with ``verify``, that both CRC32s agree. Returns whether the CRC
    was verified (None without ``verify``).
    """
    problems = []
    if got["bytes"] != total:
        problems.append(f"reader got {got['bytes']} bytes, expected {total}")
    if got.get("out_of_order"):
        problems.append(f"{got['out_of_order']} chunks out of order (or not 64 KiB frames)")
    if got.get("close_code", 1000) != 1000:
        problems.append(f"reader saw close code {got['close_code']}, expected 1000")
    if verify and got["crc"] != sent["crc"]:
        problems.append("checksum mismatch")
    if problems:
        raise RuntimeError(f"{what}: " + "; ".join(problems))
    return True if verify else None


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


def run_role(main: Callable[[], Awaitable[None]], timeout_s: float, *, use_uvloop: bool = True) -> None:
    """Run a child role on uvloop (or plain asyncio) under a deadline; a failure becomes an ``error`` event, exit 1.

    A watchdog (:func:`start_watchdog`) ends the process a little after the deadline, in case the role's
    libraries keep threads that outlive the event loop.
    """
    start_watchdog(timeout_s + 15)

    async def guarded() -> None:
        await asyncio.wait_for(main(), timeout_s)

    try:
        if use_uvloop:
            import uvloop

            uvloop.run(guarded())
        else:
            asyncio.run(guarded())
    except BaseException as exc:  # report everything, including the deadline, to the driver
        emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        os._exit(1)


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


# --- the SDK relays' payload and measuring loops (child side) --------------------------------------------


class StampedChunks:
    """The SDK relays' payload: ``total // CHUNK`` chunks of 64 KiB, each starting with its index (8 bytes, LE).

    Iterate once; with ``verify``, :attr:`crc` is then the CRC32 of everything yielded (else it stays None).
    """

    def __init__(self, total: int, verify: bool) -> None:
        self.count = total // CHUNK
        self.crc: int | None = 0 if verify else None

    def __iter__(self) -> Iterator[bytes]:
        tail = b"\xa5" * (CHUNK - 8)
        for index in range(self.count):
            chunk = index.to_bytes(8, "little") + tail
            if self.crc is not None:
                self.crc = zlib.crc32(chunk, self.crc)
            yield chunk


async def write_stamped(writer: Any, total: int, verify: bool) -> dict[str, Any]:
    """``await writer.write(chunk)`` for every stamped chunk, then ``await writer.close_async()``.

    ``writer`` is a channel writer of our SDK or of the official one (both have these two methods). Returns
    the fields of the writer's ``done`` event: ``seconds`` (first write to closed) and ``crc``.
    """
    chunks = StampedChunks(total, verify)
    started = time.perf_counter()
    for chunk in chunks:
        await writer.write(chunk)
    await writer.close_async()
    return {"seconds": time.perf_counter() - started, "crc": chunks.crc}


async def read_stamped(reader: AsyncIterable[bytes], verify: bool) -> dict[str, Any]:
    """Read stamped chunks to the stream's end (``async for``); returns the fields of the reader's ``done`` event.

    ``bytes`` and ``chunks`` received, ``seconds`` from the first chunk to the last (as the bare relay
    measures), ``out_of_order`` (chunks whose index is not their position, e.g. not 64 KiB frames) and
    ``crc`` (with ``verify``, else None).
    """
    chunks = total = out_of_order = crc = 0
    t_first = t_last = 0.0
    async for chunk in reader:
        now = time.perf_counter()
        if not chunks:
            t_first = now
        if int.from_bytes(chunk[:8], "little") != chunks:
            out_of_order += 1
        if verify:
            crc = zlib.crc32(chunk, crc)
        chunks += 1
        total += len(chunk)
        t_last = now
    return {
        "bytes": total,
        "chunks": chunks,
        "seconds": t_last - t_first,
        "out_of_order": out_of_order,
        "crc": crc if verify else None,
    }


# --- the SDK call benchmarks' request and measuring loops (child side) ------------------------------------

CALL_NOTE: Final = "benchmark payload: lean picows + msgspec load generator"
"""The text in every call's data (the lean client of ``bench/invocations.py`` sends the same object)."""
ECHO_FUNCTION: Final = "bench::echo"
"""The call benchmarks' ``def`` callee: returns its data."""
ECHO_ASYNC_FUNCTION: Final = "bench::echo_async"
"""The call benchmarks' ``async def`` callee: returns its data."""
DRIVE_FUNCTION: Final = "bench::drive"
"""The caller's own ``async def`` function that runs a measuring loop on its SDK's loop (the handler style)."""

TriggerCall = Callable[[dict[str, Any]], Any]
"""An SDK's trigger method bound to its client: ``trigger(request)``."""


def call_request(function_id: str, seq: int) -> dict[str, Any]:
    """One call's request; the data is the ~100-byte object of ``bench/invocations.py``."""
    return {"function_id": function_id, "payload": {"seq": seq, "sku": "SKU-0001", "note": CALL_NOTE}}


@dataclass
class CallStats:
    """What one measuring loop of calls saw."""

    calls: int
    seconds: float
    median_us: float
    p99_us: float
    mismatches: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for events and handler results)."""
        return {
            "calls": self.calls,
            "seconds": self.seconds,
            "median_us": self.median_us,
            "p99_us": self.p99_us,
            "mismatches": self.mismatches,
        }


def summarize_calls(latencies_ns: list[int], seconds: float, mismatches: int) -> CallStats:
    """Median, p99 and duration of a loop of calls."""
    ordered = sorted(latencies_ns)
    return CallStats(
        calls=len(ordered),
        seconds=seconds,
        median_us=percentile(ordered, 0.5) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        mismatches=mismatches,
    )


async def call_loop(
    call: Callable[[dict[str, Any]], Awaitable[Any]], function_id: str, calls: int, in_flight: int
) -> CallStats:
    """``calls`` calls with ``in_flight`` coroutines calling one after another (``asyncio.gather``).

    ``call`` is an SDK's awaitable trigger (ours: ``trigger_async`` or ``trigger``; the official SDK's:
    ``trigger_async``). Every round trip is timed from just before the call to just after its result, and
    every result's ``seq`` is checked.
    """
    latencies: list[int] = []
    mismatches = 0
    per_task, extra = divmod(calls, in_flight)

    async def one_after_another(first: int, count: int) -> None:
        nonlocal mismatches
        for seq in range(first, first + count):
            started = time.perf_counter_ns()
            result = await call(call_request(function_id, seq))
            latencies.append(time.perf_counter_ns() - started)
            if result["seq"] != seq:
                mismatches += 1

    counts = [per_task + (1 if index < extra else 0) for index in range(in_flight)]
    firsts = [sum(counts[:index]) for index in range(in_flight)]
    started = time.perf_counter()
    await asyncio.gather(*(one_after_another(first, count) for first, count in zip(firsts, counts, strict=True)))
    return summarize_calls(latencies, time.perf_counter() - started, mismatches)


async def measured_call_loop(
    call: Callable[[dict[str, Any]], Awaitable[Any]], function_id: str, calls: int, in_flight: int, warmup: int
) -> CallStats:
    """:func:`call_loop` after a warm-up of ``warmup`` calls (not measured)."""
    if warmup:
        await call_loop(call, function_id, warmup, in_flight)
    return await call_loop(call, function_id, calls, in_flight)


def sync_call_loop(trigger: TriggerCall, function_id: str, calls: int, warmup: int) -> CallStats:
    """Sequential blocking ``trigger(request)`` calls from plain code, after ``warmup`` unmeasured ones."""
    for seq in range(warmup):
        trigger(call_request(function_id, seq))
    latencies: list[int] = []
    mismatches = 0
    started = time.perf_counter()
    for seq in range(calls):
        begun = time.perf_counter_ns()
        result = trigger(call_request(function_id, seq))
        latencies.append(time.perf_counter_ns() - begun)
        if result["seq"] != seq:
            mismatches += 1
    return summarize_calls(latencies, time.perf_counter() - started, mismatches)


def wait_until_served(trigger: TriggerCall, function_ids: Sequence[str], timeout_s: float = 30.0) -> None:
    """Call each function (blocking ``trigger``) until it stops failing with ``function_not_found``.

    Both SDKs raise an ``InvocationError`` whose ``code`` is the engine's error code.
    """
    deadline = time.monotonic() + timeout_s
    for function_id in function_ids:
        while True:
            try:
                trigger({**call_request(function_id, 0), "timeout_ms": 5000})
                break
            except Exception as exc:
                if getattr(exc, "code", None) != "function_not_found" or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def serve_call_jobs(run: Callable[[str, str, int, int, int], CallStats]) -> None:
    """The call benchmarks' caller loop: ``go STYLE FUNCTION CALLS IN_FLIGHT WARMUP`` lines until ``exit`` / EOF.

    ``run(style, function_id, calls, in_flight, warmup)`` measures one job; its stats go to the driver as a
    ``result`` event.
    """
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "exit":
            break
        _, style, function_id, calls, in_flight, warmup = words
        emit("result", **run(style, function_id, int(calls), int(in_flight), int(warmup)).as_dict())


def serve_until_exit() -> None:
    """Block until the driver says ``exit`` or closes stdin (a callee's main loop)."""
    while sys.stdin.readline().strip() not in ("", "exit"):
        pass


def _echo(data: Any) -> Any:
    """The sync callee of the call benchmarks."""
    return data


async def _echo_async(data: Any) -> Any:
    """The async callee of the call benchmarks."""
    return data


def serve_echoes(worker: Any) -> None:
    """Serve ``ECHO_FUNCTION`` (a ``def``) and ``ECHO_ASYNC_FUNCTION`` (an ``async def``) on ``worker``, an
    SDK client of ours or the official one (both have ``register_function`` and ``shutdown``), until the
    driver says exit; then shut it down."""
    try:
        worker.register_function(ECHO_FUNCTION, _echo)
        worker.register_function(ECHO_ASYNC_FUNCTION, _echo_async)
        emit("registered")
        serve_until_exit()
    finally:
        worker.shutdown()


# --- command line ----------------------------------------------------------------------------------------


def bench_main(
    doc: str,
    report: Callable[[argparse.Namespace], Sequence[Measurement]],
    roles: Mapping[str, Callable[[argparse.Namespace], None]],
    *,
    quick_help: str,
    verify_help: str | None = None,
    default_repeat: int | None = None,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    role_options: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """The command line of a benchmark script: run as the driver and print the table, or as one child role.

    The driver gets ``--quick`` (``quick_help`` says what it shrinks), ``--verify`` when ``verify_help`` is
    given, ``--repeat`` when ``default_repeat`` is (``args.repeat`` is then resolved: the given number, else
    1 with ``--quick``, else ``default_repeat``) and whatever ``options`` adds; ``report(args)`` makes the
    rows. ``--role NAME`` runs ``roles[NAME](args)`` instead, with the hidden ``role_options`` (option name
    → type, e.g. ``{"url": str, "in-flight": int}``); a role's failure becomes an ``error`` event and exit
    code 1, so that the driver reports it.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if verify_help is not None:
        parser.add_argument("--verify", action="store_true", help=verify_help)
    if default_repeat is not None:
        help_text = f"runs (median reported); default {default_repeat}, quick 1"
        parser.add_argument("--repeat", type=int, default=None, help=help_text)
    if options is not None:
        options(parser)
    parser.add_argument("--role", choices=list(roles), help=argparse.SUPPRESS)
    for name, kind in (role_options or {}).items():
        parser.add_argument(f"--{name}", type=kind, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is None:
        if default_repeat is not None:
            args.repeat = args.repeat or (1 if args.quick else default_repeat)
        print(markdown_table(report(args)))
        return
    try:
        roles[args.role](args)
    except Exception as exc:  # a role's failure goes to the driver, which reports it with the role's stderr
        emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        sys.exit(1)
