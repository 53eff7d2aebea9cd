"""What the observability module's ingestion costs the engine (it runs by default; the official Python SDK sends a
span per execution of a handler, batched every 100 ms).

* **micro**: the engine CPU per span and per log record received. Telemetry messages are captured from two
  official Python SDK workers (PyPI ``iii-sdk`` 0.25.0, telemetry on, ``bench/_official_sdk_otel.py``), one
  calling the other through an in-process engine; then a fresh module's ``receive`` is timed over them (``--repeat``
  passes), as are single-record log messages as the SDKs send them (``tests/modules/observability/frames.py``).
* **calls**: the same official caller's calls/s (``--in-flight`` at once, for ``--seconds``) through a fresh
  engine process with the default modules and with the same list less ``observability``, alternating run by
  run (``--runs`` pairs), with the engine's CPU per call over each measured window.
* **engine spans**: what the engine's own spans cost it (when a module receives telemetry it records a ``call
  <fn>`` span per routed call that came in a sampled trace): the lean workers of part 3 (``bench/invocations.py``:
  no SDK, no telemetry of their own, 64 calls in flight, ``--span-calls`` calls) through a fresh engine with the
  same list of modules less ``observability``, with the default modules and calls in no trace, and with the
  default modules and every call carrying a sampled ``traceparent``, rotating (``--runs`` rounds); calls/s and
  the engine's CPU per call.

Run: ``python bench/observability.py [--runs N] [--seconds S] [--in-flight K] [--repeat R] [--span-calls N]
[--no-calls] [--only-spans]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from _common import BENCH_DIR, cpu_seconds, engine_process
from invocations import run_workers
from sdk_relay import official_python

from iii.engine.config import EngineConfig
from iii.engine.server import Engine
from iii.modules.observability import ObservabilityModule, otlp

WORKER: Final = BENCH_DIR / "_official_sdk_otel.py"
DEFAULT_MODULES: Final = "state,stream,pubsub,cron,queue,http_functions,observability"
WITHOUT: Final = DEFAULT_MODULES.removesuffix(",observability")


def run_worker(python: Path, url: str, seconds: float, in_flight: int, engine_pid: int | None) -> dict[str, float]:
    """Run the official worker; its calls/s and (with ``engine_pid``) the engine's CPU µs per call measured."""
    args = [str(python), str(WORKER), "--url", url, "--seconds", str(seconds), "--in-flight", str(in_flight)]
    callee = subprocess.Popen([*args, "--role", "callee"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert callee.stdout is not None
        callee.stdout.readline()  # ready
        return _run_caller([*args, "--role", "caller"], engine_pid)
    finally:
        assert callee.stdin is not None
        callee.stdin.close()
        callee.wait(60)


def _run_caller(args: list[str], engine_pid: int | None) -> dict[str, float]:
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as worker:
        assert worker.stdout is not None
        cpu0 = 0.0
        result: dict[str, float] | None = None
        for line in worker.stdout:
            message = json.loads(line)
            if "measuring" in message:
                cpu0 = cpu_seconds(engine_pid) if engine_pid is not None else 0.0
            else:
                cpu1 = cpu_seconds(engine_pid) if engine_pid is not None else 0.0
                result = {"rate": message["calls"] / message["seconds"], "calls": message["calls"]}
                result["engine_us_per_call"] = (cpu1 - cpu0) / message["calls"] * 1e6
        if worker.wait(60) != 0:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
    if result is None:
        raise RuntimeError("the worker printed no result")
    return result


async def capture(python: Path, seconds: float, in_flight: int) -> list[bytes]:
    """The telemetry messages two official workers send while one calls the other through an in-process engine
    (whose observability module keeps them too)."""
    data_dir = tempfile.TemporaryDirectory(prefix="iii-bench-")
    config = EngineConfig(host="127.0.0.1", port=0, http_port=0, stream_port=0, data_dir=data_dir.name)
    engine = Engine(config)
    await engine.start()
    messages: list[bytes] = []
    telemetry = engine.core._telemetry  # the observability module's sink; captured, and passed on
    assert telemetry is not None
    name, sink = telemetry

    class Capture:
        def receive(self, message: bytes) -> None:
            messages.append(bytes(message))
            sink.receive(message)

        def keep(self, signal: str, records: list[dict[str, Any]]) -> None:
            sink.keep(signal, records)

    engine.core._telemetry = (name, Capture())
    try:
        await asyncio.to_thread(run_worker, python, engine.url, seconds, in_flight, None)
    finally:
        await engine.stop()
        data_dir.cleanup()
    return messages


async def time_receive(messages: list[bytes], repeat: int) -> tuple[float, int]:
    """CPU seconds a fresh module's ``receive`` takes over ``messages``, ``repeat`` times, and the records."""
    from tests.modules.local_host import LocalHost  # the repository's root is on the path (official_python)

    module = ObservabilityModule()
    await module.start(LocalHost())
    records = sum(len(otlp.decode(message)[1]) for message in messages) * repeat
    gc.collect()  # not the previous measurement's garbage
    started = time.process_time()
    for _ in range(repeat):
        for message in messages:
            module.receive(message)
    return time.process_time() - started, records


def micro(python: Path, args: argparse.Namespace) -> None:
    from tests.modules.observability import frames

    messages = asyncio.run(capture(python, args.seconds, args.in_flight))
    by_signal: dict[str, list[bytes]] = {}
    for message in messages:
        by_signal.setdefault(otlp.SIGNALS.get(message[:4], "unknown"), []).append(message)
    by_signal["logs (1 record, frames.py)"] = [frames.logs_message(f"line {n}") for n in range(200)]
    for signal, group in by_signal.items():
        seconds, records = asyncio.run(time_receive(group, args.repeat))
        size = statistics.mean(len(m) for m in group)
        print(
            f"micro {signal}: {len(group)} messages (mean {size:.0f} B, {records // args.repeat / len(group):.1f} "
            f"records each): {seconds / records * 1e6:.1f} µs per record, "
            f"{seconds / (len(group) * args.repeat) * 1e6:.1f} µs per message"
        )


def calls(python: Path, args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    for run in range(args.runs):
        order = ("with", "without") if run % 2 == 0 else ("without", "with")
        for case in order:
            modules = DEFAULT_MODULES if case == "with" else WITHOUT
            with engine_process(["--modules", modules]) as engine:
                result = run_worker(python, engine.url, args.seconds, args.in_flight, engine.pid)
            results[case].append(result)
            print(
                f"run {run + 1} {case:7} observability: {result['rate']:.0f} calls/s, "
                f"engine {result['engine_us_per_call']:.0f} µs CPU per call",
                flush=True,
            )
    rate = {case: statistics.median(r["rate"] for r in rs) for case, rs in results.items()}
    cpu = {case: statistics.median(r["engine_us_per_call"] for r in rs) for case, rs in results.items()}
    print(
        f"calls/s median: with {rate['with']:.0f}, without {rate['without']:.0f} "
        f"({(1 - rate['with'] / rate['without']) * 100:+.1f}% fewer with); engine CPU per call median: "
        f"with {cpu['with']:.0f} µs, without {cpu['without']:.0f} µs"
    )


SPAN_CASES: Final = {
    "without": ("without observability", False),
    "untraced": ("with it, calls in no trace", False),
    "traced": ("with it, calls in a trace", True),
}
"""The engine-spans part's cases: name -> (label, whether the caller's calls carry a sampled traceparent)."""


def engine_spans(args: argparse.Namespace) -> None:
    """The engine's span recording, with clients that cost the engine as little as they can: no telemetry module;
    the module, with calls that carry no trace context (the engine records nothing for them); the module, with
    calls in a sampled trace (a ``call <fn>`` span each). The cases rotate run by run."""
    results: dict[str, list[tuple[float, float]]] = {case: [] for case in SPAN_CASES}
    cases = list(SPAN_CASES)
    for run in range(args.runs):
        for case in cases[run % 3 :] + cases[: run % 3]:
            label, traced = SPAN_CASES[case]
            modules = WITHOUT if case == "without" else DEFAULT_MODULES
            with engine_process(["--modules", modules]) as engine:
                done = run_workers(
                    engine.url, engine.url, {"engine": engine.pid}, args.span_calls, 64, 5_000, False, traced
                )
            cpu_us = done.cpu.used["engine"] / done.calls * 1e6
            results[case].append((done.calls_per_s, cpu_us))
            print(
                f"spans run {run + 1} {label:28}: {done.calls_per_s:,.0f} calls/s, engine {cpu_us:.1f} µs CPU per call",
                flush=True,
            )
    rate = {case: statistics.median(r[0] for r in rs) for case, rs in results.items()}
    cpu = {case: statistics.median(r[1] for r in rs) for case, rs in results.items()}
    print("engine spans, lean workers, 64 in flight (medians):")
    for case, (label, _) in SPAN_CASES.items():
        ratio = rate[case] / rate["without"]
        print(f"  {label:28}: {rate[case]:,.0f} calls/s ({ratio:.2f}x), engine {cpu[case]:.1f} µs CPU per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="pairs of calls runs (with, without)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=20, help="passes of receive over the captured messages")
    parser.add_argument("--no-calls", action="store_true")
    parser.add_argument("--span-calls", type=int, default=100_000, help="calls per run of the engine spans part")
    parser.add_argument("--only-spans", action="store_true", help="only the engine spans part")
    args = parser.parse_args()
    if not args.only_spans:
        python = official_python()
        micro(python, args)
        if not args.no_calls:
            calls(python, args)
    engine_spans(args)


if __name__ == "__main__":
    main()
