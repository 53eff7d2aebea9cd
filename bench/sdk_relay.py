"""Channel relay through the engine with the Python SDKs: writer process -> engine process -> reader process.

Every case moves the payload (1 GiB; 64 MiB with ``--quick``) in 64 KiB chunks, each stamped with its index
in the first 8 bytes, through a fresh engine (``python -m iii engine``):

* **ours, async writer**: ``channel = await client.create_channel_async()`` and ``await writer.write(chunk)``
  inside ``asyncio.run`` (the user's loop, not the SDK's), then ``await writer.close_async()``;
* **ours, sync writer**: ``client.create_channel()`` and a plain ``writer.write(chunk)`` loop (each call
  blocks until the chunk is in the socket buffer), then ``writer.close()``;
* **ours, writer in an async handler**: the same loop inside an ``async def`` function the writer process
  registers and triggers, so it runs on the SDK's own loop (where a write needs no thread hop);
* **official**: PyPI ``iii-sdk`` 0.25.0 in its own venv (``bench/_official_sdk_roles.py``):
  ``await iii.helpers.create_channel_async(iii)``, ``await writer.write(chunk)``, ``await writer.close_async()``.

The writer process creates the channel with its SDK and reports the reader ref to the driver, which starts
the reader process with it. Our reader is ``client.reader(ref)`` read with ``async for chunk in reader``
inside ``asyncio.run``; the official reader is ``ChannelReader(url, StreamChannelRef(**ref))`` read the same
way. Throughput is measured in the reader, from the first chunk received to the last, as for the bare relay
(``bench/tcp_relay.py``), which runs interleaved with these cases since the first target is a ratio to it.
The exact byte count and the chunk order are checked on every run; ``--verify`` adds a CRC32 of the stream.

Run alone: ``python bench/sdk_relay.py [--quick] [--verify] [--repeat N] [--style async|sync|handler]
[--no-official] [--official-bytes N] [--no-baseline]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tcp_relay
from _common import (
    BENCH_DIR,
    CHUNK,
    GIB,
    MIB,
    Child,
    Commands,
    CpuWindow,
    Measurement,
    StampedChunks,
    bench_main,
    check_stream,
    emit,
    engine_process,
    fmt_bytes,
    fmt_runs,
    median,
    read_stamped,
    run_sdk_role,
    sdk_worker,
    write_stamped,
)

CHILD_TIMEOUT_S: Final = 300.0
SCRIPT: Final = "sdk_relay.py"
OFFICIAL_SCRIPT: Final = "_official_sdk_roles.py"
TARGET_RATIO_BARE: Final = 0.7
TARGET_RATIO_OFFICIAL: Final = 1.5
STYLES: Final = ("async", "sync", "handler")
"""Our writer's API styles (see the module docstring); ``async`` is the one compared with the official SDK."""
OFFICIAL: Final = "official"
PRODUCE_FUNCTION: Final = "bench::produce"
LETTERS: Final = {"async": "a", "sync": "b", "handler": "c", OFFICIAL: "d"}
"""Each case's row letter, fixed so that a row keeps its name when only some cases run."""
STYLE_LABELS: Final = {
    "async": "our SDK, async writer (`await writer.write` in asyncio.run) → async reader",
    "sync": "our SDK, sync writer (plain `writer.write` loop) → async reader",
    "handler": "our SDK, writer inside an async handler (SDK loop) → async reader",
    OFFICIAL: "official SDK 0.25.0, async writer → async reader",
}


# --- roles (child processes) -----------------------------------------------------------------------------


def expect_line(command: str) -> None:
    """Plain-code counterpart of ``Commands.expect``: wait for one stdin line (EOF reads as ``exit``)."""
    got = sys.stdin.readline().strip() or "exit"
    if got != command:
        raise RuntimeError(f"expected command {command!r}, got {got!r}")


async def async_writer(client: Any, total: int, verify: bool) -> None:
    """The async style: everything in ``asyncio.run``, on the user's loop."""
    commands = Commands()
    channel = await client.create_channel_async(64)
    emit("channel", reader=channel.reader_ref.model_dump())
    await commands.expect("go")
    emit("done", **await write_stamped(channel.writer, total, verify))
    await commands.expect("exit")


def sync_writer(client: Any, total: int, verify: bool) -> None:
    """The sync style: plain code; every ``write`` blocks until the chunk is in the socket buffer."""
    channel = client.create_channel(64)
    emit("channel", reader=channel.reader_ref.model_dump())
    writer = channel.writer
    expect_line("go")
    chunks = StampedChunks(total, verify)
    started = time.perf_counter()
    for chunk in chunks:
        writer.write(chunk)
    writer.close()  # fire-and-forget in plain code; the reader sees the clean end
    emit("done", seconds=time.perf_counter() - started, crc=chunks.crc)
    expect_line("exit")


def handler_writer(client: Any, total: int, verify: bool) -> None:
    """The handler style: the write loop is an ``async def`` function of this worker, triggered from plain code."""
    channel = client.create_channel(64)

    async def produce(data: dict[str, Any]) -> dict[str, Any]:
        return await write_stamped(channel.writer, data["bytes"], data["verify"])

    client.register_function(PRODUCE_FUNCTION, produce)
    emit("channel", reader=channel.reader_ref.model_dump())
    expect_line("go")
    result = client.trigger(
        {
            "function_id": PRODUCE_FUNCTION,
            "payload": {"bytes": total, "verify": verify},
            "timeout_ms": int(CHILD_TIMEOUT_S * 1000),
        }
    )
    emit("done", **result)
    expect_line("exit")


def ours_writer(url: str, total: int, style: str, verify: bool) -> None:
    """Our SDK's writer process, in one of :data:`STYLES`."""
    client = sdk_worker(url, f"writer-{style}")
    try:
        if style == "async":
            asyncio.run(async_writer(client, total, verify))
        elif style == "sync":
            sync_writer(client, total, verify)
        else:
            handler_writer(client, total, verify)
    finally:
        client.shutdown()


async def async_reader(client: Any, ref: dict[str, str], verify: bool) -> None:
    """``async for chunk in client.reader(ref)`` in ``asyncio.run``; report count, order, CRC and timing."""
    commands = Commands()
    reader = client.reader(ref)
    emit("ready")
    emit("done", **await read_stamped(reader, verify))
    await commands.expect("exit")


def ours_reader(url: str, ref: dict[str, str], verify: bool) -> None:
    """Our SDK's reader process."""
    client = sdk_worker(url, "reader")
    try:
        asyncio.run(async_reader(client, ref, verify))
    finally:
        client.shutdown()


# --- driver ----------------------------------------------------------------------------------------------


@dataclass
class SdkRun:
    """One SDK relay run: what the reader measured, and the CPU the three processes spent."""

    case: str
    bytes: int
    seconds: float
    writer_seconds: float
    cpu: CpuWindow
    verified: bool | None

    @property
    def gb_per_s(self) -> float:
        """Throughput in GB/s (10^9 bytes per second)."""
        return self.bytes / self.seconds / 1e9

    def cpu_us_per_chunk(self, name: str) -> float:
        """CPU of process ``name`` (engine, writer, reader) per 64 KiB chunk, in µs."""
        return self.cpu.used[name] / (self.bytes / CHUNK) * 1e6


def official_python() -> Path:
    """The official SDK's venv interpreter, built on first use by ``tests/interop/environments.py``."""
    root = str(BENCH_DIR.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.interop.environments import ensure_python_env

    python: Path = ensure_python_env().python
    return python


def run_once(case: str, total: int, verify: bool, official: Path | None = None) -> SdkRun:
    """One relay of ``total`` bytes through a fresh engine; ``case`` is a style of ours or ``official``."""
    flag = ["--verify"] if verify else []
    timeout = ["--timeout", str(CHILD_TIMEOUT_S)]
    with engine_process() as engine, contextlib.ExitStack() as stack:
        if case == OFFICIAL:
            assert official is not None
            script, python, style = OFFICIAL_SCRIPT, official, []
        else:
            script, python, style = SCRIPT, None, ["--style", case]
        args = ["--role", "writer", "--url", engine.url, "--bytes", str(total), *style, *flag, *timeout]
        writer = stack.enter_context(Child(f"{case}-writer", script, args, CHILD_TIMEOUT_S, python=python))
        reader_ref = writer.expect("channel", 60)["reader"]
        args = ["--role", "reader", "--url", engine.url, "--ref", json.dumps(reader_ref), *flag, *timeout]
        reader = stack.enter_context(Child(f"{case}-reader", script, args, CHILD_TIMEOUT_S, python=python))
        reader.expect("ready", 60)
        time.sleep(0.3)  # let the reader's socket attach before the data flows
        window = CpuWindow({"engine": engine.pid, "writer": writer.pid, "reader": reader.pid})
        writer.send("go")
        got = reader.expect("done")
        window.stop()
        sent = writer.expect("done", 60)
        writer.send("exit")
        reader.send("exit")
    verified = check_stream(f"sdk relay ({case})", total, got, sent, verify)
    return SdkRun(
        case=case,
        bytes=got["bytes"],
        seconds=got["seconds"],
        writer_seconds=sent["seconds"],
        cpu=window,
        verified=verified,
    )


def cpu_text(runs: Sequence[SdkRun]) -> str:
    """Median CPU per chunk and share of a core of engine, writer and reader, and the foreign share."""
    parts = [
        f"{name} {median([r.cpu_us_per_chunk(name) for r in runs]):.0f} µs/chunk "
        f"({median([r.cpu.share(name) for r in runs]) * 100:.0f}%)"
        for name in ("engine", "writer", "reader")
    ]
    foreign = median([r.cpu.foreign_share for r in runs]) * 100
    return "CPU per 64 KiB chunk (% of one core): " + ", ".join(parts) + f"; other processes {foreign:.0f}%"


def case_details(runs: Sequence[SdkRun]) -> str:
    """The details line shared by every case's row."""
    checked = "exact byte count and chunk order checked" + ("; CRC32 verified" if runs[0].verified else "")
    seconds = median([r.seconds for r in runs])
    writer_seconds = median([r.writer_seconds for r in runs])
    return (
        f"{fmt_bytes(runs[0].bytes)} per run, median of {len(runs)} runs [{fmt_runs([r.gb_per_s for r in runs])}] "
        f"GB/s over {seconds:.2f} s (writer loop {writer_seconds:.2f} s); {cpu_text(runs)}; {checked}"
    )


def ours_row(number: str, style: str, runs: Sequence[SdkRun], bare: Sequence[tcp_relay.RelayRun]) -> Measurement:
    """The row of one of our writer styles; the score is the ratio to the bare relay of the same session."""
    gbps = median([r.gb_per_s for r in runs])
    details = case_details(runs)
    name = f"{number}. {STYLE_LABELS[style]}"
    target_text = f"≥ {TARGET_RATIO_BARE:.2f}x bare relay"
    if not bare:
        return Measurement(
            name, f"{gbps:.2f} GB/s", gbps, None, target_text, ratio_text="no bare relay", details=details
        )
    bare_gbps = median([b.gb_per_s for b in bare])
    pairs = [r.gb_per_s / b.gb_per_s for b, r in zip(bare, runs, strict=True)]
    ratio = gbps / bare_gbps
    return Measurement(
        name=name,
        result=f"{gbps:.2f} GB/s",
        score=ratio,
        target=TARGET_RATIO_BARE,
        target_text=target_text,
        ratio_text=f"{ratio:.2f}x bare relay",
        details=f"{details}; run-by-run ratios to the bare relay [{fmt_runs(pairs)}]",
    )


def official_rows(
    number: str, runs: Sequence[SdkRun], ours: dict[str, list[SdkRun]], bare: Sequence[tcp_relay.RelayRun]
) -> list[Measurement]:
    """The official SDK's row (a reference) and the row comparing ours (async writer, same API style) with it."""
    gbps = median([r.gb_per_s for r in runs])
    ratio_bare = f"{gbps / median([b.gb_per_s for b in bare]):.2f}x bare relay" if bare else "reference"
    rows = [
        Measurement(
            name=f"{number}. {STYLE_LABELS[OFFICIAL]}",
            result=f"{gbps:.2f} GB/s",
            score=gbps,
            target=None,
            target_text="— (reference)",
            ratio_text=ratio_bare,
            details=case_details(runs),
        )
    ]
    same_style = ours.get("async", [])
    if same_style:
        ours_gbps = median([r.gb_per_s for r in same_style])
        ratio = ours_gbps / gbps
        pairs = [o.gb_per_s / r.gb_per_s for o, r in zip(same_style, runs, strict=True)]
        others = "; ".join(
            f"{style} style / official {median([r.gb_per_s for r in style_runs]) / gbps:.2f}x"
            for style, style_runs in ours.items()
            if style != "async" and style_runs
        )
        rows.append(
            Measurement(
                name=f"{number}+. ours (async writer) / official, same API style",
                result=f"{ours_gbps:.2f} vs {gbps:.2f} GB/s",
                score=ratio,
                target=TARGET_RATIO_OFFICIAL,
                target_text=f"≥ {TARGET_RATIO_OFFICIAL:.1f}x official",
                ratio_text=f"{ratio:.2f}x official",
                details=f"run-by-run ratios [{fmt_runs(pairs)}]"
                + (f"; {others}" if others else "")
                + (f"; official runs moved {fmt_bytes(runs[0].bytes)}" if runs[0].bytes != same_style[0].bytes else ""),
            )
        )
    return rows


def measure(
    quick: bool,
    verify: bool,
    repeat: int,
    *,
    baseline: bool = True,
    styles: Sequence[str] = STYLES,
    official: bool = True,
    official_bytes: int | None = None,
    first_number: int = 5,
) -> list[Measurement]:
    """Bare relay, our styles and the official SDK, interleaved run by run (same machine load for all)."""
    total = 64 * MIB if quick else GIB
    official_total = official_bytes or total
    styles = [style for style in STYLES if style in styles]  # the rows' fixed order and letters
    official_env = official_python() if official else None
    bare: list[tcp_relay.RelayRun] = []
    ours: dict[str, list[SdkRun]] = {style: [] for style in styles}
    theirs: list[SdkRun] = []
    for _ in range(repeat):
        if baseline:
            bare.append(tcp_relay.run_once(total, verify))
        for style in styles:
            ours[style].append(run_once(style, total, verify))
        if official_env is not None:
            theirs.append(run_once(OFFICIAL, official_total, verify, official_env))
    rows: list[Measurement] = []
    if bare:
        bare_row = tcp_relay.bare_measurement(bare)
        bare_row.name = f"{first_number}. bare 3-process TCP relay (reference of the SDK relay rows)"
        rows.append(bare_row)
    for style in styles:
        rows.append(ours_row(f"{first_number}{LETTERS[style]}", style, ours[style], bare))
    if theirs:
        rows += official_rows(f"{first_number}{LETTERS[OFFICIAL]}", theirs, ours, bare)
    return rows


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--style", choices=STYLES, action="append", help="only this writer style of ours")
        parser.add_argument("--no-official", action="store_true", help="skip the official SDK")
        parser.add_argument("--official-bytes", type=int, default=None, help="bytes for the official SDK's runs")
        parser.add_argument("--no-baseline", action="store_true", help="skip the bare TCP relay")
        parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT_S, help=argparse.SUPPRESS)

    def report(args: argparse.Namespace) -> list[Measurement]:
        return measure(
            args.quick,
            args.verify,
            args.repeat,
            baseline=not args.no_baseline,
            styles=args.style or STYLES,
            official=not args.no_official,
            official_bytes=args.official_bytes,
        )

    def writer(args: argparse.Namespace) -> None:
        style = (args.style or ["async"])[0]
        run_sdk_role(lambda: ours_writer(args.url, args.bytes, style, args.verify), args.timeout)

    def reader(args: argparse.Namespace) -> None:
        run_sdk_role(lambda: ours_reader(args.url, args.ref, args.verify), args.timeout)

    bench_main(
        __doc__,
        report,
        {"writer": writer, "reader": reader},
        quick_help="64 MiB instead of 1 GiB, one run",
        verify_help="also check a CRC32 of the whole stream",
        default_repeat=3,
        options=options,
        role_options={"url": str, "bytes": int, "ref": json.loads},
    )


if __name__ == "__main__":
    main()
