"""The engine's modules through a real engine: ``state::set`` / ``state::get`` and ``publish`` → subscribers.

Every case runs in a fresh engine process with its own temporary ``--data-dir``; the Redis cases also get a
fresh ``redis-server`` on a free loopback port (``--redis-url``; ``redis-server`` must be installed), without
persistence (no RDB snapshots, no append-only file), as the tests run it: its writes are not durable. The
clients are the lean picows clients of ``bench/invocations.py`` (no SDK), so that the engine and the module
are what is measured.

* **state**: one client makes ``state::set`` calls (64 in flight; ~100-byte values over 1,000 keys of one
  scope), or first writes those keys and then makes ``state::get`` calls, on SQLite (the default backend:
  WAL, ``synchronous=FULL``, group commit; every write durable when its call answers) and on Redis. Each is
  compared with the plain invocation rate of the same session (64 in flight to a worker's echo function,
  ``bench/invocations.py``), run interleaved with them. Targets: get ≥ 0.5x the plain rate, set ≥ 0.3x.
* **pub/sub**: a subscriber worker serves 1 or 10 functions, each bound to the topic with a ``subscribe``
  trigger, and counts the deliveries; a publisher makes ``publish`` calls (64 in flight). The rate is the
  deliveries counted per subscribed function (messages delivered) over the time from the first ``publish``
  to the last delivery (both stamped on the machine's monotonic clock); the driver waits for the engine's
  counters (``/metrics``) to account for every delivery (delivered, failed or dropped) before it reads the
  subscriber's count. Deliveries the engine dropped (a subscriber's queue full: ``publish`` does not wait
  for them) are reported beside the rate. With the in-process backend and with Redis.

Run alone: ``python bench/engine_modules.py [--quick] [--verify] [--repeat N] [--part state|pubsub]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    engine_process,
    fmt_runs,
    median,
    redis_server,
    run_role,
)
from _lean_client import WorkerClient
from invocations import Caller

from iii.protocol.codec import encode
from iii.protocol.messages import (
    FromEngineMessage,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    is_null,
)

CHILD_TIMEOUT_S: Final = 300.0
SCRIPT: Final = "engine_modules.py"
IN_FLIGHT: Final = 64
SCOPE: Final = "bench"
KEYS: Final = 1000
TOPIC: Final = "bench.topic"
TARGET_GET: Final = 0.5
"""``state::get`` rate as a multiple of the plain invocation rate of the same session."""
TARGET_SET: Final = 0.3
"""Durable ``state::set`` rate as a multiple of the plain invocation rate of the same session."""
SETTLE_TIMEOUT_S: Final = 60.0
"""How long the driver waits for every delivery of the publications to be accounted for."""
BACKENDS: Final = ("sqlite", "redis")
SUBSCRIBER_COUNTS: Final = (1, 10)


class Value(msgspec.Struct):
    """A stored value (the ~100-byte object of the invocation benchmark)."""

    seq: int
    sku: str
    note: str


class SetResult(msgspec.Struct):
    """What ``state::set`` answers (``old_value`` is ignored)."""

    new_value: Value


VALUE_DECODER: Final = msgspec.json.Decoder(Value | None)
SET_DECODER: Final = msgspec.json.Decoder(SetResult)


def key_of(seq: int) -> str:
    """The key call ``seq`` reads or writes (the keys are taken in turn)."""
    return f"k{seq % KEYS}"


def set_request(seq: int) -> dict[str, Any]:
    """``state::set`` of call ``seq``: its key gets a value carrying ``seq``."""
    return {"scope": SCOPE, "key": key_of(seq), "value": {"seq": seq, "sku": "SKU-0001", "note": CALL_NOTE}}


def set_matches(seq: int, result: msgspec.Raw) -> bool:
    """Whether ``state::set`` answered with the value of call ``seq`` as ``new_value``."""
    return SET_DECODER.decode(result).new_value.seq == seq


def get_request(seq: int) -> dict[str, Any]:
    """``state::get`` of call ``seq``."""
    return {"scope": SCOPE, "key": key_of(seq)}


def get_matches(seq: int, result: msgspec.Raw) -> bool:
    """Whether ``state::get`` answered with the value the key got when the keys were written (seq 0..KEYS-1)."""
    value = VALUE_DECODER.decode(result)
    return value is not None and value.seq == seq % KEYS


def publish_request(seq: int) -> dict[str, Any]:
    """``publish`` of message ``seq`` to the benchmark's topic."""
    return {"topic": TOPIC, "data": {"seq": seq, "sku": "SKU-0001", "note": CALL_NOTE}}


def null_matches(seq: int, result: msgspec.Raw) -> bool:
    """Whether the answer is null (what ``publish`` answers)."""
    return is_null(result)


# --- client roles ----------------------------------------------------------------------------------------


async def measured_calls(caller: Caller, commands: Commands, calls: int) -> None:
    """Wait for ``go``, make ``calls`` calls with IN_FLIGHT outstanding, report ``done``, wait for ``exit``."""
    await commands.expect("go")
    caller.errors.clear()
    caller.mismatches = 0
    started = time.monotonic()
    seconds = await caller.run(calls, IN_FLIGHT)
    emit(
        "done",
        calls=caller.completed,
        seconds=seconds,
        started=started,
        errors=len(caller.errors),
        first_error=caller.errors[0] if caller.errors else None,
        mismatches=caller.mismatches,
    )
    await commands.expect("exit")
    caller.client.on_message = None
    await caller.client.close()


async def state_main(url: str, operation: str, calls: int, warmup: int, verify: bool) -> None:
    """``state::set`` or (after writing every key) ``state::get`` calls: a warm-up, then ``calls`` on ``go``."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    setter = Caller(client, verify, "state::set", set_request, set_matches)
    if operation == "get":
        setter.seq = -1  # calls 0..KEYS-1: key k<i> holds the value of seq i
        await setter.run(KEYS, IN_FLIGHT)
        if setter.errors or setter.mismatches:
            raise RuntimeError(f"writing the keys failed: {setter.errors[:1]}, {setter.mismatches} mismatches")
        caller = Caller(client, verify, "state::get", get_request, get_matches)
    else:
        caller = setter
    await caller.run(warmup, IN_FLIGHT)
    if caller.errors:
        raise RuntimeError(f"warm-up calls failed: {caller.errors[0]}")
    emit("warm")
    await measured_calls(caller, commands, calls)


async def wait_subscribed(client: WorkerClient, bindings: int, timeout_s: float = 30.0) -> None:
    """Poll ``engine::registered-triggers::list`` until ``bindings`` subscribe bindings hear their topic."""
    deadline = time.monotonic() + timeout_s
    while True:
        listing = await client.call("engine::registered-triggers::list", {})
        heard = [
            row
            for row in listing["registered_triggers"]
            if row["trigger_type"] == "subscribe"
            and row["status"] == "active"
            and row.get("details", {}).get("subscribed")
        ]
        if len(heard) >= bindings:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(heard)} of {bindings} subscribe bindings hear their topic: {listing}")
        await asyncio.sleep(0.02)


async def publisher_main(url: str, calls: int, warmup: int, subscribers: int, verify: bool) -> None:
    """Wait until every subscriber hears the topic, publish ``warmup`` messages, then ``calls`` on ``go``."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    await wait_subscribed(client, subscribers)
    caller = Caller(client, verify, "publish", publish_request, null_matches)
    await caller.run(warmup, IN_FLIGHT)
    if caller.errors:
        raise RuntimeError(f"warm-up publications failed: {caller.errors[0]}")
    emit("warm")
    await measured_calls(caller, commands, calls)


async def subscriber_main(url: str, functions: int) -> None:
    """Serve ``functions`` functions, each bound to TOPIC by a ``subscribe`` trigger; count their deliveries.

    Every delivery is answered at once with null. ``mark`` starts a new count (answered ``marked``);
    ``report`` answers ``counted`` with the deliveries since the mark (per function) and the monotonic time
    of the last one.
    """
    commands = Commands()
    client = await WorkerClient.connect(url)
    function_ids = [f"bench::subscriber{index}" for index in range(functions)]
    slot = {function_id: index for index, function_id in enumerate(function_ids)}
    counts = [0] * functions
    last = 0.0

    def on_message(message: FromEngineMessage) -> None:
        nonlocal last
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            counts[slot[message.function_id]] += 1
            last = time.monotonic()
            reply = InvocationResult(invocation_id=message.invocation_id, function_id=message.function_id)
            client.send(encode(reply))

    client.on_message = on_message
    for function_id in function_ids:
        client.send(encode(RegisterFunction(id=function_id)))
        config = msgspec.Raw(msgspec.json.encode({"topic": TOPIC}))
        binding = RegisterTrigger(
            id=f"{function_id}-binding", trigger_type="subscribe", function_id=function_id, config=config
        )
        client.send(encode(binding))
    emit("registered")
    while (command := await commands.next()) != "exit":
        if command == "mark":
            counts = [0] * functions
            emit("marked")
        elif command == "report":
            emit("counted", per_function=counts, last=last)
        else:
            raise RuntimeError(f"unknown command {command!r}")
    client.on_message = None
    await client.close()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run of a client: calls (or publications) per second, and where the CPU went."""

    calls: int
    seconds: float
    cpu: CpuWindow
    extra: dict[str, Any]

    @property
    def rate(self) -> float:
        """Completed calls (or delivered messages) per second."""
        return self.calls / self.seconds


@contextlib.contextmanager
def backend_engine(backend: str, engine_args: Sequence[str] = ()) -> Iterator[tuple[Any, dict[str, int]]]:
    """A fresh engine on ``backend`` (``sqlite``/``local``: no Redis; ``redis``: a fresh redis-server), and the
    pids to watch; ``engine_args`` are more options of the engine."""
    with contextlib.ExitStack() as stack:
        pids: dict[str, int] = {}
        args: list[str] = [*engine_args]
        if backend == "redis":
            redis = stack.enter_context(redis_server())
            args += ["--redis-url", redis.url]
            pids["redis"] = redis.pid
        engine = stack.enter_context(engine_process(args))
        pids["engine"] = engine.pid
        yield engine, pids


def check_calls(what: str, done: dict[str, Any], calls: int) -> None:
    """Raise ``RuntimeError`` unless a client's ``done`` event says every call succeeded (and matched)."""
    if done["errors"] or done["mismatches"] or done["calls"] != calls:
        raise RuntimeError(
            f"{what}: {done['calls']}/{calls} calls, {done['errors']} errors (first: {done['first_error']}), "
            f"{done['mismatches']} mismatched results"
        )


def metrics_url(engine: Any) -> str:
    """The engine's ``/metrics`` (served on the worker port)."""
    return str(engine.url).replace("ws://", "http://", 1) + "/metrics"


def metric_sums(url: str, names: Sequence[str]) -> dict[str, float]:
    """The sum over labels of each named sample in the Prometheus text at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


PUBSUB_COUNTERS: Final = (
    "iii_pubsub_published_total",
    "iii_pubsub_delivered_total",
    "iii_pubsub_failed_total",
    "iii_pubsub_dropped_total",
)


def settle_deliveries(engine: Any, deliveries: int, timeout_s: float = SETTLE_TIMEOUT_S) -> dict[str, float]:
    """Wait until the engine accounts for ``deliveries`` deliveries (delivered + failed + dropped); its counters."""
    deadline = time.monotonic() + timeout_s
    while True:
        sums = metric_sums(metrics_url(engine), PUBSUB_COUNTERS)
        accounted = sum(sums[name] for name in PUBSUB_COUNTERS[1:])
        if accounted >= deliveries:
            return sums
        if time.monotonic() > deadline:
            raise RuntimeError(f"pub/sub: {accounted:.0f} of {deliveries} deliveries accounted for in time: {sums}")
        time.sleep(0.05)


def state_run(backend: str, operation: str, calls: int, warmup: int, verify: bool) -> Run:
    """One run of ``state::<operation>`` calls in a fresh engine (and Redis)."""
    with backend_engine(backend) as (engine, pids), contextlib.ExitStack() as stack:
        args = ["--role", "state", "--url", engine.url, "--operation", operation, "--calls", str(calls)]
        args += ["--warmup", str(warmup), *(["--verify"] if verify else [])]
        client = stack.enter_context(Child(f"state-{operation}", SCRIPT, args, CHILD_TIMEOUT_S))
        client.expect("warm")
        counters = ("iii_state_sqlite_commits_total", "iii_state_sqlite_writes_total")
        before = metric_sums(metrics_url(engine), counters)
        window = CpuWindow({**pids, "client": client.pid})
        client.send("go")
        done = client.expect("done")
        window.stop()
        after = metric_sums(metrics_url(engine), counters)
        client.send("exit")
    check_calls(f"state::{operation} on {backend}", done, calls)
    commits = after[counters[0]] - before[counters[0]]
    writes = after[counters[1]] - before[counters[1]]
    return Run(calls=done["calls"], seconds=done["seconds"], cpu=window, extra={"commits": commits, "writes": writes})


def pubsub_run(backend: str, subscribers: int, calls: int, warmup: int, verify: bool) -> Run:
    """One run of ``calls`` publications to ``subscribers`` subscribed functions in a fresh engine (and Redis)."""
    with backend_engine(backend) as (engine, pids), contextlib.ExitStack() as stack:
        subscriber = stack.enter_context(
            Child(
                "subscriber",
                SCRIPT,
                ["--role", "subscriber", "--url", engine.url, "--functions", str(subscribers)],
                CHILD_TIMEOUT_S,
            )
        )
        subscriber.expect("registered")
        args = ["--role", "publisher", "--url", engine.url, "--calls", str(calls), "--warmup", str(warmup)]
        args += ["--functions", str(subscribers), *(["--verify"] if verify else [])]
        publisher = stack.enter_context(Child("publisher", SCRIPT, args, CHILD_TIMEOUT_S))
        publisher.expect("warm")
        warm = settle_deliveries(engine, warmup * subscribers)
        subscriber.send("mark")
        subscriber.expect("marked")
        window = CpuWindow({**pids, "publisher": publisher.pid, "subscriber": subscriber.pid})
        publisher.send("go")
        done = publisher.expect("done")
        sums = settle_deliveries(engine, (warmup + calls) * subscribers)
        window.stop()
        subscriber.send("report")
        counted = subscriber.expect("counted")
        publisher.send("exit")
        subscriber.send("exit")
    check_calls(f"publish on {backend}", done, calls)
    delivered = sum(counted["per_function"])
    dropped = sums["iii_pubsub_dropped_total"] - warm["iii_pubsub_dropped_total"]
    failed = sums["iii_pubsub_failed_total"] - warm["iii_pubsub_failed_total"]
    if failed:
        raise RuntimeError(f"pub/sub on {backend}: {failed:.0f} deliveries failed")
    if delivered + dropped != calls * subscribers:
        raise RuntimeError(
            f"pub/sub on {backend}: the subscribers counted {delivered} deliveries and the engine dropped "
            f"{dropped:.0f}, expected {calls * subscribers} in all"
        )
    seconds = counted["last"] - done["started"]
    return Run(
        calls=delivered,
        seconds=seconds,
        cpu=window,
        extra={
            "delivered": delivered,
            "dropped": dropped,
            "per_function": counted["per_function"],
            "publish_seconds": done["seconds"],
        },
    )


def cpu_shares(runs: Sequence[Run], names: Sequence[str]) -> str:
    """Median CPU shares (percent of one core) of the named processes and of foreign processes."""
    parts = [f"{name} {median([r.cpu.share(name) for r in runs]) * 100:.0f}%" for name in names]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU (% of one core): " + ", ".join(parts) + f", other processes {foreign:.0f}%"


def engine_us_per_call(runs: Sequence[Run]) -> float:
    """Median engine CPU time per call, in µs."""
    return median([r.cpu.used["engine"] / r.calls for r in runs]) * 1e6


def measure_state(quick: bool, verify: bool, repeat: int, backends: Sequence[str]) -> list[Measurement]:
    """Plain invocations next to ``state::get`` and ``state::set`` on each backend, interleaved run by run."""
    calls = 5_000 if quick else 100_000
    warmup = 1_000 if quick else 5_000
    plain: list[invocations.CallRun] = []
    runs: dict[tuple[str, str], list[Run]] = {(b, op): [] for b in backends for op in ("get", "set")}
    for _ in range(repeat):
        plain.append(invocations.run_once(calls, IN_FLIGHT, warmup, verify))
        for backend in backends:
            for operation in ("get", "set"):
                runs[backend, operation].append(state_run(backend, operation, calls, warmup, verify))
    plain_rates = [r.calls_per_s for r in plain]
    plain_rate = median(plain_rates)
    checked = "; every result checked" if verify else ""
    rows = [
        Measurement(
            name="9. plain invocations (echo worker), 64 in flight — reference of 9a-9d",
            result=f"{plain_rate:,.0f} calls/s",
            score=plain_rate,
            target=None,
            target_text="—",
            ratio_text="reference (1.00x)",
            details=(
                f"{calls:,} calls per run, median of {repeat} runs [{fmt_runs([r / 1000 for r in plain_rates], 1)}] "
                f"k calls/s; engine CPU {median([r.cpu.used['engine'] / r.calls for r in plain]) * 1e6:.1f} µs "
                f"per call; {invocations.cpu_shares(plain)}"
            ),
        )
    ]
    letter = ord("a")
    for backend in backends:
        for operation in ("get", "set"):
            measured = runs[backend, operation]
            rates = [r.rate for r in measured]
            ratios = [r.rate / p for r, p in zip(measured, plain_rates, strict=True)]
            ratio = median(rates) / plain_rate
            target = TARGET_GET if operation == "get" else TARGET_SET
            what = "state::get"
            if operation == "set":
                what = "durable state::set" if backend == "sqlite" else "state::set"
            store = "SQLite (synchronous=FULL)" if backend == "sqlite" else "Redis (no persistence)"
            names = ["engine", "client", *(["redis"] if backend == "redis" else [])]
            group = ""
            if operation == "set" and backend == "sqlite":
                commits = sum(r.extra["commits"] for r in measured)
                group = f"; {sum(r.extra['writes'] for r in measured) / max(commits, 1):.0f} writes per commit"
            rows.append(
                Measurement(
                    name=f"9{chr(letter)}. {what} on {store}, 64 in flight",
                    result=f"{median(rates):,.0f} calls/s",
                    score=ratio,
                    target=target,
                    target_text=f"≥ {target}x plain invocations",
                    ratio_text=f"{ratio:.2f}x plain",
                    details=(
                        f"{calls:,} calls per run over {KEYS:,} keys, median of {repeat} runs "
                        f"[{fmt_runs([r / 1000 for r in rates], 1)}] k calls/s, "
                        f"run by run [{fmt_runs(ratios)}]x plain; engine CPU {engine_us_per_call(measured):.1f} µs "
                        f"per call; {cpu_shares(measured, names)}{group}{checked}"
                    ),
                )
            )
            letter += 1
    return rows


def measure_pubsub(quick: bool, verify: bool, repeat: int, backends: Sequence[str]) -> list[Measurement]:
    """Publish → delivery with 1 and 10 subscribed functions on each backend, interleaved run by run."""
    calls = 2_000 if quick else 50_000
    warmup = 500 if quick else 2_000
    runs: dict[tuple[str, int], list[Run]] = {(b, n): [] for b in backends for n in SUBSCRIBER_COUNTS}
    for _ in range(repeat):
        for backend in backends:
            for subscribers in SUBSCRIBER_COUNTS:
                runs[backend, subscribers].append(pubsub_run(backend, subscribers, calls, warmup, verify))
    rows = []
    letter = ord("a")
    for backend in backends:
        for subscribers in SUBSCRIBER_COUNTS:
            measured = runs[backend, subscribers]
            rates = [r.rate / subscribers for r in measured]  # messages delivered to every subscriber, per second
            dropped = [r.extra["dropped"] / (calls * subscribers) for r in measured]
            where = "in process" if backend == "local" else "Redis"
            drops = f"[{fmt_runs([d * 100 for d in dropped], 1)}]% of the deliveries dropped (queue full)"
            if not any(dropped):
                drops = "none dropped"
            names = ["engine", "publisher", "subscriber", *(["redis"] if backend == "redis" else [])]
            publishing = fmt_runs([r.extra["publish_seconds"] for r in measured])
            rows.append(
                Measurement(
                    name=f"10{chr(letter)}. publish → {subscribers} subscribed function(s), {where}, 64 in flight",
                    result=(
                        f"{median(rates):,.0f} messages/s ({median(rates) * subscribers:,.0f} deliveries/s)"
                        + (f", {median(dropped) * 100:.0f}% dropped" if any(dropped) else "")
                    ),
                    score=median(rates),
                    target=None,
                    target_text="— (no target)",
                    ratio_text="reference",
                    details=(
                        f"{calls:,} messages per run, median of {repeat} runs "
                        f"[{fmt_runs([r / 1000 for r in rates], 1)}] k messages/s delivered, first publish to last "
                        f"delivery (the publishes alone took [{publishing}] s); {drops}; engine CPU "
                        f"{engine_us_per_call(measured):.1f} µs per delivery; "
                        f"{cpu_shares(measured, names)}"
                    ),
                )
            )
            letter += 1
    return rows


def measure(quick: bool, verify: bool, repeat: int, parts: Sequence[str] = ("state", "pubsub")) -> list[Measurement]:
    """Every module measurement (``parts``: ``state``, ``pubsub``)."""
    rows: list[Measurement] = []
    if "state" in parts:
        rows += measure_state(quick, verify, repeat, BACKENDS)
    if "pubsub" in parts:
        rows += measure_pubsub(quick, verify, repeat, ("local", "redis"))
    return rows


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--part", choices=("state", "pubsub"), action="append", help="only this part")

    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.verify, args.repeat, args.part or ("state", "pubsub")),
        {
            "state": lambda args: run_role(
                lambda: state_main(args.url, args.operation, args.calls, args.warmup, args.verify), CHILD_TIMEOUT_S
            ),
            "publisher": lambda args: run_role(
                lambda: publisher_main(args.url, args.calls, args.warmup, args.functions, args.verify),
                CHILD_TIMEOUT_S,
            ),
            "subscriber": lambda args: run_role(lambda: subscriber_main(args.url, args.functions), CHILD_TIMEOUT_S),
        },
        quick_help="5,000 state calls and 2,000 publications per case, one run",
        verify_help="check every state result (its value) and every publish answer",
        default_repeat=3,
        options=options,
        role_options={"url": str, "operation": str, "calls": int, "warmup": int, "functions": int},
    )


if __name__ == "__main__":
    main()
