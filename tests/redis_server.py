"""A real Redis for tests: ``redis-server`` started on a free loopback port, stopped afterwards.

Tests that need Redis fail (never skip) when ``redis-server`` is missing: CI installs Debian's package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from types import TracebackType

import pytest

_READY_LINE = "Ready to accept connections"
_START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """``with RedisServer() as redis: redis.url`` — a fresh, empty Redis without persistence."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        self._executable = executable
        self._dir = tempfile.TemporaryDirectory(prefix="iii-redis-")
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.port = _free_port()
        arguments = {"bind": "127.0.0.1", "port": str(self.port), "save": "", "appendonly": "no", "dir": self._dir.name}
        command = [self._executable]
        for name, value in arguments.items():
            command += [f"--{name}", value]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        output: list[str] = []

        def watch() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                output.append(line)
                if _READY_LINE in line:
                    ready.set()
            ready.set()  # exited: let the waiter look

        threading.Thread(target=watch, name="redis-server-output", daemon=True).start()
        if not ready.wait(_START_TIMEOUT_S) or self._process.poll() is not None:
            self.stop()
            pytest.fail("redis-server did not start:\n" + "".join(output[-20:]))

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
