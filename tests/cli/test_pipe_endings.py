"""How ``iii pipe`` ends while its stdin is still flowing: a function that fails, one that returns early, Ctrl-C.

The command runs for real (``python -m iii pipe``) against a real engine and a worker in this process. The test
writes the command's stdin itself, from a thread that keeps writing until the command exits (its writes then
fail with a broken pipe), so the command always ends with stdin still flowing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iii import III, ChannelReader, ChannelWriter, InitOptions, register_worker
from iii.testing import EngineProcess

MIB = 1024 * 1024
BLOCK = bytes(range(256)) * 256
"""64 KiB of stdin: what the test writes at a time."""


@dataclass
class Served:
    client: III
    reading: threading.Event
    """Set when pipe.drain has received its first chunk."""


@pytest.fixture(scope="module")
def served(shared_engine: EngineProcess) -> Iterator[Served]:
    reading = threading.Event()
    with register_worker(shared_engine.url, InitOptions(worker_name="pipe-endings")) as client:

        async def fail_midway(data: dict[str, Any]) -> None:
            source: ChannelReader = data["input"]
            async for _chunk in source:
                raise ValueError("bad record")  # after reading a little, with more on its way

        def fail_at_once(data: Any) -> None:
            raise ValueError("refused before reading")

        async def head(data: dict[str, Any]) -> dict[str, int]:
            source: ChannelReader = data["input"]
            sink: ChannelWriter = data["output"]
            async for chunk in source:
                await sink.write(chunk[:10])
                break
            await sink.close_async()
            return {"bytes": 10}

        async def drain(data: dict[str, Any]) -> None:
            source: ChannelReader = data["input"]
            async for _chunk in source:  # stdin never ends here: only a broken input ends this
                reading.set()

        served = [
            client.register_function("pipe.fail_midway", fail_midway),
            client.register_function("pipe.fail_at_once", fail_at_once),
            client.register_function("pipe.head", head),
            client.register_function("pipe.ignore", lambda data: {"ignored": True}),
            client.register_function("pipe.drain", drain),
        ]
        # The CLI calls them from its own connection, which the engine may read before this one's registrations.
        assert all(function.wait_active(10) for function in served)
        yield Served(client, reading)


@dataclass
class Ended:
    returncode: int
    stdout: bytes
    stderr: bytes
    written: int
    """Bytes of stdin the test wrote before the command exited."""


class _FlowingStdin(threading.Thread):
    """Writes the command's stdin until a write fails because the command has exited (a broken pipe).

    ``burst`` bytes first, as fast as the command takes them; then more, every ``drip_s`` seconds when given
    (a slow producer, like ``tail -f``), else as fast again.
    """

    def __init__(self, process: subprocess.Popen[bytes], burst: int, drip_s: float | None) -> None:
        super().__init__(daemon=True, name="flowing-stdin")
        self.process = process
        self.burst = burst
        self.drip_s = drip_s
        self.written = 0
        self.broken = False
        self.stop = threading.Event()
        """Set by the test only once the command has exited (never needed when it ends as it must)."""

    def run(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while not self.stop.is_set():
                stdin.write(BLOCK)
                stdin.flush()
                self.written += len(BLOCK)
                if self.written >= self.burst and self.drip_s is not None:
                    self.stop.wait(self.drip_s)  # the producer's pace, not a synchronisation
        except (BrokenPipeError, ConnectionResetError):
            self.broken = True


def pipe_flowing(
    engine: EngineProcess,
    tmp_path: Path,
    function_id: str,
    *,
    burst: int = 4 * MIB,
    drip_s: float | None = None,
    started: threading.Event | None = None,
    interrupt: bool = False,
) -> Ended:
    """Run ``iii pipe FUNCTION`` with stdin flowing until it exits; with ``interrupt``, send SIGINT once
    ``started`` is set."""
    env = {key: value for key, value in os.environ.items() if key not in ("III_URL", "III_TOKEN")}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "iii", "pipe", function_id, "--url", engine.url],
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
        feeder = _FlowingStdin(process, burst, drip_s)
        feeder.start()
        try:
            if interrupt:
                assert started is not None and started.wait(60)
                process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=60)
        finally:
            feeder.stop.set()
            if process.poll() is None:
                process.kill()
                process.wait()
            feeder.join(10)
    assert feeder.broken, "stdin stopped flowing before the command exited"
    return Ended(returncode, out.read_bytes(), err.read_bytes(), feeder.written)


def assert_clean(stderr: bytes) -> None:
    assert b"Fatal Python error" not in stderr, stderr.decode(errors="replace")
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


@pytest.mark.parametrize("drip_s", [None, 0.01], ids=["fast", "trickling"])
def test_a_function_that_fails_while_stdin_flows_is_exit_1_and_its_error(
    served: Served, shared_engine: EngineProcess, tmp_path: Path, drip_s: float | None
) -> None:
    ended = pipe_flowing(shared_engine, tmp_path, "pipe.fail_midway", drip_s=drip_s)
    assert_clean(ended.stderr)
    assert ended.returncode == 1
    assert ended.stderr == b"Error: invocation_failed: bad record\n"


def test_a_function_that_fails_before_reading_is_exit_1_and_its_error(
    served: Served, shared_engine: EngineProcess, tmp_path: Path
) -> None:
    ended = pipe_flowing(shared_engine, tmp_path, "pipe.fail_at_once")
    assert_clean(ended.stderr)
    assert ended.returncode == 1
    assert ended.stderr == b"Error: invocation_failed: refused before reading\n"


def test_a_function_that_returns_before_reading_all_of_stdin_gets_a_warning(
    served: Served, shared_engine: EngineProcess, tmp_path: Path
) -> None:
    ended = pipe_flowing(shared_engine, tmp_path, "pipe.head")
    assert_clean(ended.stderr)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout == BLOCK[:10]
    assert ended.stderr.startswith(b"warning: pipe.head returned after reading ")
    assert ended.stderr.endswith(b" bytes of stdin\n")


def test_a_function_that_never_opens_its_output_ends_the_pipe_with_warnings(
    served: Served, shared_engine: EngineProcess, tmp_path: Path
) -> None:
    ended = pipe_flowing(shared_engine, tmp_path, "pipe.ignore")
    assert_clean(ended.stderr)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout == b""
    lines = ended.stderr.decode().splitlines()
    assert lines[0] == "warning: pipe.ignore returned without opening its output"
    assert lines[1].startswith("warning: pipe.ignore returned after reading ") and len(lines) == 2


def test_ctrl_c_during_a_pipe_exits_130_without_a_traceback(
    served: Served, shared_engine: EngineProcess, tmp_path: Path
) -> None:
    served.reading.clear()
    ended = pipe_flowing(shared_engine, tmp_path, "pipe.drain", drip_s=0.01, started=served.reading, interrupt=True)
    assert_clean(ended.stderr)
    assert ended.returncode == 130
    assert ended.stderr == b""
