"""Trigger round trips between two worker processes through a fresh engine, with our SDK and the official one.

The callee process registers ``bench::echo`` (``def echo(data): return data``) and ``bench::echo_async``
(``async def``). With our SDK a ``def`` handler runs in the SDK's handler thread pool and an ``async def``
one on the SDK's loop; the official SDK (PyPI ``iii-sdk`` 0.25.0, in its own venv:
``bench/_official_sdk_calls.py``) runs a ``def`` handler on a new thread per call and an ``async def`` one
on its loop. The caller process is another worker of the same SDK as the callee; for each caller style it
warms up, then makes sequential calls (one in flight) and records every round trip (from just before the
call to just after its result). Our caller styles:

* **sync**: ``client.trigger(request)`` from plain code (blocks on the SDK's loop thread);
* **async**: ``await client.trigger_async(request)`` inside ``asyncio.run`` (the user's loop);
* **async (await trigger)**: ``await client.trigger(request)`` inside ``asyncio.run`` (the dual-mode form);
* **async handler**: ``await client.trigger(request)`` inside an ``async def`` function of the caller
  worker (triggered once from plain code), so the calls start on the SDK's own loop.

The official SDK's ``trigger`` is blocking only (it refuses to run on its loop's thread) and
``trigger_async`` is its awaitable form, so its styles are ``iii.trigger`` from plain code, ``await
iii.trigger_async`` inside ``asyncio.run`` and ``await iii.trigger_async`` inside an ``async def`` handler
of the caller; each is compared with our row of the same style (6a, 6b, 6d). Its workers run with
OpenTelemetry and metrics reporting off (both on by default), as in ``bench/sdk_relay.py``.

Each style is measured against both callees; the **sync overhead** is the sync median minus the async
(``trigger_async``) median. The throughput rows make 64 calls in flight with ``asyncio.gather`` (64
coroutines, each calling in a loop) inside ``asyncio.run``, and inside an async handler, with each SDK. For
reference, the lean picows clients of ``bench/invocations.py`` (no SDK) measure the same sequential round
trip and the same 64-in-flight rate in the same session. Our session, the official SDK's and the lean
clients' runs are interleaved run by run. The data is the same ~100-byte object as in
``bench/invocations.py``; every result is checked.

Run alone: ``python bench/sdk_calls.py [--quick] [--repeat N] [--no-baseline] [--no-official]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import invocations
from _common import (
    DRIVE_FUNCTION,
    ECHO_ASYNC_FUNCTION,
    ECHO_FUNCTION,
    CallStats,
    Child,
    CpuWindow,
    Measurement,
    bench_main,
    emit,
    engine_process,
    fmt_runs,
    measured_call_loop,
    median,
    run_sdk_role,
    sdk_worker,
    serve_call_jobs,
    serve_echoes,
    sync_call_loop,
    wait_until_served,
)
from sdk_relay import official_python

CHILD_TIMEOUT_S: Final = 300.0
SCRIPT: Final = "sdk_calls.py"
OFFICIAL_SCRIPT: Final = "_official_sdk_calls.py"
ECHO: Final = ECHO_FUNCTION
ECHO_ASYNC: Final = ECHO_ASYNC_FUNCTION
DRIVE: Final = DRIVE_FUNCTION
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
OFFICIAL_STYLES: Final = ("sync", "async", "handler")
"""The official SDK's caller styles; each has the same name as our style it is compared with."""
OFFICIAL_LETTERS: Final = {"sync": "f", "async": "g", "handler": "h"}
OFFICIAL_LABELS: Final = {
    "sync": "official SDK 0.25.0, sync `iii.trigger` from plain code",
    "async": "official SDK 0.25.0, async `await iii.trigger_async` in asyncio.run",
    "handler": "official SDK 0.25.0, async `await iii.trigger_async` inside an async handler (SDK loop)",
}
IN_FLIGHT: Final = 64
THROUGHPUT_STYLES: Final = ("async", "handler")
"""The 64-in-flight styles of both SDKs: ``trigger_async`` in asyncio.run, and inside an async handler."""
THROUGHPUT_LETTERS: Final = {
    ("ours", "async"): "a",
    ("ours", "handler"): "b",
    ("official", "async"): "c",
    ("official", "handler"): "d",
}


# --- roles (child processes) -----------------------------------------------------------------------------


def callee_main(url: str) -> None:
    """Serve both echo functions until stdin closes."""
    serve_echoes(sdk_worker(url, "callee"))


def run_style(client: Any, style: str, function_id: str, calls: int, in_flight: int, warmup: int) -> CallStats:
    """Warm up, then measure one caller style of ours against one callee function."""
    if style == "sync":
        return sync_call_loop(client.trigger, function_id, calls, warmup)
    if style in ("async", "async-trigger"):
        call = client.trigger_async if style == "async" else client.trigger
        return asyncio.run(measured_call_loop(call, function_id, calls, in_flight, warmup))
    job = {"function_id": function_id, "calls": calls, "in_flight": in_flight, "warmup": warmup}
    result = client.trigger({"function_id": DRIVE, "payload": job, "timeout_ms": int(CHILD_TIMEOUT_S * 1000)})
    return CallStats(**result)


def caller_main(url: str) -> None:
    """Wait for the callee, then run ``go <style> <function> <calls> <in_flight> <warmup>`` commands."""
    client = sdk_worker(url, "caller")

    async def drive(job: dict[str, Any]) -> dict[str, Any]:
        stats = await measured_call_loop(
            client.trigger, job["function_id"], job["calls"], job["in_flight"], job["warmup"]
        )
        return stats.as_dict()

    try:
        client.register_function(DRIVE, drive)
        wait_until_served(client.trigger, [ECHO, ECHO_ASYNC])  # DRIVE is ours: registered before any call is sent
        emit("ready")
        serve_call_jobs(lambda *job: run_style(client, *job))
    finally:
        client.shutdown()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class StyleRun:
    """One measured caller style against one callee, with the CPU the three processes spent."""

    stats: CallStats
    cpu: CpuWindow

    @property
    def calls_per_s(self) -> float:
        """Completed calls per second."""
        return self.stats.calls / self.stats.seconds

    def cpu_us_per_call(self, name: str) -> float:
        """CPU of ``name`` (engine, caller, callee) per call, in µs."""
        return self.cpu.used[name] / self.stats.calls * 1e6


Key = tuple[str, str, int]
"""(caller style, callee kind, calls in flight)."""
Session = dict[Key, StyleRun]


def run_session(jobs: Sequence[Key], calls: dict[int, int], warmup: int, official: Path | None = None) -> Session:
    """One fresh engine, callee and caller; every job measured in turn (each in its own CPU window).

    With ``official`` (the official SDK's venv interpreter) both workers run the official SDK.
    """
    results: Session = {}
    script, python = (OFFICIAL_SCRIPT, official) if official is not None else (SCRIPT, None)
    sdk = "official" if official is not None else "ours"
    with engine_process() as engine, contextlib.ExitStack() as stack:
        args = ["--url", engine.url, *(["--timeout", str(CHILD_TIMEOUT_S)] if official is not None else [])]
        callee = stack.enter_context(
            Child(f"{sdk}-callee", script, ["--role", "callee", *args], CHILD_TIMEOUT_S, python=python)
        )
        callee.expect("registered", 60)
        caller = stack.enter_context(
            Child(f"{sdk}-caller", script, ["--role", "caller", *args], CHILD_TIMEOUT_S, python=python)
        )
        caller.expect("ready", 60)
        for style, kind, in_flight in jobs:
            window = CpuWindow({"engine": engine.pid, "caller": caller.pid, "callee": callee.pid})
            caller.send(f"go {style} {CALLEES[kind]} {calls[in_flight]} {in_flight} {warmup}")
            result = caller.expect("result")
            window.stop()
            stats = CallStats(**{k: v for k, v in result.items() if k != "event"})
            if stats.mismatches or stats.calls != calls[in_flight]:
                raise RuntimeError(
                    f"sdk calls ({sdk}, {style}, {kind}): {stats.calls} calls, {stats.mismatches} mismatches"
                )
            results[(style, kind, in_flight)] = StyleRun(stats, window)
        caller.send("exit")
        callee.send("exit")
    return results


def cpu_text(runs: Sequence[StyleRun]) -> str:
    """Median CPU per call of engine, caller and callee, and the foreign share."""
    parts = [f"{name} {median([r.cpu_us_per_call(name) for r in runs]):.0f}" for name in ("engine", "caller", "callee")]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU µs per call: " + ", ".join(parts) + f"; other processes {foreign:.0f}% of a core"


def median_diffs(sessions: Sequence[Session], style: str, other: str, kind: str) -> list[float]:
    """Per run: the sequential median of ``style`` minus that of ``other``, against the ``kind`` callee."""
    return [s[(style, kind, 1)].stats.median_us - s[(other, kind, 1)].stats.median_us for s in sessions]


def seq_median(sessions: Sequence[Session], style: str, kind: str) -> float:
    """Median over the runs of one style's sequential median against the ``kind`` callee."""
    return median([s[(style, kind, 1)].stats.median_us for s in sessions])


def rate(sessions: Sequence[Session], style: str, kind: str) -> float:
    """Median over the runs of one style's calls/s with 64 in flight against the ``kind`` callee."""
    return median([s[(style, kind, IN_FLIGHT)].calls_per_s for s in sessions])


def lean_multiples(sessions: Sequence[Session], lean: Sequence[invocations.CallRun], style: str, in_flight: int) -> str:
    """Run by run, per callee: our median / the lean client's (sequential), or our rate / theirs (64 in flight)."""
    parts = []
    for kind in CALLEES:
        runs = [s[(style, kind, in_flight)] for s in sessions]
        if in_flight == 1:
            values = [r.stats.median_us / base.median_us for r, base in zip(runs, lean, strict=True)]
        else:
            values = [r.calls_per_s / base.calls_per_s for r, base in zip(runs, lean, strict=True)]
        parts.append(f"{kind} [{fmt_runs(values)}]")
    return "; ".join(parts)


def latency_cells(sessions: Sequence[Session], style: str) -> tuple[str, str]:
    """The result cell (median / p99 per callee) and the details of one style's sequential runs."""
    cells, notes = [], []
    for kind in CALLEES:
        runs = [s[(style, kind, 1)] for s in sessions]
        cells.append(f"{kind}: {seq_median(sessions, style, kind):.0f} / {median([r.stats.p99_us for r in runs]):.0f}")
        notes.append(
            f"{kind} callee: medians [{fmt_runs([r.stats.median_us for r in runs], 0)}] µs, "
            f"p99 [{fmt_runs([r.stats.p99_us for r in runs], 0)}] µs, {cpu_text(runs)}"
        )
    calls = sessions[0][(style, "def", 1)].stats.calls
    return "median / p99 µs — " + "; ".join(cells), f"{calls:,} sequential calls per run after a warm-up; " + "; ".join(
        notes
    )


def latency_rows(
    sessions: Sequence[Session], lean: Sequence[invocations.CallRun], styles: Sequence[str]
) -> list[Measurement]:
    """The lean client's round trip, then one row per caller style of ours: median and p99 against both callees."""
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
        result, details = latency_cells(sessions, style)
        def_median = seq_median(sessions, style, "def")
        over = ""
        if lean_median is not None:
            times = "; ".join(f"{kind} {seq_median(sessions, style, kind) / lean_median:.2f}x" for kind in CALLEES)
            over = f"+{def_median - lean_median:.0f} µs vs lean client ({times} its median)"
            details += "; multiple of the lean client's median, run by run: " + lean_multiples(sessions, lean, style, 1)
        rows.append(
            Measurement(
                name=f"6{LETTERS[style]}. {STYLE_LABELS[style]}",
                result=result,
                score=def_median,
                target=None,
                target_text="— (no target)",
                ratio_text=over or "reference",
                details=details,
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


def official_latency_rows(theirs: Sequence[Session], ours: Sequence[Session]) -> list[Measurement]:
    """One row per official caller style, with how many times as fast ours is in the same style (6a, 6b, 6d)."""
    rows = []
    for style in OFFICIAL_STYLES:
        result, details = latency_cells(theirs, style)
        speedups = []
        for kind in CALLEES:
            ratio = seq_median(theirs, style, kind) / seq_median(ours, style, kind)
            pairs = [
                t[(style, kind, 1)].stats.median_us / o[(style, kind, 1)].stats.median_us
                for t, o in zip(theirs, ours, strict=True)
            ]
            speedups.append((kind, ratio, pairs))
        ours_row = f"6{LETTERS[style]}"
        rows.append(
            Measurement(
                name=f"6{OFFICIAL_LETTERS[style]}. {OFFICIAL_LABELS[style]}",
                result=result,
                score=seq_median(theirs, style, "def"),
                target=None,
                target_text="— (reference)",
                ratio_text=f"ours ({ours_row}) / official: "
                + "; ".join(f"{kind} {ratio:.2f}x as fast" for kind, ratio, _ in speedups),
                details=details
                + "; official median / our median ("
                + ours_row
                + "), run by run: "
                + "; ".join(f"{kind} [{fmt_runs(pairs)}]" for kind, _, pairs in speedups),
            )
        )
    return rows


def throughput_row(
    number: str, sdk: str, style: str, sessions: Sequence[Session], ratio_text: str, extra: str
) -> Measurement:
    """Calls/s with 64 in flight of one SDK's style, against both callees."""
    cells, notes = [], []
    for kind in CALLEES:
        runs = [s[(style, kind, IN_FLIGHT)] for s in sessions]
        cells.append(f"{kind}: {rate(sessions, style, kind):,.0f}")
        notes.append(
            f"{kind} callee: [{fmt_runs([r.calls_per_s / 1000 for r in runs], 1)}] k calls/s, "
            f"round trip median {median([r.stats.median_us for r in runs]):.0f} µs, {cpu_text(runs)}"
        )
    where = "in asyncio.run" if style == "async" else "inside an async handler"
    api = "`trigger_async`" if sdk == "official" or style == "async" else "`trigger`"
    prefix = f"{number}{THROUGHPUT_LETTERS[(sdk, style)]}. " + ("official SDK 0.25.0, " if sdk == "official" else "")
    return Measurement(
        name=f"{prefix}{IN_FLIGHT} in flight via asyncio.gather {where} ({api})",
        result="calls/s — " + "; ".join(cells),
        score=rate(sessions, style, "def"),
        target=None,
        target_text="— (no target)" if sdk == "ours" else "— (reference)",
        ratio_text=ratio_text or "reference",
        details=f"{sessions[0][(style, 'def', IN_FLIGHT)].stats.calls:,} calls per run; " + "; ".join(notes) + extra,
    )


def throughput_rows(
    ours: Sequence[Session], theirs: Sequence[Session], lean: Sequence[invocations.CallRun], number: str
) -> list[Measurement]:
    """The lean clients' rate, ours per style (with the ratio to the lean clients), the official SDK's per style."""
    rows = []
    lean_rate = median([r.calls_per_s for r in lean]) if lean else None
    if lean:
        rows.append(
            Measurement(
                name=f"{number}. lean picows clients, {IN_FLIGHT} in flight (no SDK)",
                result=f"{lean_rate:,.0f} calls/s",
                score=lean_rate or 0.0,
                target=None,
                target_text="— (reference)",
                details=f"{lean[0].calls:,} calls per run, "
                f"[{fmt_runs([r.calls_per_s / 1000 for r in lean], 1)}] k calls/s",
            )
        )
    for style in THROUGHPUT_STYLES:
        ratio = extra = ""
        if lean_rate is not None:
            ratio = "; ".join(f"{kind} {rate(ours, style, kind) / lean_rate:.2f}x" for kind in CALLEES)
            ratio += " lean clients' rate"
            extra = "; multiple of the lean clients' rate, run by run: " + lean_multiples(ours, lean, style, IN_FLIGHT)
        rows.append(throughput_row(number, "ours", style, ours, ratio, extra))
    for style in THROUGHPUT_STYLES if theirs else ():
        ours_letter = THROUGHPUT_LETTERS[("ours", style)]
        parts, runs = [], []
        for kind in CALLEES:
            parts.append(f"{kind} {rate(ours, style, kind) / rate(theirs, style, kind):.2f}x")
            pairs = [
                o[(style, kind, IN_FLIGHT)].calls_per_s / t[(style, kind, IN_FLIGHT)].calls_per_s
                for o, t in zip(ours, theirs, strict=True)
            ]
            runs.append(f"{kind} [{fmt_runs(pairs)}]")
        ratio = f"ours ({number}{ours_letter}) / official: " + "; ".join(parts)
        extra = f"; our rate ({number}{ours_letter}) / official rate, run by run: " + "; ".join(runs)
        rows.append(throughput_row(number, "official", style, theirs, ratio, extra))
    return rows


def measure(
    quick: bool, verify: bool, repeat: int, *, baseline: bool = True, official: bool = True
) -> list[Measurement]:
    """Every style of both SDKs against both callees, in fresh processes per run; the lean clients interleaved.

    ``verify`` is accepted for symmetry with the other parts: every result's ``seq`` is always checked.
    """
    del verify
    calls = {1: 500, IN_FLIGHT: 2_000} if quick else {1: 5_000, IN_FLIGHT: 20_000}
    warmup = 200 if quick else 1_000
    jobs: list[Key] = [(style, kind, 1) for style in STYLES for kind in CALLEES]
    jobs += [(style, kind, IN_FLIGHT) for style in THROUGHPUT_STYLES for kind in CALLEES]
    official_jobs: list[Key] = [(style, kind, 1) for style in OFFICIAL_STYLES for kind in CALLEES]
    official_jobs += [(style, kind, IN_FLIGHT) for style in THROUGHPUT_STYLES for kind in CALLEES]
    official_env = official_python() if official else None
    ours: list[Session] = []
    theirs: list[Session] = []
    lean_seq: list[invocations.CallRun] = []
    lean_many: list[invocations.CallRun] = []
    for _ in range(repeat):
        if baseline:
            lean_seq.append(invocations.run_once(calls[1], 1, warmup, False))
            lean_many.append(invocations.run_once(calls[IN_FLIGHT], IN_FLIGHT, warmup, False))
        ours.append(run_session(jobs, calls, warmup))
        if official_env is not None:
            theirs.append(run_session(official_jobs, calls, warmup, official_env))
    rows = latency_rows(ours, lean_seq, STYLES)
    if theirs:
        rows += official_latency_rows(theirs, ours)
    return rows + throughput_rows(ours, theirs, lean_many, "7")


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-baseline", action="store_true", help="skip the lean-client references")
        parser.add_argument("--no-official", action="store_true", help="skip the official SDK")

    bench_main(
        __doc__,
        lambda args: measure(
            args.quick, args.verify, args.repeat, baseline=not args.no_baseline, official=not args.no_official
        ),
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
