"""The ceiling: a bare 3-process Python TCP relay (writer -> relay -> reader), no WebSocket, no engine.

The writer sends the payload in 64 KiB ``sendall`` calls; the relay forwards with ``recv_into`` +
``sendall`` through one 64 KiB buffer; the reader counts bytes with ``recv_into``. Throughput is measured
in the reader, from the first byte received to the last.

Run alone: ``python bench/tcp_relay.py [--quick] [--verify] [--repeat N]``.
"""

from __future__ import annotations

import resource
import socket
import struct
import time
import zlib
from dataclasses import dataclass

from _common import (
    CHUNK,
    GIB,
    MIB,
    Child,
    Measurement,
    bench_main,
    check_stream,
    emit,
    fmt_bytes,
    fmt_runs,
    machine_busy_seconds,
    median,
    own_cpu_seconds,
)

CHILD_TIMEOUT_S = 180.0
SCRIPT = "tcp_relay.py"


@dataclass
class RelayRun:
    """One relay run as the reader saw it."""

    bytes: int
    seconds: float
    relay_cpu_s: float
    foreign_share: float
    """CPU used by processes outside the benchmark during the run, as a fraction of one core."""
    verified: bool | None

    @property
    def gb_per_s(self) -> float:
        """Throughput in GB/s (10^9 bytes per second)."""
        return self.bytes / self.seconds / 1e9


# --- roles (child processes) -----------------------------------------------------------------------------


def role_reader(verify: bool) -> None:
    """Accept one connection and count bytes until EOF."""
    server = socket.create_server(("127.0.0.1", 0))
    emit("listening", port=server.getsockname()[1])
    server.settimeout(CHILD_TIMEOUT_S)
    conn, _ = server.accept()
    conn.settimeout(CHILD_TIMEOUT_S)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    crc = 0
    t_first = t_last = 0.0
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        t_last = time.perf_counter()
        if not total:
            t_first = t_last
        total += n
        if verify:
            crc = zlib.crc32(view[:n], crc)
    conn.close()
    server.close()
    emit("done", bytes=total, seconds=t_last - t_first, crc=crc if verify else None)


def role_relay(reader_port: int) -> None:
    """Accept one connection and forward everything to the reader."""
    upstream = socket.create_connection(("127.0.0.1", reader_port), timeout=CHILD_TIMEOUT_S)
    server = socket.create_server(("127.0.0.1", 0))
    emit("listening", port=server.getsockname()[1])
    server.settimeout(CHILD_TIMEOUT_S)
    conn, _ = server.accept()
    conn.settimeout(CHILD_TIMEOUT_S)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        upstream.sendall(view[:n])
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    upstream.shutdown(socket.SHUT_WR)
    upstream.close()
    conn.close()
    server.close()
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    emit("done", cpu_s=cpu)


def role_writer(relay_port: int, total: int, verify: bool) -> None:
    """Send ``total`` bytes in 64 KiB ``sendall`` calls (each chunk stamped with its index)."""
    sock = socket.create_connection(("127.0.0.1", relay_port), timeout=CHILD_TIMEOUT_S)
    chunk = bytearray(b"\xa5" * CHUNK)
    crc = 0
    for index in range(total // CHUNK):
        struct.pack_into("<Q", chunk, 0, index)
        if verify:
            crc = zlib.crc32(chunk, crc)
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    emit("done", crc=crc if verify else None)


# --- driver ----------------------------------------------------------------------------------------------


def run_once(total: int, verify: bool) -> RelayRun:
    """One 3-process relay of ``total`` bytes; returns what the reader measured."""
    flag = ["--verify"] if verify else []
    started, busy0, own0 = time.perf_counter(), machine_busy_seconds(), own_cpu_seconds()
    with Child("tcp-reader", SCRIPT, ["--role", "reader", *flag], CHILD_TIMEOUT_S) as reader:
        reader_port = reader.expect("listening")["port"]
        with Child("tcp-relay", SCRIPT, ["--role", "relay", "--port", str(reader_port)], CHILD_TIMEOUT_S) as relay:
            relay_port = relay.expect("listening")["port"]
            args = ["--role", "writer", "--port", str(relay_port), "--bytes", str(total), *flag]
            with Child("tcp-writer", SCRIPT, args, CHILD_TIMEOUT_S) as writer:
                sent = writer.expect("done")
                got = reader.expect("done")
                relay_done = relay.expect("done")
    foreign = machine_busy_seconds() - busy0 - (own_cpu_seconds() - own0)
    foreign_share = max(0.0, foreign) / (time.perf_counter() - started)
    verified = check_stream("bare relay", total, got, sent, verify)
    return RelayRun(
        bytes=got["bytes"],
        seconds=got["seconds"],
        relay_cpu_s=relay_done["cpu_s"],
        foreign_share=foreign_share,
        verified=verified,
    )


def bare_measurement(runs: list[RelayRun]) -> Measurement:
    """The report row for the bare relay (a reference: no target)."""
    best = median([r.gb_per_s for r in runs])
    frames = runs[0].bytes / CHUNK
    cpu_us = median([r.relay_cpu_s for r in runs]) / frames * 1e6
    size = runs[0].bytes
    return Measurement(
        name="1. bare 3-process TCP relay, 64 KiB chunks",
        result=f"{best:.2f} GB/s",
        score=best,
        target=None,
        target_text="— (ceiling)",
        ratio_text="reference (1.00x)",
        details=(
            f"{fmt_bytes(size)} per run, median of {len(runs)} runs [{fmt_runs([r.gb_per_s for r in runs])}] GB/s; "
            f"relay process CPU {cpu_us:.1f} µs per 64 KiB chunk; "
            f"other processes used {median([r.foreign_share for r in runs]) * 100:.0f}% of a core during the runs"
        ),
    )


def sizes(quick: bool) -> int:
    """Bytes per run: 64 MiB in quick mode, else 1 GiB."""
    return 64 * MIB if quick else GIB


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""
    bench_main(
        __doc__,
        lambda args: [bare_measurement([run_once(sizes(args.quick), args.verify) for _ in range(args.repeat)])],
        {
            "reader": lambda args: role_reader(args.verify),
            "relay": lambda args: role_relay(args.port),
            "writer": lambda args: role_writer(args.port, args.bytes, args.verify),
        },
        quick_help="64 MiB instead of 1 GiB, one run",
        verify_help="check a CRC32 of the whole stream",
        default_repeat=5,
        role_options={"port": int, "bytes": int},
    )


if __name__ == "__main__":
    main()
