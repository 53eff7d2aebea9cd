"""Durable queues through a real engine: enqueue → delivery to a no-op function, on SQLite and on Redis.

Every case runs in a fresh engine process with its own temporary ``--data-dir`` (the SQLite backend's
``queue.sqlite3``: WAL, ``synchronous=FULL``, group commit: an enqueue is answered once its message is on
disk); the Redis case also gets a fresh ``redis-server`` on a free loopback port (``--redis-url``, which
selects the Redis Streams backend), without persistence, as ``bench/engine_modules.py`` runs it. The clients
are the lean picows clients of ``bench/invocations.py`` (no SDK). Every message goes through the queue
``default`` (the reference's defaults: ``concurrency`` 10, so at most 10 deliveries in flight).

* **throughput**: a consumer worker serves ``bench::noop`` (answers every delivery at once with null) and
  counts the deliveries; a producer makes ``invokefunction`` calls of ``bench::noop`` with the action
  ``{"type": "enqueue", "queue": "default"}``, 64 in flight (each answered with its ``messageReceiptId``).
  The rate is the deliveries counted over the time from the first enqueue to the last delivery (both stamped
  on the machine's monotonic clock); before it reads the count the driver waits for the engine's counters
  (``/metrics``: ``iii_queue_delivered_total``, ``iii_queue_in_flight``) to show every message acknowledged
  and nothing in flight. Target: ≥ 10,000 messages/s on SQLite (issue 14).
* **latency**: one enqueue at a time, from one process that holds both the producer's and the consumer's
  connection: the time from sending the enqueue to receiving its delivery (median and p99); the next enqueue
  is sent once the message was delivered and its enqueue answered.

Both are compared with plain invocations of the same session (``bench/invocations.py``: 64 in flight, and one
at a time), run interleaved with them.

Run alone: ``python bench/queues.py [--quick] [--verify] [--repeat N] [--backend sqlite|redis] [--concurrency N]``
(``--concurrency``: the queue's deliveries in flight at once, instead of its default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import invocations
import msgspec
from _common import (
    CALL_NOTE,
    Child,
    Commands,
    CpuWindow,
    Measurement,
    bench_main,
    emit,
    fmt_runs,
    median,
    percentile,
    run_role,
)
from _lean_client import WorkerClient
from engine_modules import Run, backend_engine, check_calls, cpu_shares, engine_us_per_call, measured_calls, metric_sums
from engine_modules import metrics_url as engine_metrics_url
from invocations import Caller, wait_until_registered

from iii.protocol.codec import encode
from iii.protocol.messages import (
    FromEngineMessage,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    TriggerAction,
    is_null,
)

CHILD_TIMEOUT_S: Final = 300.0
SCRIPT: Final = "queues.py"
IN_FLIGHT: Final = 64
QUEUE: Final = "default"
FUNCTION_ID: Final = "bench::noop"
ENQUEUE: Final = TriggerAction(type="enqueue", queue=QUEUE)
TARGET_MESSAGES_PER_S: Final = 10_000.0
"""Enqueue-to-completion rate on SQLite with 64 enqueues in flight (issue 14)."""
SETTLE_TIMEOUT_S: Final = 120.0
"""How long the driver waits for every message to be acknowledged."""
BACKENDS: Final = ("sqlite", "redis")
QUEUE_COUNTERS: Final = (
    "iii_queue_delivered_total",
    "iii_queue_in_flight",
    "iii_queue_retried_total",
    "iii_queue_released_total",
    "iii_queue_dead_total",
    "iii_queue_sqlite_commits_total",
    "iii_queue_sqlite_writes_total",
)


class Message(msgspec.Struct):
    """A message's data: its sequence number and ~60 bytes of text (the call benchmarks' object). The probe
    that waits for the function (``{"probe": true}``) decodes as ``seq`` -1."""

    seq: int = -1
    sku: str = ""
    note: str = ""


class Receipt(msgspec.Struct, rename="camel"):
    """What an enqueue answers."""

    message_receipt_id: str


MESSAGE_DECODER: Final = msgspec.json.Decoder(Message)
RECEIPT_DECODER: Final = msgspec.json.Decoder(Receipt)


def message_data(seq: int) -> dict[str, Any]:
    """The data of message ``seq``."""
    return {"seq": seq, "sku": "SKU-0001", "note": CALL_NOTE}


def receipt_matches(seq: int, result: msgspec.Raw) -> bool:
    """Whether an enqueue was answered with a receipt (``{"messageReceiptId": ...}``)."""
    return bool(RECEIPT_DECODER.decode(result).message_receipt_id)


# --- client roles ----------------------------------------------------------------------------------------


def register_noop(client: WorkerClient, on_delivery: Any) -> None:
    """Serve ``bench::noop`` on ``client``: ``on_delivery(message)`` is called for every delivery, which is
    then answered with null."""

    def on_message(message: FromEngineMessage) -> None:
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            on_delivery(message)
            client.send(encode(InvocationResult(invocation_id=message.invocation_id, function_id=FUNCTION_ID)))

    client.on_message = on_message
    client.send(encode(RegisterFunction(id=FUNCTION_ID)))


async def consumer_main(url: str, verify: bool) -> None:
    """Serve ``bench::noop`` and count its deliveries (with ``verify``, the distinct ``seq``s too).

    ``mark`` starts a new count (answered ``marked``); ``report`` answers ``counted`` with the deliveries since
    the mark, the distinct messages among them (with ``verify``, else null) and the monotonic time of the last.
    """
    commands = Commands()
    client = await WorkerClient.connect(url)
    count = 0
    last = 0.0
    seen: set[int] = set()

    def on_delivery(message: InvokeFunction) -> None:
        nonlocal count, last
        count += 1
        last = time.monotonic()
        if verify:
            seen.add(MESSAGE_DECODER.decode(message.data).seq)

    register_noop(client, on_delivery)
    emit("registered")
    while (command := await commands.next()) != "exit":
        if command == "mark":
            count = 0
            seen.clear()
            emit("marked")
        elif command == "report":
            emit("counted", deliveries=count, distinct=len(seen) if verify else None, last=last)
        else:
            raise RuntimeError(f"unknown command {command!r}")
    client.on_message = None
    await client.close()


async def producer_main(url: str, calls: int, warmup: int, verify: bool) -> None:
    """Wait until ``bench::noop`` is served, enqueue ``warmup`` messages, then ``calls`` on ``go``."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    await wait_until_registered(client, function_id=FUNCTION_ID)
    caller = Caller(client, verify, FUNCTION_ID, message_data, receipt_matches, ENQUEUE)
    await caller.run(warmup, IN_FLIGHT)
    if caller.errors:
        raise RuntimeError(f"warm-up enqueues failed: {caller.errors[0]}")
    emit("warm")
    await measured_calls(caller, commands, calls)


async def latency_main(url: str, calls: int, warmup: int) -> None:
    """One enqueue at a time: the time from sending it to receiving its delivery, over ``calls`` messages."""
    commands = Commands()
    consumer = await WorkerClient.connect(url)
    producer = await WorkerClient.connect(url)
    loop = asyncio.get_running_loop()
    delivered: asyncio.Future[tuple[int, int]] | None = None

    def on_delivery(message: InvokeFunction) -> None:
        now = time.perf_counter_ns()
        if delivered is not None and not delivered.done():
            delivered.set_result((MESSAGE_DECODER.decode(message.data).seq, now))

    register_noop(consumer, on_delivery)
    await wait_until_registered(producer, function_id=FUNCTION_ID)

    async def one(seq: int) -> int:
        nonlocal delivered
        delivered = loop.create_future()
        started = time.perf_counter_ns()
        answer = producer.call_nowait(FUNCTION_ID, message_data(seq), ENQUEUE)
        got, at = await delivered
        result = await answer
        if got != seq:
            raise RuntimeError(f"message {seq} enqueued, message {got} delivered")
        if not is_null(result.error):
            raise RuntimeError(f"enqueue {seq} failed: {bytes(result.error).decode()}")
        return at - started

    for seq in range(warmup):
        await one(seq)
    emit("warm")
    await commands.expect("go")
    started = time.perf_counter()
    latencies = sorted([await one(warmup + seq) for seq in range(calls)])
    emit(
        "done",
        calls=len(latencies),
        seconds=time.perf_counter() - started,
        median_us=percentile(latencies, 0.5) / 1000,
        p99_us=percentile(latencies, 0.99) / 1000,
    )
    await commands.expect("exit")
    consumer.on_message = None
    await consumer.close()
    await producer.close()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    """One run of the latency client."""

    median_us: float
    p99_us: float
    cpu: CpuWindow
    calls: int


def settle(engine: Any, delivered: int, timeout_s: float = SETTLE_TIMEOUT_S) -> dict[str, float]:
    """Wait until the engine has acknowledged ``delivered`` deliveries and has none in flight; its counters.

    Raises ``RuntimeError`` if a delivery was retried, released or buried (a no-op function never fails).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        sums = metric_sums(engine_metrics_url(engine), QUEUE_COUNTERS)
        failed = sums["iii_queue_retried_total"] + sums["iii_queue_released_total"] + sums["iii_queue_dead_total"]
        if failed:
            raise RuntimeError(f"queue: deliveries failed: {sums}")
        if sums["iii_queue_delivered_total"] >= delivered and not sums["iii_queue_in_flight"]:
            return sums
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue: {sums['iii_queue_delivered_total']:.0f} of {delivered} acknowledged: {sums}")
        time.sleep(0.05)


@contextlib.contextmanager
def queue_engine(backend: str, concurrency: int | None) -> Iterator[tuple[Any, dict[str, int]]]:
    """:func:`~engine_modules.backend_engine`, with the queue ``default``'s ``concurrency`` set if given."""
    with tempfile.TemporaryDirectory(prefix="iii-bench-queue-") as directory:
        args: list[str] = []
        if concurrency is not None:
            config = Path(directory) / "engine.toml"
            config.write_text(f"[queue.queue_configs.{QUEUE}]\nconcurrency = {concurrency}\n")
            args = ["--config", str(config)]
        with backend_engine(backend, args) as found:
            yield found


def throughput_run(backend: str, calls: int, warmup: int, verify: bool, concurrency: int | None = None) -> Run:
    """One run of 64 enqueues in flight → deliveries, in a fresh engine (and Redis)."""
    verify_flag = ["--verify"] if verify else []
    with queue_engine(backend, concurrency) as (engine, pids), contextlib.ExitStack() as stack:
        consumer_args = ["--role", "consumer", "--url", engine.url, *verify_flag]
        consumer = stack.enter_context(Child("consumer", SCRIPT, consumer_args, CHILD_TIMEOUT_S))
        consumer.expect("registered")
        args = ["--role", "producer", "--url", engine.url, "--calls", str(calls), "--warmup", str(warmup)]
        producer = stack.enter_context(Child("producer", SCRIPT, [*args, *verify_flag], CHILD_TIMEOUT_S))
        producer.expect("warm")
        before = settle(engine, warmup)
        consumer.send("mark")
        consumer.expect("marked")
        window = CpuWindow({**pids, "producer": producer.pid, "consumer": consumer.pid})
        producer.send("go")
        done = producer.expect("done")
        after = settle(engine, warmup + calls)
        window.stop()
        consumer.send("report")
        counted = consumer.expect("counted")
        producer.send("exit")
        consumer.send("exit")
    check_calls(f"enqueue on {backend}", done, calls)
    if counted["deliveries"] != calls or (verify and counted["distinct"] != calls):
        raise RuntimeError(
            f"queue on {backend}: the consumer counted {counted['deliveries']} deliveries "
            f"({counted['distinct']} distinct messages), expected {calls}"
        )
    commits = after["iii_queue_sqlite_commits_total"] - before["iii_queue_sqlite_commits_total"]
    writes = after["iii_queue_sqlite_writes_total"] - before["iii_queue_sqlite_writes_total"]
    return Run(
        calls=counted["deliveries"],
        seconds=counted["last"] - done["started"],
        cpu=window,
        extra={"enqueue_seconds": done["seconds"], "commits": commits, "writes": writes},
    )


def latency_run(backend: str, calls: int, warmup: int, concurrency: int | None = None) -> LatencyRun:
    """One run of enqueues one at a time, in a fresh engine (and Redis)."""
    with queue_engine(backend, concurrency) as (engine, pids), contextlib.ExitStack() as stack:
        args = ["--role", "latency", "--url", engine.url, "--calls", str(calls), "--warmup", str(warmup)]
        client = stack.enter_context(Child("latency", SCRIPT, args, CHILD_TIMEOUT_S))
        client.expect("warm")
        window = CpuWindow({**pids, "client": client.pid})
        client.send("go")
        done = client.expect("done")
        window.stop()
        settle(engine, warmup + calls)
        client.send("exit")
    if done["calls"] != calls:
        raise RuntimeError(f"queue latency on {backend}: {done['calls']} of {calls} messages")
    return LatencyRun(median_us=done["median_us"], p99_us=done["p99_us"], cpu=window, calls=calls)


STORES: Final = {"sqlite": "SQLite (synchronous=FULL)", "redis": "Redis (no persistence)"}


def measure(
    quick: bool, verify: bool, repeat: int, backends: Sequence[str] = BACKENDS, concurrency: int | None = None
) -> list[Measurement]:
    """Plain invocations next to enqueue → delivery on each backend (throughput, then latency), interleaved;
    ``concurrency`` sets the queue's (default: the queue ``default``'s own, 10)."""
    calls, warmup = (2_000, 500) if quick else (50_000, 2_000)
    latency_calls, latency_warmup = (200, 20) if quick else (3_000, 200)
    plain_calls, plain_warmup = (5_000, 1_000) if quick else (100_000, 5_000)
    plain_latency_calls = 1_000 if quick else 10_000
    plain: list[invocations.CallRun] = []
    plain_latency: list[invocations.CallRun] = []
    runs: dict[str, list[Run]] = {backend: [] for backend in backends}
    latencies: dict[str, list[LatencyRun]] = {backend: [] for backend in backends}
    for _ in range(repeat):
        plain.append(invocations.run_once(plain_calls, IN_FLIGHT, plain_warmup, verify))
        plain_latency.append(invocations.run_once(plain_latency_calls, 1, plain_warmup // 5, verify))
        for backend in backends:
            runs[backend].append(throughput_run(backend, calls, warmup, verify, concurrency))
            latencies[backend].append(latency_run(backend, latency_calls, latency_warmup, concurrency))
    plain_rates = [r.calls_per_s for r in plain]
    plain_rate = median(plain_rates)
    plain_median = median([r.median_us for r in plain_latency])
    configured = "" if concurrency is None else f" (queue concurrency {concurrency})"
    rows = [
        Measurement(
            name="11. plain invocations (echo worker) — reference of 11a-11d",
            result=(
                f"{plain_rate:,.0f} calls/s at 64 in flight; one at a time: median {plain_median:.0f} µs, "
                f"p99 {median([r.p99_us for r in plain_latency]):.0f} µs"
            ),
            score=plain_rate,
            target=None,
            target_text="—",
            ratio_text="reference (1.00x)",
            details=(
                f"{plain_calls:,} calls per run at 64 in flight, median of {repeat} runs "
                f"[{fmt_runs([r / 1000 for r in plain_rates], 1)}] k calls/s, engine CPU "
                f"{median([r.cpu.used['engine'] / r.calls for r in plain]) * 1e6:.1f} µs per call, "
                f"{invocations.cpu_shares(plain)}; {plain_latency_calls:,} calls one at a time, median "
                f"[{fmt_runs([r.median_us for r in plain_latency], 0)}] µs, p99 "
                f"[{fmt_runs([r.p99_us for r in plain_latency], 0)}] µs"
            ),
        )
    ]
    letter = ord("a")
    checked = "; every delivery's message checked (distinct)" if verify else ""
    for backend in backends:
        measured = runs[backend]
        rates = [r.rate for r in measured]
        rate = median(rates)
        ratios = [r.rate / p for r, p in zip(measured, plain_rates, strict=True)]
        target = TARGET_MESSAGES_PER_S if backend == "sqlite" else None
        names = ["engine", "producer", "consumer", *(["redis"] if backend == "redis" else [])]
        group = ""
        if backend == "sqlite":
            commits = sum(r.extra["commits"] for r in measured)
            writes = sum(r.extra["writes"] for r in measured)
            group = (
                f"; {writes / max(commits, 1):.1f} writes per commit, "
                f"{commits / sum(r.calls for r in measured):.2f} commits per message"
            )
        enqueuing = fmt_runs([r.extra["enqueue_seconds"] for r in measured])
        ratio = rate / plain_rate
        rows.append(
            Measurement(
                name=f"11{chr(letter)}. enqueue → delivery on {STORES[backend]}, 64 enqueues in flight{configured}",
                result=f"{rate:,.0f} messages/s",
                score=rate,
                target=target,
                target_text=f"≥ {TARGET_MESSAGES_PER_S:,.0f} messages/s" if target else "— (no target)",
                ratio_text=(f"{rate / target:.2f}x target, " if target else "") + f"{ratio:.2f}x plain",
                details=(
                    f"{calls:,} messages per run, median of {repeat} runs [{fmt_runs([r / 1000 for r in rates], 2)}] "
                    f"k messages/s from the first enqueue to the last delivery (the enqueues alone took "
                    f"[{enqueuing}] s), run by run [{fmt_runs(ratios)}]x plain; engine CPU "
                    f"{engine_us_per_call(measured):.1f} µs per message; {cpu_shares(measured, names)}{group}{checked}"
                ),
            )
        )
        letter += 1
    for backend in backends:
        measured_latency = latencies[backend]
        medians = [r.median_us for r in measured_latency]
        p99s = [r.p99_us for r in measured_latency]
        engine_us = median([r.cpu.used["engine"] / r.calls for r in measured_latency]) * 1e6
        rows.append(
            Measurement(
                name=f"11{chr(letter)}. enqueue → delivery latency on {STORES[backend]}, one at a time{configured}",
                result=f"median {median(medians):,.0f} µs, p99 {median(p99s):,.0f} µs",
                score=median(medians),
                target=None,
                target_text="— (no target)",
                ratio_text=f"{median(medians) / plain_median:.1f}x a plain round trip",
                details=(
                    f"{latency_calls:,} messages per run, from sending the enqueue to receiving the delivery; median "
                    f"of {repeat} runs [{fmt_runs(medians, 0)}] µs, p99 [{fmt_runs(p99s, 0)}] µs; engine CPU "
                    f"{engine_us:.0f} µs per message"
                ),
            )
        )
        letter += 1
    return rows


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--backend", choices=BACKENDS, action="append", help="only this backend")
        parser.add_argument(
            "--concurrency", type=int, help="the queue's deliveries in flight at once (default: its default, 10)"
        )

    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.verify, args.repeat, args.backend or BACKENDS, args.concurrency),
        {
            "consumer": lambda args: run_role(lambda: consumer_main(args.url, args.verify), CHILD_TIMEOUT_S),
            "producer": lambda args: run_role(
                lambda: producer_main(args.url, args.calls, args.warmup, args.verify), CHILD_TIMEOUT_S
            ),
            "latency": lambda args: run_role(lambda: latency_main(args.url, args.calls, args.warmup), CHILD_TIMEOUT_S),
        },
        quick_help="2,000 messages (200 one at a time) per case, one run",
        verify_help="check every enqueue's receipt and that every message is delivered (distinct)",
        default_repeat=3,
        options=options,
        role_options={"url": str, "calls": int, "warmup": int},
    )


if __name__ == "__main__":
    main()
