"""Child processes for the interop tests: long-running SDK workers and one-shot callers, all time-bounded.

A :class:`WorkerProcess` is started, announces readiness with a ``READY {json}`` line on stdout (or
``FATAL ...`` on failure), and is stopped by closing its stdin; if it does not exit within the grace period
it is killed through its own ``Popen`` object. Nothing here waits on a timer: readiness and results are
read from the child's output with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from iii.testing import EngineProcess

STOP_GRACE_S = 15.0
"""How long a worker may take to exit after its stdin closes before it is killed."""


def child_env(engine: EngineProcess, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an SDK child: ours plus ``III_URL`` of the engine, without our Python path, venv
    and pytest settings (``PYTEST_ADDOPTS`` and the like must not reach the official suite's pytest)."""
    dropped = ("PYTHONPATH", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key not in dropped and not key.startswith("PYTEST_")}
    env["III_URL"] = engine.url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


_COMPLAINT = re.compile(r"level=(WARNING|ERROR|CRITICAL)\b")


def engine_complaints(engine: EngineProcess) -> list[str]:
    """The engine's WARNING and ERROR log lines so far.

    With well-behaved official SDKs there must be none: the engine warns about malformed or oversized
    messages, refused registrations or channel ends, and logs errors for its own failures.
    """
    return [line for line in engine.log_lines() if _COMPLAINT.search(line)]


def tail(text: str, lines: int = 80) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


class WorkerProcess:
    """A worker child process with captured output (``name`` labels it in diagnostics)."""

    def __init__(self, name: str, argv: Sequence[str | os.PathLike[str]], *, cwd: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.cwd = cwd
        self.env = dict(env)
        self.process: subprocess.Popen[str] | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._held: list[str] = []
        """Lines :meth:`expect` read past without taking them (the earliest first)."""
        self._threads: list[threading.Thread] = []

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, sink, forward in (
            (self.process.stdout, self._stdout, True),
            (self.process.stderr, self._stderr, False),
        ):
            thread = threading.Thread(target=self._pump, args=(stream, sink, forward), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _pump(self, stream: IO[str], sink: list[str], forward: bool) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if forward:
                self._lines.put(line.rstrip("\n"))
        if forward:
            self._lines.put(None)  # end of stdout: the process is gone or closed it

    def wait_ready(self, timeout_s: float, prefix: str = "READY ") -> dict[str, Any]:
        """Block until the worker prints ``READY {json}`` and return the JSON; ``AssertionError`` otherwise.

        With another ``prefix``, the next line starting with it (earlier lines are skipped). Fails at once
        when the worker prints ``FATAL`` or its stdout ends, and after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {prefix.strip()} within {timeout_s:.0f} s\n{self.output()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None or line.startswith("FATAL"):
                self._wait_exit(5.0)
                raise AssertionError(f"{self.name}: failed before READY\n{self.output()}")
            if line.startswith(prefix):
                ready: dict[str, Any] = json.loads(line.removeprefix(prefix))
                return ready

    def expect(
        self, prefix: str, timeout_s: float, matches: Callable[[dict[str, Any]], bool] = lambda record: True
    ) -> dict[str, Any]:
        """The earliest line ``PREFIX {json}`` whose JSON ``matches``, as the JSON; ``AssertionError`` otherwise.

        Unlike :meth:`wait_ready`, the lines it reads past are kept, so that a later ``expect`` can still take
        them (events that came before a call's result, say). Fails when the worker prints ``FATAL`` or its
        stdout ends first, and after ``timeout_s`` seconds.
        """
        for index, held in enumerate(self._held):
            record = _record(held, prefix)
            if record is not None and matches(record):
                del self._held[index]
                return record
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no matching {prefix} within {timeout_s:.0f} s\n{self.output()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None or line.startswith("FATAL"):
                self._lines.put(line)  # every later expect fails at once too
                raise AssertionError(f"{self.name}: failed while waiting for {prefix}\n{self.output()}")
            record = _record(line, prefix)
            if record is not None and matches(record):
                return record
            self._held.append(line)

    def held(self, prefix: str) -> list[dict[str, Any]]:
        """The ``PREFIX {json}`` lines read so far and not taken by :meth:`expect` (without taking them)."""
        return [record for line in self._held if (record := _record(line, prefix)) is not None]

    def send(self, record: Any) -> None:
        """Write ``record`` as one JSON line to the worker's stdin."""
        assert self.process is not None and self.process.stdin is not None, "send before start"
        self.process.stdin.write(json.dumps(record) + "\n")
        self.process.stdin.flush()

    def _wait_exit(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """Close stdin (the worker's signal to shut down), wait up to ``grace_s``, then kill; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        self._wait_exit(grace_s)
        for thread in self._threads:
            thread.join(5.0)
        return self.process.returncode

    def output(self) -> str:
        """Exit code, stdout and stderr so far, for diagnostics."""
        code = None if self.process is None else self.process.poll()
        return (
            f"--- {self.name} (exit code {code}) stdout:\n{tail(chr(10).join(self._stdout))}\n"
            f"--- {self.name} stderr:\n{tail(chr(10).join(self._stderr))}"
        )

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _record(line: str, prefix: str) -> dict[str, Any] | None:
    """The JSON of ``PREFIX {json}``, or None for a line with another prefix."""
    if not line.startswith(prefix + " "):
        return None
    record: dict[str, Any] = json.loads(line.removeprefix(prefix + " "))
    return record


def run_once(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    stdin_text: str = "",
) -> tuple[int | None, str, str]:
    """Run a one-shot child to completion with ``stdin_text`` as its stdin; return (exit code, stdout, stderr).

    A child still running after ``timeout_s`` is killed and reported with exit code ``None``.
    """
    try:
        completed = subprocess.run(
            [str(arg) for arg in argv],
            cwd=cwd,
            env=dict(env),
            input=stdin_text,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        err = exc.stderr if isinstance(exc.stderr, str) else (exc.stderr or b"").decode(errors="replace")
        return None, out, err + f"\n(killed after {timeout_s:.0f} s)"
    return completed.returncode, completed.stdout, completed.stderr
