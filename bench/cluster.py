"""Two engines as one system on Redis (issue 15) next to a lone engine, in one session, cases interleaved.

Each round starts a fresh lone engine (no Redis) and a fresh cluster: a ``redis-server`` (no persistence) and
engines A and B started with ``--redis-url`` (the three engines start in parallel). The cases of the round then run
one after the other on those engines, each with fresh worker processes, the lean picows clients of
``bench/invocations.py`` and ``bench/channel_relay.py`` (no SDK), so that the engines are what is measured:

* **calls, 64 in flight**: the echo worker and the caller on the lone engine (the reference); both on A, B idle
  beside it (within one engine of a cluster: target ≥ 0.95x the lone engine); the echo worker on B and the caller
  on A (across two engines: every call goes A → link → B → worker and back; target ≥ 0.5x);
* **one call at a time**: the round trip's median on the lone engine and across A and B (target ≤ 2x);
* **a channel**: the writer creates it on the lone engine and the reader reads it there (the reference); the
  writer creates it on A and the reader opens its end at B, which relays it to A (target ≥ 0.6x).

Ratios are taken against the lone engine of the same session (medians of the rounds; the run-by-run ratios are in
the details). With ``--redis-url`` the engines' modules (state, pub/sub, cron, queues) also keep their data in
Redis, as a user's clustered engine does; they are idle here.

Run alone: ``python bench/cluster.py [--quick] [--verify] [--repeat N]``; needs ``redis-server``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import channel_relay
import invocations
from _common import CHUNK, GIB, MIB, Measurement, RedisServer, bench_main, fmt_bytes, fmt_runs, median, redis_server
from channel_relay import ChannelRun
from invocations import CallRun

from iii.testing import EngineProcess

IN_FLIGHT: Final = 64
TARGET_ACROSS_RATE: Final = 0.5
"""Calls/s across two engines, 64 in flight, as a multiple of the lone engine's."""
TARGET_ACROSS_LATENCY: Final = 2.0
"""The sequential round trip's median across two engines, as a multiple of the lone engine's (at most)."""
TARGET_WITHIN_RATE: Final = 0.95
"""Calls/s within one engine of a cluster, 64 in flight, as a multiple of a lone engine's."""
TARGET_CHANNEL: Final = 0.6
"""A channel across two engines, as a multiple of the lone engine's relay."""


@dataclass
class Engines:
    """One round's engines: a lone engine, and a cluster of A and B on a Redis."""

    lone: EngineProcess
    redis: RedisServer
    a: EngineProcess
    b: EngineProcess

    @property
    def lone_pids(self) -> dict[str, int]:
        """The lone engine, for the CPU window."""
        return {"engine": self.lone.pid}

    @property
    def cluster_pids(self) -> dict[str, int]:
        """The cluster's processes, for the CPU window."""
        return {"engine A": self.a.pid, "engine B": self.b.pid, "redis": self.redis.pid}


@contextlib.contextmanager
def round_engines() -> Iterator[Engines]:
    """A fresh lone engine and a fresh cluster (Redis, A, B); the engines start in parallel; all stopped after."""
    with redis_server() as redis, contextlib.ExitStack() as stack:
        cluster_args = ["--redis-url", redis.url]
        engines = [EngineProcess(args=args, start_timeout_s=30.0) for args in ([], cluster_args, cluster_args)]
        for engine in engines:
            stack.callback(engine.stop, 15.0)
        with ThreadPoolExecutor(len(engines)) as pool:
            for started in [pool.submit(engine.start) for engine in engines]:
                started.result()
        yield Engines(lone=engines[0], redis=redis, a=engines[1], b=engines[2])


@dataclass
class Sizes:
    """How much each case moves."""

    calls: int
    sequential_calls: int
    warmup: int
    channel_bytes: int


def sizes(quick: bool) -> Sizes:
    """The quick (smoke test) or the measuring sizes."""
    if quick:
        return Sizes(calls=5_000, sequential_calls=500, warmup=1_000, channel_bytes=32 * MIB)
    return Sizes(calls=200_000, sequential_calls=20_000, warmup=10_000, channel_bytes=GIB)


@dataclass
class Runs:
    """Every case's runs, one per round."""

    lone: list[CallRun]
    within: list[CallRun]
    across: list[CallRun]
    lone_sequential: list[CallRun]
    across_sequential: list[CallRun]
    lone_channel: list[ChannelRun]
    across_channel: list[ChannelRun]


def measure(quick: bool, verify: bool, repeat: int) -> list[Measurement]:
    """``repeat`` rounds of every case (see the module docstring), then the report rows."""
    size = sizes(quick)
    runs = Runs([], [], [], [], [], [], [])
    for round_index in range(repeat):
        with round_engines() as engines:
            run_round(engines, size, verify, runs, reverse=round_index % 2 == 1)
    return report(runs, size, verify)


def run_round(engines: Engines, size: Sizes, verify: bool, runs: Runs, *, reverse: bool) -> None:
    """Every case once on this round's engines, with fresh workers; ``reverse`` runs them in the reverse order
    (every other round: neither the lone engine nor the cluster always goes first)."""
    lone, a, b = engines.lone.url, engines.a.url, engines.b.url
    lone_pids, cluster_pids = engines.lone_pids, engines.cluster_pids
    total = size.channel_bytes

    def calls(caller: str, echo: str, pids: dict[str, int], count: int, in_flight: int) -> CallRun:
        warmup = size.warmup if in_flight > 1 else size.warmup // 5
        return invocations.run_workers(caller, echo, pids, count, in_flight, warmup, verify)

    cases: list[Callable[[], None]] = [
        lambda: runs.lone.append(calls(lone, lone, lone_pids, size.calls, IN_FLIGHT)),
        lambda: runs.within.append(calls(a, a, cluster_pids, size.calls, IN_FLIGHT)),
        lambda: runs.across.append(calls(a, b, cluster_pids, size.calls, IN_FLIGHT)),
        lambda: runs.lone_sequential.append(calls(lone, lone, lone_pids, size.sequential_calls, 1)),
        lambda: runs.across_sequential.append(calls(a, b, cluster_pids, size.sequential_calls, 1)),
        lambda: runs.lone_channel.append(channel_relay.run_ends(lone, lone, lone_pids, total, verify)),
        lambda: runs.across_channel.append(channel_relay.run_ends(a, b, cluster_pids, total, verify)),
    ]
    for case in reversed(cases) if reverse else cases:
        case()


# --- report ----------------------------------------------------------------------------------------------


def shares(runs: Sequence[CallRun | ChannelRun], names: Sequence[str]) -> str:
    """Median CPU shares (percent of one core) of the named processes and of foreign processes."""
    parts = [f"{name} {median([r.cpu.share(name) for r in runs]) * 100:.0f}%" for name in names]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU (% of one core): " + ", ".join(parts) + f", other processes {foreign:.0f}%"


def engines_us_per_call(runs: Sequence[CallRun], names: Sequence[str]) -> str:
    """Median engine CPU per call, in µs: each named engine's, and their sum when there are several."""
    per = {name: median([r.cpu.used[name] / r.calls for r in runs]) * 1e6 for name in names}
    text = ", ".join(f"{name} {value:.1f}" for name, value in per.items())
    if len(names) > 1:
        total = median([sum(r.cpu.used[name] for name in names) / r.calls for r in runs]) * 1e6
        text += f", together {total:.1f}"
    return f"engine CPU per call (µs): {text}"


def thousands(rates: Sequence[float]) -> str:
    """Per-run rates in thousands."""
    return fmt_runs([rate / 1000 for rate in rates], 1)


def pairwise(runs: Sequence[float], references: Sequence[float], digits: int = 2) -> str:
    """Run-by-run ratios of a case to the reference of the same round."""
    return fmt_runs([run / reference for run, reference in zip(runs, references, strict=True)], digits)


CLUSTER: Final = ("engine A", "engine B", "redis", "A", "B")
LONE: Final = ("engine", "A", "B")


def report(runs: Runs, size: Sizes, verify: bool) -> list[Measurement]:
    """The rows: two references (the lone engine's calls and relay), then the four cases with their targets."""
    repeat = len(runs.lone)
    lone_rates = [r.calls_per_s for r in runs.lone]
    lone_rate = median(lone_rates)
    lone_median = median([r.median_us for r in runs.lone_sequential])
    checked = "; every result's seq checked" if verify else ""
    rows = [
        Measurement(
            name="12. lone engine (no Redis): calls — reference of 12a-12c",
            result=(
                f"{lone_rate:,.0f} calls/s at 64 in flight; one at a time: median {lone_median:.0f} µs, "
                f"p99 {median([r.p99_us for r in runs.lone_sequential]):,.0f} µs"
            ),
            score=lone_rate,
            target=None,
            target_text="—",
            ratio_text="reference (1.00x)",
            details=(
                f"{size.calls:,} calls per run at 64 in flight, median of {repeat} runs "
                f"[{thousands(lone_rates)}] k calls/s, {engines_us_per_call(runs.lone, ['engine'])}, "
                f"{shares(runs.lone, LONE)}; {size.sequential_calls:,} calls one at a time, median "
                f"[{fmt_runs([r.median_us for r in runs.lone_sequential], 0)}] µs{checked}"
            ),
        )
    ]
    across_rates = [r.calls_per_s for r in runs.across]
    across_rate = median(across_rates)
    rows.append(
        Measurement(
            name="12a. calls across two engines, 64 in flight",
            result=f"{across_rate:,.0f} calls/s",
            score=across_rate / lone_rate,
            target=TARGET_ACROSS_RATE,
            target_text=f"≥ {TARGET_ACROSS_RATE:.2f}x lone engine",
            ratio_text=f"{across_rate / lone_rate:.2f}x lone engine",
            details=(
                f"caller on A, echo function on B (A → link → B → worker and back); "
                f"{size.calls:,} calls per run, median of {repeat} runs [{thousands(across_rates)}] "
                f"k calls/s, run by run [{pairwise(across_rates, lone_rates)}]x the lone engine; "
                f"{engines_us_per_call(runs.across, ['engine A', 'engine B'])}; {shares(runs.across, CLUSTER)}; "
                f"round trip under load median {median([r.median_us for r in runs.across]):.0f} µs "
                f"(lone engine {median([r.median_us for r in runs.lone]):.0f} µs)"
            ),
        )
    )
    across_medians = [r.median_us for r in runs.across_sequential]
    across_median = median(across_medians)
    rows.append(
        Measurement(
            name="12b. sequential round trip across two engines",
            result=(f"median {across_median:.0f} µs, p99 {median([r.p99_us for r in runs.across_sequential]):,.0f} µs"),
            score=across_median / lone_median,
            target=TARGET_ACROSS_LATENCY,
            target_text=f"median ≤ {TARGET_ACROSS_LATENCY:.1f}x lone engine",
            higher_is_better=False,
            ratio_text=f"{across_median / lone_median:.2f}x lone engine",
            details=(
                f"caller on A, function on B; {size.sequential_calls:,} calls per run, median of {repeat} runs "
                f"[{fmt_runs(across_medians, 0)}] µs "
                f"(p99 [{fmt_runs([r.p99_us for r in runs.across_sequential], 0)}] µs), run by run "
                f"[{pairwise(across_medians, [r.median_us for r in runs.lone_sequential])}]x the lone engine; "
                f"{engines_us_per_call(runs.across_sequential, ['engine A', 'engine B'])} "
                f"(lone engine {median([r.cpu.used['engine'] / r.calls for r in runs.lone_sequential]) * 1e6:.1f})"
            ),
        )
    )
    within_rates = [r.calls_per_s for r in runs.within]
    within_rate = median(within_rates)
    rows.append(
        Measurement(
            name="12c. calls within one engine of a cluster, 64 in flight",
            result=f"{within_rate:,.0f} calls/s",
            score=within_rate / lone_rate,
            target=TARGET_WITHIN_RATE,
            target_text=f"≥ {TARGET_WITHIN_RATE:.2f}x lone engine",
            ratio_text=f"{within_rate / lone_rate:.2f}x lone engine",
            details=(
                f"both workers on A, B idle beside it; "
                f"{size.calls:,} calls per run, median of {repeat} runs [{thousands(within_rates)}] "
                f"k calls/s, run by run [{pairwise(within_rates, lone_rates)}]x the lone engine; "
                f"{engines_us_per_call(runs.within, ['engine A'])}; {shares(runs.within, CLUSTER)}"
            ),
        )
    )
    rows.append(channel_row(runs, size, verify))
    return rows


def channel_row(runs: Runs, size: Sizes, verify: bool) -> Measurement:
    """The channel across two engines against the lone engine's relay (its reference is in the details)."""
    lone = [r.gb_per_s for r in runs.lone_channel]
    across = [r.gb_per_s for r in runs.across_channel]
    ratio = median(across) / median(lone)
    frames = size.channel_bytes / CHUNK

    def per_frame(measured: Sequence[ChannelRun], name: str) -> float:
        return median([r.cpu.used[name] for r in measured]) / frames * 1e6

    verified = "; CRC32 verified" if verify else ""
    return Measurement(
        name="12d. channel across two engines, 64 KiB frames",
        result=f"{median(across):.2f} GB/s (lone engine's relay {median(lone):.2f} GB/s)",
        score=ratio,
        target=TARGET_CHANNEL,
        target_text=f"≥ {TARGET_CHANNEL:.2f}x lone engine's relay",
        ratio_text=f"{ratio:.2f}x lone engine's relay",
        details=(
            f"writer on A (the channel's engine), the reader's end opened at B and relayed to A; "
            f"{fmt_bytes(size.channel_bytes)} per run, median of {len(across)} runs [{fmt_runs(across)}] GB/s "
            f"(lone engine [{fmt_runs(lone)}] GB/s), run by run [{pairwise(across, lone)}]x; engine CPU per 64 KiB "
            f"frame: A {per_frame(runs.across_channel, 'engine A'):.1f} µs, B "
            f"{per_frame(runs.across_channel, 'engine B'):.1f} µs (lone engine "
            f"{per_frame(runs.lone_channel, 'engine'):.1f} µs); "
            f"{shares(runs.across_channel, ('engine A', 'engine B', 'writer', 'reader'))}; engine peak RSS at "
            f"most {fmt_bytes(max(r.engine_peak_growth for r in runs.across_channel))} above its pre-run RSS; "
            f"exact byte count, frame order and close code 1000 checked{verified}"
        ),
    )


def main() -> None:
    """Command line: the driver (the roles are those of ``invocations.py`` and ``channel_relay.py``)."""
    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.verify, args.repeat),
        {},
        quick_help="5,000 / 500 calls and 32 MiB, one round",
        verify_help="check every call's result and a CRC32 of each relayed stream",
        default_repeat=5,
    )


if __name__ == "__main__":
    main()
