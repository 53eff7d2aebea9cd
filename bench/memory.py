"""Engine memory: RSS growth of the engine process (``VmRSS``) per item, each case in a fresh engine.

* channels created but never connected: ``engine::channels::create`` 100,000 times, 256 calls in flight;
* channels with both ends connected and idle: 1,000 channels, each with a writer and a reader socket;
* idle worker connections: 1,000 worker sockets, each having received ``workerregistered``.

A lean client process (picows, no SDK) first does a small warm-up of the same kind (so one-time
allocations land in the baseline), then the driver reads the baseline RSS, tells the client to go, and
reads the RSS again once the client has finished. Growth / count is the result. For the socket cases the
client then asks the engine (``engine::channels::list`` / ``engine::workers::list``) to confirm that all the
items are there. The driver raises its soft ``RLIMIT_NOFILE`` before it starts the engine (the engine
inherits it) and the client raises its own. The engine's ``--worker-max-channels`` is set to the case's
count plus warm-up, since one client holds every channel.

Run alone: ``python bench/memory.py [--quick] [--case unconnected|connected|workers]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from _common import (
    KIB,
    Child,
    Commands,
    Measurement,
    bench_main,
    emit,
    engine_process,
    fmt_bytes,
    raise_nofile_limit,
    run_role,
    settle_rss,
)
from _lean_client import Ref, WorkerClient, channel_url, create_channel
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

CHILD_TIMEOUT_S = 600.0
SCRIPT = "memory.py"
SETTLE_S = 1.0
FD_SLACK = 200
T = TypeVar("T")


# --- client roles ----------------------------------------------------------------------------------------


class IdleEnd(WSListener):
    """A channel end that only notices being closed."""

    def __init__(self) -> None:
        self.closed_by_engine = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.closed_by_engine = True
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()


async def create_many(client: WorkerClient, count: int, in_flight: int) -> list[dict[str, Ref]]:
    """Create ``count`` channels with ``in_flight`` calls outstanding; returns their refs."""
    refs: list[dict[str, Ref]] = []
    remaining = count

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            refs.append(await create_channel(client))

    await asyncio.gather(*(lane() for _ in range(min(in_flight, count))))
    return refs


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run async ``jobs`` (zero-argument coroutine functions) with at most ``concurrency`` at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def open_channels(url: str, refs: list[dict[str, Ref]], concurrency: int) -> list[WSTransport]:
    """Connect the writer and the reader end of every channel in ``refs``."""

    def opener(ref: Ref) -> Callable[[], Awaitable[WSTransport]]:
        async def open_end() -> WSTransport:
            transport, _ = await ws_connect(IdleEnd, channel_url(url, **ref), websocket_handshake_timeout=30)
            return transport

        return open_end

    jobs = [opener(pair[end]) for pair in refs for end in ("writer", "reader")]
    return await bounded(concurrency, jobs)


async def unconnected_main(url: str, count: int, warmup: int, in_flight: int) -> None:
    """Client of case 4a: create channels and keep them (and the worker socket) until told to exit."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    await create_many(client, warmup, in_flight)
    emit("warm")
    await commands.expect("go")
    started = time.perf_counter()
    refs = await create_many(client, count, in_flight)
    seconds = time.perf_counter() - started
    distinct = len({pair["writer"]["channel_id"] for pair in refs})
    separate_keys = all(pair["writer"]["access_key"] != pair["reader"]["access_key"] for pair in refs)
    del refs
    emit("done", created=count, distinct=distinct, separate_keys=separate_keys, seconds=seconds)
    await commands.expect("exit")  # stay connected: the engine forgets a departed worker's unused channels
    await client.close()


async def connected_main(url: str, count: int, warmup: int, concurrency: int) -> None:
    """Client of case 4b: create channels and connect both ends of each; keep them idle."""
    commands = Commands()
    client = await WorkerClient.connect(url)
    ends = await open_channels(url, await create_many(client, warmup, concurrency), concurrency)
    emit("warm")
    await commands.expect("go")
    started = time.perf_counter()
    refs = await create_many(client, count, concurrency)
    ends += await open_channels(url, refs, concurrency)
    seconds = time.perf_counter() - started
    emit("done", sockets=len(ends), seconds=seconds)
    await commands.expect("verify")
    listing = await client.call("engine::channels::list", {})
    both_open = sum(1 for c in listing["channels"] if c["writer"] == "open" and c["reader"] == "open")
    alive = sum(1 for t in ends if not t.is_disconnected)
    emit("verified", both_open=both_open, alive_sockets=alive)
    await commands.expect("exit")
    await client.close()


async def workers_main(url: str, count: int, warmup: int, concurrency: int) -> None:
    """Client of case 4c: open worker sockets, each waiting for ``workerregistered``."""
    commands = Commands()
    clients: list[WorkerClient] = []

    async def connect() -> WorkerClient:
        return await WorkerClient.connect(url, timeout_s=30)

    clients += [await connect() for _ in range(warmup)]
    emit("warm")
    await commands.expect("go")
    started = time.perf_counter()
    clients += await bounded(concurrency, [connect] * count)
    seconds = time.perf_counter() - started
    registered = sum(1 for c in clients if c.registered.done() and not c.registered.exception())
    emit("done", registered=registered, seconds=seconds)
    await commands.expect("verify")
    listing = await clients[0].call("engine::workers::list", {})
    emit("verified", workers=len(listing["workers"]))
    await commands.expect("exit")


def client_fd_limit(wanted: int) -> None:
    """Raise this client's soft RLIMIT_NOFILE; fail clearly if the hard limit is too low."""
    soft = raise_nofile_limit(wanted)
    if soft < wanted:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        raise RuntimeError(f"the client needs {wanted} file descriptors but the hard limit is {hard} (ulimit -Hn)")


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One memory case: what the client does, how many items, and the target per item."""

    key: str
    name: str
    unit: str
    target_bytes: int
    count: int
    quick_count: int
    warmup: int
    fds_per_item: int


CASES = {
    "unconnected": Case(
        "unconnected", "4a. engine RSS per created, unconnected channel", "channel", 2 * KIB, 100_000, 10_000, 1_000, 0
    ),
    "connected": Case(
        "connected", "4b. engine RSS per channel, both ends connected, idle", "channel", 64 * KIB, 1_000, 200, 20, 2
    ),
    "workers": Case("workers", "4c. engine RSS per idle worker connection", "worker", 100 * KIB, 1_000, 200, 20, 1),
}


def measure_case(case: Case, quick: bool) -> Measurement:
    """Run one case in a fresh engine and return its report row."""
    count = case.quick_count if quick else case.count
    fds = (count + case.warmup) * case.fds_per_item + FD_SLACK
    soft = raise_nofile_limit(fds)  # inherited by the engine started below
    if soft < fds:
        raise RuntimeError(f"{case.key}: the engine needs {fds} file descriptors; raise the hard limit (ulimit -Hn)")
    concurrency = 256 if case.key == "unconnected" else 64
    args = ["--role", case.key, "--count", str(count), "--warmup", str(case.warmup), "--concurrency", str(concurrency)]
    # One client creates every channel, so the per-worker channel limit must not cap the count. The cost of a
    # channel does not depend on how many its creator holds, and more workers would add their own memory.
    engine_args = ["--worker-max-channels", str(count + case.warmup)]
    with engine_process(engine_args) as engine, contextlib.ExitStack() as stack:
        client = stack.enter_context(Child(f"memory-{case.key}", SCRIPT, [*args, "--url", engine.url], CHILD_TIMEOUT_S))
        client.expect("warm")
        baseline = settle_rss(engine.pid, SETTLE_S)
        client.send("go")
        done = client.expect("done")
        after = settle_rss(engine.pid, SETTLE_S)
        checks = []
        if case.key == "unconnected":
            if done["distinct"] != count or not done["separate_keys"]:
                raise RuntimeError(f"unconnected: {done['distinct']} distinct channels of {count}, or shared keys")
            checks.append(f"{count:,} distinct channels created in {done['seconds']:.1f} s")
        elif case.key == "connected":
            client.send("verify")
            verified = client.expect("verified")
            expected = count + case.warmup
            if verified["both_open"] != expected or verified["alive_sockets"] != 2 * expected:
                raise RuntimeError(f"connected: engine lists {verified} for {expected} channels")
            checks.append(f"engine::channels::list shows {verified['both_open']} channels with both ends open")
        else:
            client.send("verify")
            verified = client.expect("verified")
            if done["registered"] != count + case.warmup or verified["workers"] != count + case.warmup:
                raise RuntimeError(f"workers: {done['registered']} registered, engine lists {verified['workers']}")
            checks.append(f"engine::workers::list shows {verified['workers']} workers")
        client.send("exit")
    per_item = (after - baseline) / count
    return Measurement(
        name=case.name,
        result=f"{fmt_bytes(per_item)} per {case.unit}",
        score=per_item,
        target=case.target_bytes,
        target_text=f"≤ {fmt_bytes(case.target_bytes)}",
        higher_is_better=False,
        details=(
            f"{count:,} {case.unit}s after a warm-up of {case.warmup:,}; engine RSS {fmt_bytes(baseline)} → "
            f"{fmt_bytes(after)} (+{fmt_bytes(after - baseline)}); " + "; ".join(checks)
        ),
    )


def measure(quick: bool, cases: list[str] | None = None) -> list[Measurement]:
    """The report rows of the given cases (all by default), each in a fresh engine."""
    return [measure_case(CASES[key], quick) for key in cases or list(CASES)]


def run_client(args: argparse.Namespace) -> None:
    """The client role of ``args.role``'s case (it raises its own descriptor limit first)."""
    client_fd_limit((args.count + args.warmup) * CASES[args.role].fds_per_item + FD_SLACK)
    mains = {"unconnected": unconnected_main, "connected": connected_main, "workers": workers_main}
    role_main = mains[args.role]
    run_role(lambda: role_main(args.url, args.count, args.warmup, args.concurrency), CHILD_TIMEOUT_S)


def main() -> None:
    """Command line: run as the driver, or as one client role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--case", choices=list(CASES), action="append", help="run only this case (repeatable)")

    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.case),
        dict.fromkeys(CASES, run_client),
        quick_help="10,000 / 200 / 200 items",
        options=options,
        role_options={"url": str, "count": int, "warmup": int, "concurrency": int},
    )


if __name__ == "__main__":
    main()
