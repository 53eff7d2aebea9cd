"""Run every benchmark in one session and print one markdown table.

``python bench/run_all.py`` (with the project's venv) runs, in this order and each in fresh processes:

1. the bare 3-process TCP relay (the ceiling) and 2. the channel relay through the engine, interleaved;
3. invocations between two workers (throughput with 64 in flight, sequential latency), interleaved;
4. engine memory per unconnected channel, per connected idle channel and per idle worker connection;
5. the channel relay with the Python SDKs (ours in three API styles, the official ``iii-sdk`` 0.25.0) beside
   a bare TCP relay of the same session, and 6./7. trigger round trips and concurrent calls with our SDK
   (``--only sdk``; the official SDK's venv is built on first use by ``tests/interop/environments.py``);
8. HTTP through the ``http`` trigger next to a plain aiohttp server: 1 GiB upload and download, and
   requests/s of a small JSON echo (``--only http``);
9. the state module: ``state::get`` and durable ``state::set`` on SQLite and on Redis next to the plain
   invocation rate of the same session, and 10. pub/sub: ``publish`` to 1 and 10 subscribed functions, in
   process and through Redis (``--only modules``; the Redis cases start their own ``redis-server``);
11. durable queues: enqueue → delivery to a no-op function on SQLite and on Redis, 64 enqueues in flight and
    one at a time, next to the plain invocation rate of the same session (``--only queues``).
12. two engines as one system on Redis next to a lone engine: calls across the engines (64 in flight, one at
    a time), calls within one engine of the cluster, a channel across the engines (``--only cluster``; starts its
    own ``redis-server``).
13. stream subscriptions: ``stream::set`` changes fanned out to 1,000 subscriber sockets of one group, and the
    same with one stalled subscriber that the engine must drop (``--only streams``).
14. the SDKs' own telemetry: calls/s with it on and off, our SDK and the official one (``--only telemetry``).
15. a flood of workers' logs: 10 processes sending log records as the official Python SDK does, 100,000/s for
    10 s, at an engine that keeps them (the engine's RSS growth against the logs ring's bound), and the calls/s of
    an unrelated caller during the flood against without it (``--only flood``).

``--quick`` uses small sizes and one run each (a smoke test, not a measurement: about a minute on 2
cores; ``.ci/run`` runs it before the tests); ``--verify`` adds checksums and per-call result checks;
``--repeat N`` sets the runs per timed measurement (median reported).

Besides the table (stdout), a full run of every part draws the rows that have a target as a chart,
``docs/benchmarks.png`` (``--chart PATH`` elsewhere or for any run, ``--no-chart`` none; needs matplotlib,
``pip install -e '.[bench]'``).

Each part also runs alone: ``bench/tcp_relay.py``, ``bench/channel_relay.py``, ``bench/invocations.py``,
``bench/memory.py``, ``bench/sdk_relay.py``, ``bench/sdk_calls.py``, ``bench/http_triggers.py``,
``bench/engine_modules.py``, ``bench/queues.py``, ``bench/cluster.py``, ``bench/streams.py``,
``bench/sdk_telemetry.py``, ``bench/log_flood.py``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import channel_relay
import cluster
import engine_modules
import http_triggers
import invocations
import log_flood
import memory
import queues
import sdk_calls
import sdk_relay
import sdk_telemetry
import streams
from _chart import draw_chart, require_matplotlib
from _common import BENCH_DIR, Measurement, markdown_table

PARTS = (
    "relay",
    "invoke",
    "memory",
    "sdk",
    "http",
    "modules",
    "queues",
    "cluster",
    "streams",
    "telemetry",
    "flood",
)
DEFAULT_CHART = BENCH_DIR.parent / "docs" / "benchmarks.png"


def machine_notes() -> str:
    """One line about where and on what the benchmark ran."""
    commit = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "status", "--porcelain", "--", "../src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    load = os.getloadavg()
    return (
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; commit {commit or '?'}"
        f"{' (src modified)' if dirty else ''}; {os.cpu_count()} CPUs; Python {platform.python_version()}; "
        f"load average before the run {load[0]:.2f}"
    )


def main() -> None:
    """Run the selected parts and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (smoke test)")
    parser.add_argument("--verify", action="store_true", help="checksums on the relays, result checks on calls")
    parser.add_argument("--repeat", type=int, default=None, help="runs per timed measurement; default 5, quick 1")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument("--chart", type=Path, help="write the chart here (default: docs/benchmarks.png on full runs)")
    parser.add_argument("--no-chart", action="store_true", help="no chart")
    args = parser.parse_args()
    chart = None if args.no_chart else args.chart
    if chart is None and not args.no_chart and not args.quick and not args.only:
        chart = DEFAULT_CHART
    if chart is not None:
        require_matplotlib()
    repeat = args.repeat or (1 if args.quick else 5)
    parts = args.only or list(PARTS)
    notes = machine_notes()
    started = time.monotonic()
    rows: list[Measurement] = []
    if "relay" in parts:
        print("running: bare TCP relay and channel relay ...", file=sys.stderr, flush=True)
        rows += channel_relay.measure(args.quick, args.verify, repeat)
    if "invoke" in parts:
        print("running: invocations ...", file=sys.stderr, flush=True)
        rows += invocations.measure(args.quick, args.verify, repeat)
    if "memory" in parts:
        print("running: engine memory ...", file=sys.stderr, flush=True)
        rows += memory.measure(args.quick)
    if "sdk" in parts:
        print("running: SDK channel relay (ours and official) ...", file=sys.stderr, flush=True)
        rows += sdk_relay.measure(args.quick, args.verify, repeat)
        print("running: SDK trigger round trips ...", file=sys.stderr, flush=True)
        rows += sdk_calls.measure(args.quick, args.verify, repeat)
    if "http" in parts:
        print("running: HTTP triggers next to a plain aiohttp server ...", file=sys.stderr, flush=True)
        rows += http_triggers.measure(args.quick, repeat)
    if "modules" in parts:
        print("running: modules (state on SQLite and Redis, pub/sub) ...", file=sys.stderr, flush=True)
        rows += engine_modules.measure(args.quick, args.verify, repeat)
    if "queues" in parts:
        print("running: queues (enqueue → delivery on SQLite and Redis) ...", file=sys.stderr, flush=True)
        rows += queues.measure(args.quick, args.verify, repeat)
    if "cluster" in parts:
        print("running: cluster (two engines on Redis next to a lone engine) ...", file=sys.stderr, flush=True)
        rows += cluster.measure(args.quick, args.verify, repeat)
    if "streams" in parts:
        print("running: stream subscriptions (fan-out to 1,000 subscribers) ...", file=sys.stderr, flush=True)
        rows += streams.measure(args.quick, repeat)
    if "telemetry" in parts:
        print("running: SDK telemetry on and off (ours and official) ...", file=sys.stderr, flush=True)
        rows += sdk_telemetry.measure(args.quick, repeat)
    if "flood" in parts:
        print("running: a flood of log records at the engine, and calls beside it ...", file=sys.stderr, flush=True)
        rows += log_flood.measure(args.quick, repeat)
    mode = "QUICK (smoke test, not a measurement)" if args.quick else f"{repeat} run(s) per timed measurement"
    header = f"{notes}; {mode}; took {time.monotonic() - started:.0f} s"
    print(f"iii-py benchmarks — {header}\n")
    print(markdown_table(rows))
    if chart is not None:
        bars = draw_chart(rows, chart, header)
        print(f"chart of the {bars} rows with a target: {chart}", file=sys.stderr)
    missed = [row.name for row in rows if row.passed is False]
    if missed:
        print(f"\nTargets missed: {len(missed)} of {sum(1 for r in rows if r.target is not None)}")


if __name__ == "__main__":
    main()
