"""Invocations between two worker processes through our engine, driven by lean picows + msgspec clients.

Worker B registers ``bench::echo`` and answers every ``invokefunction`` with an ``invocationresult``
carrying the same ``invocation_id`` and ``result`` = the delivered data. Worker A sends ``invokefunction``s
with its own UUID-shaped invocation ids (a random prefix and a counter). A first retries until B's
function is registered (``function_not_found`` means not yet), then warms up, then waits for the driver's
``go``. Both loops are driven from picows' frame callback: each result immediately sends the next call.

* throughput: 64 calls in flight over 200,000 calls, calls/s from the first send to the last result;
* latency: one call at a time over 20,000 calls, median and p99 of the round trip (send to result).

Run alone: ``python bench/invocations.py [--quick] [--verify] [--repeat N]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from _common import (
    CALL_NOTE,
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
    run_role,
)
from _lean_client import WorkerClient, encode_call

from iii.protocol.codec import encode
from iii.protocol.messages import (
    ErrorNotice,
    FromEngineMessage,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    TriggerAction,
    is_null,
)

CHILD_TIMEOUT_S = 300.0
SCRIPT = "invocations.py"
FUNCTION_ID = "bench::echo"
TARGET_CALLS_PER_S = 50_000.0
TARGET_LATENCY_US = 120.0


class Payload(msgspec.Struct):
    """The call's data: a sequence number and some text (about 200 bytes per invokefunction in total)."""

    seq: int
    sku: str
    note: str


NOTE = CALL_NOTE  # the SDK call benchmarks send the same object
PAYLOAD_DECODER = msgspec.json.Decoder(Payload)


# --- worker B --------------------------------------------------------------------------------------------


async def echo_main(url: str) -> None:
    """Register ``bench::echo`` and answer every call with its data, until told to exit."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    answered = 0

    def on_message(message: FromEngineMessage) -> None:
        nonlocal answered
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            reply = InvocationResult(invocation_id=message.invocation_id, function_id=FUNCTION_ID, result=message.data)
            client.send(encode(reply))
            answered += 1

    client.on_message = on_message
    client.send(encode(RegisterFunction(id=FUNCTION_ID)))  # the engine sends no acknowledgement
    emit("registered")
    await commands.expect("exit")
    await client.close()
    emit("exited", answered=answered)


# --- worker A --------------------------------------------------------------------------------------------


def echo_request(seq: int) -> Payload:
    """The data of call ``seq`` to ``bench::echo``."""
    return Payload(seq=seq, sku="SKU-0001", note=NOTE)


def echo_matches(seq: int, result: msgspec.Raw) -> bool:
    """Whether ``bench::echo``'s result for call ``seq`` is that call's data (its ``seq``)."""
    return PAYLOAD_DECODER.decode(result).seq == seq


class Caller:
    """Worker A's call loop, run from the frame callback: every result sends the next call.

    By default it calls ``bench::echo`` with :func:`echo_request`; the module benchmarks pass another
    ``function_id``, ``request(seq)`` (the data of call ``seq``), ``matches(seq, result)`` (its check with
    ``verify``) and an ``action`` (the queue benchmark: enqueue).
    """

    def __init__(
        self,
        client: WorkerClient,
        verify: bool,
        function_id: str = FUNCTION_ID,
        request: Callable[[int], Any] = echo_request,
        matches: Callable[[int, msgspec.Raw], bool] = echo_matches,
        action: TriggerAction | None = None,
        traceparent: str | None = None,
    ) -> None:
        self.client = client
        self.traceparent = traceparent
        self.verify = verify
        self.function_id = function_id
        self.request = request
        self.matches = matches
        self.action = action
        self.outstanding: dict[str, tuple[int, int]] = {}
        self.latencies_ns: list[int] = []
        self.errors: list[str] = []
        self.mismatches = 0
        self.sent = 0
        self.completed = 0
        self.total = 0
        self.seq = 0
        self.finished: asyncio.Future[None] | None = None
        client.on_message = self.on_message

    def send_one(self) -> None:
        """Send the next call and remember when it left."""
        self.seq += 1
        invocation_id = self.client.ids.next()
        encoded = encode_call(invocation_id, self.function_id, self.request(self.seq), self.action, self.traceparent)
        self.outstanding[invocation_id] = (self.seq, time.perf_counter_ns())
        self.client.send(encoded)
        self.sent += 1

    def on_message(self, message: FromEngineMessage) -> None:
        """Account for one result, then keep the number of calls in flight."""
        if not isinstance(message, InvocationResult):
            if isinstance(message, ErrorNotice) and self.finished is not None and not self.finished.done():
                self.finished.set_exception(RuntimeError(f"engine error notice: {message.error}"))
            return
        now = time.perf_counter_ns()
        entry = self.outstanding.pop(message.invocation_id, None)
        if entry is None:
            self.errors.append(f"result for an unknown invocation id {message.invocation_id}")
        else:
            seq, started = entry
            self.latencies_ns.append(now - started)
            if not is_null(message.error):
                self.errors.append(bytes(message.error).decode())
            elif self.verify and not self.matches(seq, message.result):
                self.mismatches += 1
        self.completed += 1
        if self.sent < self.total:
            self.send_one()
        elif self.completed >= self.total and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def run(self, total: int, in_flight: int) -> float:
        """Make ``total`` calls with ``in_flight`` outstanding; returns the elapsed seconds."""
        self.latencies_ns = []
        self.sent = self.completed = 0
        self.total = total
        self.finished = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        for _ in range(min(in_flight, total)):
            self.send_one()
        await self.finished
        return time.perf_counter() - started


async def wait_until_registered(client: WorkerClient, timeout_s: float = 30.0, function_id: str = FUNCTION_ID) -> int:
    """Call ``function_id`` until it no longer fails with ``function_not_found``; returns the attempts."""
    deadline = time.monotonic() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        message = await asyncio.wait_for(client.call_nowait(function_id, {"probe": True}), timeout_s)
        if is_null(message.error):
            return attempts
        if b"function_not_found" not in bytes(message.error) or time.monotonic() > deadline:
            raise RuntimeError(f"{function_id} probe failed: {bytes(message.error).decode()}")
        await asyncio.sleep(0.02)


TRACEPARENT: Final = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
"""The trace context of a traced caller's calls (``--traced 1``): one sampled trace, as a traced client's."""


async def caller_main(url: str, calls: int, in_flight: int, warmup: int, verify: bool, traced: bool = False) -> None:
    """Wait for B's function, warm up, then make ``calls`` calls on ``go`` and report; ``traced``: every call
    carries :data:`TRACEPARENT`."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    attempts = await wait_until_registered(client)
    caller = Caller(client, verify, traceparent=TRACEPARENT if traced else None)
    await caller.run(warmup, in_flight)
    sample = encode_call(client.ids.next(), FUNCTION_ID, Payload(seq=1, sku="SKU-0001", note=NOTE))
    emit("warm", probe_attempts=attempts, message_bytes=len(sample))
    await commands.expect("go")
    caller.errors.clear()
    seconds = await caller.run(calls, in_flight)
    latencies = sorted(caller.latencies_ns)
    emit(
        "done",
        calls=caller.completed,
        seconds=seconds,
        errors=len(caller.errors),
        first_error=caller.errors[0] if caller.errors else None,
        mismatches=caller.mismatches,
        median_us=percentile(latencies, 0.5) / 1000,
        p99_us=percentile(latencies, 0.99) / 1000,
    )
    await commands.expect("exit")
    client.on_message = None
    await client.close()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class CallRun:
    """One measured run of worker A."""

    calls: int
    seconds: float
    median_us: float
    p99_us: float
    cpu: CpuWindow
    message_bytes: int

    @property
    def calls_per_s(self) -> float:
        """Completed calls per second."""
        return self.calls / self.seconds


def run_once(calls: int, in_flight: int, warmup: int, verify: bool) -> CallRun:
    """One run in a fresh engine with fresh workers."""
    with engine_process() as engine:
        return run_workers(engine.url, engine.url, {"engine": engine.pid}, calls, in_flight, warmup, verify)


def run_workers(
    caller_url: str,
    echo_url: str,
    servers: Mapping[str, int],
    calls: int,
    in_flight: int,
    warmup: int,
    verify: bool,
    traced: bool = False,
) -> CallRun:
    """One run with fresh workers: the echo worker B on ``echo_url``, the caller A on ``caller_url`` (the same
    engine, or two engines of a cluster); ``servers`` (name → pid: the engines, a Redis) go into the CPU window
    beside ``A`` and ``B``; ``traced``: A's calls carry a sampled ``traceparent``."""
    with contextlib.ExitStack() as stack:
        echo = stack.enter_context(Child("worker-b", SCRIPT, ["--role", "echo", "--url", echo_url], CHILD_TIMEOUT_S))
        echo.expect("registered")
        args = ["--role", "caller", "--url", caller_url, "--calls", str(calls), "--in-flight", str(in_flight)]
        args += ["--warmup", str(warmup), "--traced", str(int(traced)), *(["--verify"] if verify else [])]
        caller = stack.enter_context(Child("worker-a", SCRIPT, args, CHILD_TIMEOUT_S))
        warm = caller.expect("warm")
        window = CpuWindow({**servers, "A": caller.pid, "B": echo.pid})
        caller.send("go")
        done = caller.expect("done")
        window.stop()
        caller.send("exit")
        echo.send("exit")
    if done["errors"] or done["mismatches"] or done["calls"] != calls:
        raise RuntimeError(
            f"invocations: {done['calls']}/{calls} calls, {done['errors']} errors "
            f"(first: {done['first_error']}), {done['mismatches']} mismatched results"
        )
    return CallRun(
        calls=done["calls"],
        seconds=done["seconds"],
        median_us=done["median_us"],
        p99_us=done["p99_us"],
        cpu=window,
        message_bytes=warm["message_bytes"],
    )


def cpu_shares(runs: list[CallRun]) -> str:
    """Median CPU shares of the engine, both workers and foreign processes during the measured windows."""
    parts = [f"{name} {median([r.cpu.share(name) for r in runs]) * 100:.0f}%" for name in ("engine", "A", "B")]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU (% of one core): " + ", ".join(parts) + f", other processes {foreign:.0f}%"


def measure(quick: bool, verify: bool, repeat: int) -> list[Measurement]:
    """Throughput (64 in flight) and sequential latency, each in fresh engines, runs interleaved."""
    throughput_calls, latency_calls = (20_000, 2_000) if quick else (200_000, 20_000)
    warmup = 2_000 if quick else 10_000
    throughput: list[CallRun] = []
    latency: list[CallRun] = []
    for _ in range(repeat):
        throughput.append(run_once(throughput_calls, 64, warmup, verify))
        latency.append(run_once(latency_calls, 1, warmup // 5, verify))
    rate = median([r.calls_per_s for r in throughput])
    lat = median([r.median_us for r in latency])
    p99 = median([r.p99_us for r in latency])
    size = throughput[0].message_bytes
    checked = "; every result's seq checked" if verify else ""
    return [
        Measurement(
            name="3a. invocations A→engine→B→engine→A, 64 in flight",
            result=f"{rate:,.0f} calls/s",
            score=rate,
            target=TARGET_CALLS_PER_S,
            target_text=f"≥ {TARGET_CALLS_PER_S:,.0f} calls/s",
            details=(
                f"{throughput_calls:,} calls per run, median of {repeat} runs "
                f"[{fmt_runs([r.calls_per_s / 1000 for r in throughput], 1)}] k calls/s; "
                f"engine CPU {median([r.cpu.used['engine'] / r.calls for r in throughput]) * 1e6:.1f} µs per call; "
                f"{cpu_shares(throughput)}; "
                f"round trip under load median {median([r.median_us for r in throughput]):.0f} µs; "
                f"invokefunction message {size} bytes; 0 errors{checked}"
            ),
        ),
        Measurement(
            name="3b. sequential invocation round trip (1 in flight)",
            result=f"median {lat:.0f} µs, p99 {p99:.0f} µs",
            score=lat,
            target=TARGET_LATENCY_US,
            target_text=f"median ≤ {TARGET_LATENCY_US:.0f} µs",
            higher_is_better=False,
            details=(
                f"{latency_calls:,} calls per run, median of {repeat} runs "
                f"[{fmt_runs([r.median_us for r in latency], 0)}] µs "
                f"(p99 [{fmt_runs([r.p99_us for r in latency], 0)}] µs); "
                f"engine CPU {median([r.cpu.used['engine'] / r.calls for r in latency]) * 1e6:.1f} µs per call; "
                f"{cpu_shares(latency)}"
            ),
        ),
    ]


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""
    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.verify, args.repeat),
        {
            "echo": lambda args: run_role(lambda: echo_main(args.url), CHILD_TIMEOUT_S),
            "caller": lambda args: run_role(
                lambda: caller_main(args.url, args.calls, args.in_flight, args.warmup, args.verify, bool(args.traced)),
                CHILD_TIMEOUT_S,
            ),
        },
        quick_help="20,000 / 2,000 calls, one run",
        verify_help="check that every result echoes its call's data",
        default_repeat=5,
        role_options={"url": str, "calls": int, "in-flight": int, "warmup": int, "traced": int},
    )


if __name__ == "__main__":
    main()
