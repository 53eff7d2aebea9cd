"""Helpers for tests and benchmarks: run a real engine in a child process on an ephemeral port.

Example::

    with EngineProcess() as engine:
        client = register_worker(engine.url)

The engine's log is kept (``engine.log_lines()``) so a test can check what it logged.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Final

_LISTENING: Final = re.compile(r"listening on (ws://[^\s\"]+)")
_HTTP_LISTENING: Final = re.compile(r"HTTP triggers on (http://[^\s\"]+)")
_RBAC_LISTENING: Final = re.compile(r"module=rbac serves workers on (ws://[^\s\"]+)")
_STREAM_LISTENING: Final = re.compile(r"module=stream serves subscribers on (ws://[^\s\"]+)")


class EngineProcess:
    """``python -m iii engine --port 0 --http-port 0 --stream-port 0`` in a child process.

    :meth:`start` returns once the engine logs the address it listens on (or raises ``RuntimeError``
    with the log if it exits or does not get there within ``start_timeout_s``).
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.args = ["--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--stream-port", "0", *args]
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None
        if "--data-dir" not in self.args:  # the modules' files go to a directory of this engine alone
            self._data_dir = tempfile.TemporaryDirectory(prefix="iii-engine-data-")
            self.args += ["--data-dir", self._data_dir.name]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout_s = start_timeout_s
        ports = [value for flag, value in zip(self.args, self.args[1:], strict=False) if flag == "--http-port"]
        self._serves_http = ports[-1] != "-1"
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.http_url = ""
        """Where the engine serves HTTP triggers (empty with ``--http-port -1``)."""
        self.rbac_url = ""
        """Where the RBAC worker listener takes workers (empty without ``--rbac-port``)."""
        self.stream_url = ""
        """Where clients subscribe to streams (empty when the stream module does not run, or ``--stream-port -1``)."""
        self._lines: list[str] = []
        self._new_line = threading.Condition()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> EngineProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "iii", "engine", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read_log, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        if not self._ready.wait(self.start_timeout_s) or not self.url:
            self.kill()
            raise RuntimeError("engine did not start:\n" + self.log_text())
        return self

    def _read_log(self, stream: IO[str]) -> None:
        for line in stream:
            with self._new_line:
                self._lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
            rbac = _RBAC_LISTENING.search(line) if not self.rbac_url else None
            subscribers = _STREAM_LISTENING.search(line) if not self.stream_url else None
            if rbac:  # logged before the engine's own port: the modules start first
                self.rbac_url = rbac.group(1)
            elif subscribers:  # so is this
                self.stream_url = subscribers.group(1)
            elif not self.url:
                match = _LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    if not self._serves_http:
                        self._ready.set()
            elif not self._ready.is_set():
                http = _HTTP_LISTENING.search(line)
                if http:
                    self.http_url = http.group(1)
                    self._ready.set()
        self._ready.set()  # the process ended: stop waiting either way

    def wait_for_log(self, text: str, timeout_s: float = 10.0) -> str:
        """Block until the engine logs a line containing ``text``; return that line.

        Raises ``AssertionError`` (with the log) if none comes within ``timeout_s``.
        """
        with self._new_line:
            found = self._new_line.wait_for(lambda: any(text in line for line in self._lines), timeout_s)
            if found:
                return next(line for line in self._lines if text in line)
        raise AssertionError(f"the engine did not log {text!r} within {timeout_s} s:\n{self.log_text()}")

    def log_lines(self) -> list[str]:
        return list(self._lines)

    def log_text(self) -> str:
        return "\n".join(self._lines)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills the process if it does not exit in time)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout_s)
        if self._data_dir is not None:
            self._data_dir.cleanup()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the engine gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
