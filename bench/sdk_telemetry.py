"""What the SDKs' own telemetry costs their calls: calls/s with telemetry on and off, ours and the official SDK's.

A callee worker serves ``bench::echo_async`` (``async def``); a caller worker of the same SDK calls it with
``--in-flight`` calls at once (``await trigger_async`` in ``asyncio.run``) for ``--seconds`` after a warm-up,
through a fresh engine (default modules, observability among them) per run. With telemetry on, the callee's SDK
records a span around each execution and sends it to the engine's ``/otel`` (the caller's calls are made outside
any handler: no span). Both SDKs run the same worker script (``bench/_official_sdk_otel.py``, which uses only
the API they share), ours with the project's interpreter and the official one (PyPI ``iii-sdk`` 0.25.0) in its
venv; telemetry is turned off with ``OTEL_ENABLED=false``, which both honour. The four cases alternate run by
run (the order rotates), and each run reports the CPU per call of the engine, the callee and the caller (steadier
than the rates on a busy machine).

Run alone: ``python bench/sdk_telemetry.py [--quick] [--repeat N] [--seconds S] [--in-flight K]
[--without-observability]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from _common import BENCH_DIR, Measurement, bench_main, cpu_seconds, engine_process, fmt_runs
from sdk_relay import official_python

WORKER: Final = BENCH_DIR / "_official_sdk_otel.py"
CASES: Final = (("ours", True), ("ours", False), ("official", True), ("official", False))
CHILD_TIMEOUT_S: Final = 120.0
WITHOUT_OBSERVABILITY: Final = "state,stream,pubsub,cron,queue,http_functions"


@dataclass
class Run:
    rate: float
    engine_us_per_call: float
    callee_us_per_call: float
    caller_us_per_call: float


def run_case(python: Path, otel: bool, seconds: float, in_flight: int, engine_args: list[str]) -> Run:
    """One measurement: a fresh engine, a callee and a caller of one SDK, telemetry on or off in both."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OTEL_ENABLED"] = "true" if otel else "false"
    with engine_process(engine_args) as engine:
        args = [str(python), str(WORKER), "--url", engine.url, "--seconds", str(seconds)]
        args += ["--in-flight", str(in_flight)]
        callee = subprocess.Popen(
            [*args, "--role", "callee"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert callee.stdout is not None
            callee.stdout.readline()  # ready
            with subprocess.Popen([*args, "--role", "caller"], stdout=subprocess.PIPE, text=True, env=env) as caller:
                assert caller.stdout is not None
                pids = (engine.pid, callee.pid, caller.pid)
                cpu0 = [0.0] * len(pids)
                result: Run | None = None
                for line in caller.stdout:
                    message = json.loads(line)
                    if "measuring" in message:
                        cpu0 = [cpu_seconds(pid) for pid in pids]
                    else:
                        calls = message["calls"]
                        used = [(cpu_seconds(pid) - was) / calls * 1e6 for pid, was in zip(pids, cpu0, strict=True)]
                        result = Run(message["calls"] / message["seconds"], *used)
                if caller.wait(CHILD_TIMEOUT_S) != 0 or result is None:
                    raise RuntimeError(f"the caller failed (exit {caller.returncode})")
                return result
        finally:
            assert callee.stdin is not None
            callee.stdin.close()
            callee.wait(CHILD_TIMEOUT_S)


def measure(
    quick: bool, repeat: int, seconds: float | None = None, in_flight: int = 64, observability: bool = True
) -> list[Measurement]:
    """The four cases ``repeat`` times each, interleaved; rows: ours on/off, official on/off, ours / official.
    Without ``observability`` the engine runs the default modules less that one (telemetry is read and dropped):
    what the SDKs' side costs, apart from the engine's keeping of it."""
    seconds = seconds if seconds is not None else (1.0 if quick else 5.0)
    engine_args = [] if observability else ["--modules", WITHOUT_OBSERVABILITY]
    where = "" if observability else " (engine without observability)"
    pythons = {"ours": Path(sys.executable), "official": official_python()}
    runs: dict[tuple[str, bool], list[Run]] = {case: [] for case in CASES}
    for index in range(repeat):
        shift = index % len(CASES)
        for sdk, otel in CASES[shift:] + CASES[:shift]:
            run = run_case(pythons[sdk], otel, seconds, in_flight, engine_args)
            runs[sdk, otel].append(run)
            state = "on" if otel else "off"
            print(
                f"run {index + 1} {sdk} telemetry {state}: {run.rate:.0f} calls/s; CPU µs per call: engine "
                f"{run.engine_us_per_call:.1f}, callee {run.callee_us_per_call:.1f}, "
                f"caller {run.caller_us_per_call:.1f}",
                file=sys.stderr,
                flush=True,
            )
    rate = {case: statistics.median(r.rate for r in rs) for case, rs in runs.items()}

    def cpu(case: tuple[str, bool]) -> str:
        return ", ".join(
            f"{name} {statistics.median(getattr(r, f'{name}_us_per_call') for r in runs[case]):.1f}"
            for name in ("engine", "callee", "caller")
        )

    rows: list[Measurement] = []
    for number, sdk in (("14a", "ours"), ("14b", "official")):
        on, off = rate[sdk, True], rate[sdk, False]
        label = "our SDK" if sdk == "ours" else "official SDK 0.25.0"
        rows.append(
            Measurement(
                name=f"{number}. {label}, {in_flight} in flight, telemetry on / off{where}",
                result=f"{on:,.0f} / {off:,.0f} calls/s",
                score=on / off,
                target=None,
                target_text="— (reference)",
                ratio_text=f"on = {on / off:.2f}x off",
                details=(
                    f"{seconds:g} s per run; on: [{fmt_runs([r.rate / 1000 for r in runs[sdk, True]], 1)}] k calls/s, "
                    f"off: [{fmt_runs([r.rate / 1000 for r in runs[sdk, False]], 1)}] k calls/s; CPU µs per call "
                    f"(median) on: {cpu((sdk, True))}; off: {cpu((sdk, False))}"
                ),
            )
        )
    ours_on, theirs_on = rate["ours", True], rate["official", True]
    rows.append(
        Measurement(
            name=f"14c. our SDK / official SDK, telemetry on, {in_flight} in flight{where}",
            result=f"{ours_on:,.0f} / {theirs_on:,.0f} calls/s",
            score=ours_on / theirs_on,
            target=1.0,
            target_text="> 1x (ours faster)",
            ratio_text=f"{ours_on / theirs_on:.2f}x",
            details="run by run: "
            + ", ".join(
                f"{ours.rate / theirs.rate:.2f}x"
                for ours, theirs in zip(runs["ours", True], runs["official", True], strict=True)
            ),
        )
    )
    return rows


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 5)")
        parser.add_argument("--in-flight", type=int, default=64)
        parser.add_argument(
            "--without-observability", action="store_true", help="engine without the observability module"
        )

    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.repeat, args.seconds, args.in_flight, not args.without_observability),
        {},
        quick_help="1 s per run, one run",
        default_repeat=3,
        options=options,
    )


if __name__ == "__main__":
    main()
