"""Trigger round trips with our SDK between two worker processes, in every API style, through a fresh engine.

The callee process registers ``bench::echo`` (``def echo(data): return data``, run in the SDK's handler
thread pool) and ``bench::echo_async`` (``async def``, run on the SDK's loop). The caller process is another
worker; for each caller style it warms up, then makes sequential calls (one in flight) and records every
round trip (from just before the call to just after its result):

* **sync**: ``client.trigger(request)`` from plain code (blocks on the SDK's loop thread);
* **async**: ``await client.trigger_async(request)`` inside ``asyncio.run`` (the user's loop);
* **async (await trigger)**: ``await client.trigger(request)`` inside ``asyncio.run`` (the dual-mode form);
* **async handler**: ``await client.trigger(request)`` inside an ``async def`` function of the caller
  worker (triggered once from plain code), so the calls start on the SDK's own loop.

Each style is measured against both callees; the **sync overhead** is the sync median minus the async
(``trigger_async``) median. The throughput rows make 64 calls in flight with ``asyncio.gather`` (64
coroutines, each calling in a loop) inside ``asyncio.run``, and inside an async handler. For reference, the
lean picows client of ``bench/invocations.py`` (no SDK) measures the same sequential round trip in the same
session. The data is the same ~100-byte object as in ``bench/invocations.py``; every result is checked.

Run alone: ``python bench/sdk_calls.py [--quick] [--repeat N] [--no-baseline]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import invocations
from _common import (
    Child,
    CpuWindow,
    Measurement,
    bench_main,
    emit,
    engine_process,
    fmt_runs,
    median,
    percentile,
    run_sdk_role,
    sdk_worker,
)

CHILD_TIMEOUT_S: Final = 300.0
SCRIPT: Final = "sdk_calls.py"
ECHO: Final = "bench::echo"
ECHO_ASYNC: Final = "bench::echo_async"
DRIVE: Final = "bench::drive"
CALLEES: Final = {"def": ECHO, "async def": ECHO_ASYNC}
"""The callee's two handlers, by the kind of function they are."""
STYLES: Final = ("sync", "async", "async-trigger", "handler")
LETTERS: Final = {"sync": "a", "async": "b", "async-trigger": "c", "handler": "d"}
"""Each caller style's row letter (6a-6d; 6e is the sync overhead)."""
STYLE_LABELS: Final = {
    "sync": "sync `client.trigger` from plain code",
    "async": "async `await client.trigger_async` in asyncio.run",
    "async-trigger": "async `await client.trigger` in asyncio.run",
    "handler": "async `await client.trigger` inside an async handler (SDK loop)",
}
IN_FLIGHT: Final = 64
THROUGHPUT_STYLES: Final = ("async", "handler")
NOTE: Final = invocations.NOTE


# --- roles (child processes) -----------------------------------------------------------------------------


def echo(data: Any) -> Any:
    """The sync callee."""
    return data


async def echo_async(data: Any) -> Any:
    """The async callee."""
    return data


def callee_main(url: str) -> None:
    """Serve both echo functions until stdin closes."""
    client = sdk_worker(url, "callee")
    try:
        client.register_function(ECHO, echo)
        client.register_function(ECHO_ASYNC, echo_async)
        emit("registered")
        while sys.stdin.readline().strip() not in ("", "exit"):
            pass
    finally:
        client.shutdown()


def request(function_id: str, seq: int) -> dict[str, Any]:
    """One call's request; the data is the object of ``bench/invocations.py``."""
    return {"function_id": function_id, "payload": {"seq": seq, "sku": "SKU-0001", "note": NOTE}}


@dataclass
class Stats:
    """What a caller style measured."""

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


def summarize(latencies_ns: list[int], seconds: float, mismatches: int) -> Stats:
    """Median, p99 and rate of a run."""
    ordered = sorted(latencies_ns)
    return Stats(
        calls=len(ordered),
        seconds=seconds,
        median_us=percentile(ordered, 0.5) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        mismatches=mismatches,
    )


async def call_loop(
    call: Callable[[dict[str, Any]], Awaitable[Any]], function_id: str, calls: int, in_flight: int
) -> Stats:
    """``calls`` calls with ``in_flight`` coroutines calling one after another (``asyncio.gather``)."""
    latencies: list[int] = []
    mismatches = 0
    per_task, extra = divmod(calls, in_flight)

    async def one_after_another(first: int, count: int) -> None:
        nonlocal mismatches
        for seq in range(first, first + count):
            started = time.perf_counter_ns()
            result = await call(request(function_id, seq))
            latencies.append(time.perf_counter_ns() - started)
            if result["seq"] != seq:
                mismatches += 1

    counts = [per_task + (1 if index < extra else 0) for index in range(in_flight)]
    firsts = [sum(counts[:index]) for index in range(in_flight)]
    started = time.perf_counter()
    await asyncio.gather(*(one_after_another(first, count) for first, count in zip(firsts, counts, strict=True)))
    return summarize(latencies, time.perf_counter() - started, mismatches)


def sync_loop(client: Any, function_id: str, calls: int) -> Stats:
    """Sequential ``client.trigger`` calls from plain code."""
    latencies: list[int] = []
    mismatches = 0
    started = time.perf_counter()
    for seq in range(calls):
        begun = time.perf_counter_ns()
        result = client.trigger(request(function_id, seq))
        latencies.append(time.perf_counter_ns() - begun)
        if result["seq"] != seq:
            mismatches += 1
    return summarize(latencies, time.perf_counter() - started, mismatches)


def wait_until_served(client: Any, function_ids: Sequence[str], timeout_s: float = 30.0) -> None:
    """Call each function until it stops failing with ``function_not_found``."""
    from iii import InvocationError

    deadline = time.monotonic() + timeout_s
    for function_id in function_ids:
        while True:
            try:
                client.trigger({**request(function_id, 0), "timeout_ms": 5000})
                break
            except InvocationError as exc:
                if exc.code != "function_not_found" or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def run_style(client: Any, style: str, function_id: str, calls: int, in_flight: int, warmup: int) -> Stats:
    """Warm up, then measure one caller style against one callee function."""
    if style == "sync":
        if warmup:
            sync_loop(client, function_id, warmup)
        return sync_loop(client, function_id, calls)
    if style in ("async", "async-trigger"):
        call = client.trigger_async if style == "async" else client.trigger

        async def both() -> Stats:
            if warmup:
                await call_loop(call, function_id, warmup, in_flight)
            return await call_loop(call, function_id, calls, in_flight)

        return asyncio.run(both())
    job = {"function_id": function_id, "calls": calls, "in_flight": in_flight, "warmup": warmup}
    result = client.trigger({"function_id": DRIVE, "payload": job, "timeout_ms": int(CHILD_TIMEOUT_S * 1000)})
    return Stats(**result)


def caller_main(url: str) -> None:
    """Wait for the callee, then run ``go <style> <function> <calls> <in_flight> <warmup>`` commands."""
    client = sdk_worker(url, "caller")

    async def drive(job: dict[str, Any]) -> dict[str, Any]:
        if job["warmup"]:
            await call_loop(client.trigger, job["function_id"], job["warmup"], job["in_flight"])
        stats = await call_loop(client.trigger, job["function_id"], job["calls"], job["in_flight"])
        return stats.as_dict()

    try:
        client.register_function(DRIVE, drive)
        wait_until_served(client, [ECHO, ECHO_ASYNC])  # DRIVE is ours: registered before any call is sent
        emit("ready")
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "exit":
                break
            _, style, function_id, calls, in_flight, warmup = words
            stats = run_style(client, style, function_id, int(calls), int(in_flight), int(warmup))
            emit("result", **stats.as_dict())
    finally:
        client.shutdown()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class StyleRun:
    """One measured caller style against one callee, with the CPU the three processes spent."""

    stats: Stats
    cpu: CpuWindow

    def cpu_us_per_call(self, name: str) -> float:
        """CPU of ``name`` (engine, caller, callee) per call, in µs."""
        return self.cpu.used[name] / self.stats.calls * 1e6


Key = tuple[str, str, int]
"""(caller style, callee kind, calls in flight)."""


def run_session(jobs: Sequence[Key], calls: dict[int, int], warmup: int) -> dict[Key, StyleRun]:
    """One fresh engine, callee and caller; every job measured in turn (each in its own CPU window)."""
    results: dict[Key, StyleRun] = {}
    with engine_process() as engine, contextlib.ExitStack() as stack:
        callee = stack.enter_context(
            Child("callee", SCRIPT, ["--role", "callee", "--url", engine.url], CHILD_TIMEOUT_S)
        )
        callee.expect("registered", 60)
        caller = stack.enter_context(
            Child("caller", SCRIPT, ["--role", "caller", "--url", engine.url], CHILD_TIMEOUT_S)
        )
        caller.expect("ready", 60)
        for style, kind, in_flight in jobs:
            window = CpuWindow({"engine": engine.pid, "caller": caller.pid, "callee": callee.pid})
            caller.send(f"go {style} {CALLEES[kind]} {calls[in_flight]} {in_flight} {warmup}")
            result = caller.expect("result")
            window.stop()
            stats = Stats(**{k: v for k, v in result.items() if k != "event"})
            if stats.mismatches or stats.calls != calls[in_flight]:
                raise RuntimeError(f"sdk calls ({style}, {kind}): {stats.calls} calls, {stats.mismatches} mismatches")
            results[(style, kind, in_flight)] = StyleRun(stats, window)
        caller.send("exit")
        callee.send("exit")
    return results


def cpu_text(runs: Sequence[StyleRun]) -> str:
    """Median CPU per call of engine, caller and callee, and the foreign share."""
    parts = [f"{name} {median([r.cpu_us_per_call(name) for r in runs]):.0f}" for name in ("engine", "caller", "callee")]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU µs per call: " + ", ".join(parts) + f"; other processes {foreign:.0f}% of a core"


def median_diffs(sessions: Sequence[dict[Key, StyleRun]], style: str, other: str, kind: str) -> list[float]:
    """Per run: the sequential median of ``style`` minus that of ``other``, against the ``kind`` callee."""
    return [s[(style, kind, 1)].stats.median_us - s[(other, kind, 1)].stats.median_us for s in sessions]


def latency_rows(
    sessions: Sequence[dict[Key, StyleRun]], lean: Sequence[invocations.CallRun], styles: Sequence[str]
) -> list[Measurement]:
    """One row per caller style: median and p99 against both callees, side by side."""
    rows = []
    lean_median = median([r.median_us for r in lean]) if lean else None
    if lean:
        rows.append(
            Measurement(
                name="6. lean picows client → engine → lean client, sequential (no SDK)",
                result=f"median {lean_median:.0f} µs, p99 {median([r.p99_us for r in lean]):.0f} µs",
                score=lean_median or 0.0,
                target=None,
                target_text="— (reference)",
                details=f"{lean[0].calls:,} calls per run, medians [{fmt_runs([r.median_us for r in lean], 0)}] µs",
            )
        )
    for style in styles:
        cells, notes = [], []
        for kind in CALLEES:
            runs = [s[(style, kind, 1)] for s in sessions]
            med = median([r.stats.median_us for r in runs])
            p99 = median([r.stats.p99_us for r in runs])
            cells.append(f"{kind}: {med:.0f} / {p99:.0f}")
            notes.append(
                f"{kind} callee: medians [{fmt_runs([r.stats.median_us for r in runs], 0)}] µs, "
                f"p99 [{fmt_runs([r.stats.p99_us for r in runs], 0)}] µs, {cpu_text(runs)}"
            )
        def_median = median([s[(style, "def", 1)].stats.median_us for s in sessions])
        over = f"+{def_median - lean_median:.0f} µs vs lean client" if lean_median is not None else ""
        calls = sessions[0][(style, "def", 1)].stats.calls
        rows.append(
            Measurement(
                name=f"6{LETTERS[style]}. {STYLE_LABELS[style]}",
                result="median / p99 µs — " + "; ".join(cells),
                score=def_median,
                target=None,
                target_text="— (no target)",
                ratio_text=over or "reference",
                details=f"{calls:,} sequential calls per run after a warm-up; " + "; ".join(notes),
            )
        )
    if "sync" in styles and "async" in styles:
        parts = [f"{kind}: {median(median_diffs(sessions, 'sync', 'async', kind)):+.0f} µs" for kind in CALLEES]
        diffs_def = median_diffs(sessions, "sync", "async", "def")
        handler = ""
        if "handler" in styles:
            versus = [f"{kind}: {median(median_diffs(sessions, 'sync', 'handler', kind)):+.0f} µs" for kind in CALLEES]
            handler = "; sync median minus the async-handler (SDK loop) median: " + ", ".join(versus)
        rows.append(
            Measurement(
                name="6e. sync overhead (sync median minus async `trigger_async` median)",
                result="; ".join(parts),
                score=median(diffs_def),
                target=None,
                target_text="— (no target)",
                ratio_text="difference",
                details=f"run-by-run, def callee: [{fmt_runs(diffs_def, 0)}] µs{handler}",
            )
        )
    return rows


def throughput_rows(sessions: Sequence[dict[Key, StyleRun]], number: str) -> list[Measurement]:
    """Calls/s with 64 in flight, per caller style, against both callees."""
    rows = []
    letters = iter("abcdefgh")
    for style in THROUGHPUT_STYLES:
        cells, notes = [], []
        for kind in CALLEES:
            runs = [s[(style, kind, IN_FLIGHT)] for s in sessions]
            rate = median([r.stats.calls / r.stats.seconds for r in runs])
            cells.append(f"{kind}: {rate:,.0f}")
            notes.append(
                f"{kind} callee: [{fmt_runs([r.stats.calls / r.stats.seconds / 1000 for r in runs], 1)}] k calls/s, "
                f"round trip median {median([r.stats.median_us for r in runs]):.0f} µs, {cpu_text(runs)}"
            )
        where = "in asyncio.run (`trigger_async`)" if style == "async" else "inside an async handler (`trigger`)"
        rate_def = median(
            [s[(style, "def", IN_FLIGHT)].stats.calls / s[(style, "def", IN_FLIGHT)].stats.seconds for s in sessions]
        )
        rows.append(
            Measurement(
                name=f"{number}{next(letters)}. {IN_FLIGHT} in flight via asyncio.gather {where}",
                result="calls/s — " + "; ".join(cells),
                score=rate_def,
                target=None,
                target_text="— (no target)",
                ratio_text="reference",
                details=f"{sessions[0][(style, 'def', IN_FLIGHT)].stats.calls:,} calls per run; " + "; ".join(notes),
            )
        )
    return rows


def measure(quick: bool, verify: bool, repeat: int, *, baseline: bool = True) -> list[Measurement]:
    """Every style against both callees, in fresh processes per run; the lean client's round trip interleaved.

    ``verify`` is accepted for symmetry with the other parts: every result's ``seq`` is always checked.
    """
    del verify
    calls = {1: 500, IN_FLIGHT: 2_000} if quick else {1: 5_000, IN_FLIGHT: 20_000}
    warmup = 200 if quick else 1_000
    jobs: list[Key] = [(style, kind, 1) for style in STYLES for kind in CALLEES]
    jobs += [(style, kind, IN_FLIGHT) for style in THROUGHPUT_STYLES for kind in CALLEES]
    sessions: list[dict[Key, StyleRun]] = []
    lean: list[invocations.CallRun] = []
    for _ in range(repeat):
        if baseline:
            lean.append(invocations.run_once(calls[1], 1, warmup, False))
        sessions.append(run_session(jobs, calls, warmup))
    return latency_rows(sessions, lean, STYLES) + throughput_rows(sessions, "7")


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-baseline", action="store_true", help="skip the lean-client reference")

    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.verify, args.repeat, baseline=not args.no_baseline),
        {
            "callee": lambda args: run_sdk_role(lambda: callee_main(args.url), CHILD_TIMEOUT_S),
            "caller": lambda args: run_sdk_role(lambda: caller_main(args.url), CHILD_TIMEOUT_S),
        },
        quick_help="500 sequential / 2,000 concurrent calls, one run",
        verify_help="accepted; results are always checked",
        default_repeat=3,
        options=options,
        role_options={"url": str},
    )


if __name__ == "__main__":
    main()
