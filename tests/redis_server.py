"""A real Redis for tests: ``redis-server`` started on a free loopback port, stopped afterwards.

It can also be halted and started again on the same port (an outage): with its data (saved on the way down
and loaded on the way up, as a Redis with persistence would), or empty (as one without).

Tests that need Redis fail (never skip) when ``redis-server`` is missing: CI installs Debian's package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType

import pytest
import redis

_READY_LINE = "Ready to accept connections"
_START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """``with RedisServer() as redis: redis.url`` — a fresh, empty Redis without persistence.

    :meth:`halt` then :meth:`start` is a restart on the same port (and the same URL).
    """

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
        """Start on a free port, or on the port of the previous run after :meth:`halt`."""
        self.port = self.port or _free_port()
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

    def halt(self, *, keep_data: bool = False) -> None:
        """Stop the server and keep its port for the next :meth:`start`; with ``keep_data`` it saves its data
        first (``SHUTDOWN SAVE``) and the next start loads it, otherwise the next start is empty."""
        if self._process is None or self._process.poll() is not None:
            return
        dump = Path(self._dir.name) / "dump.rdb"
        dump.unlink(missing_ok=True)
        if keep_data:
            with redis.Redis.from_url(self.url) as client:
                client.shutdown(save=True)  # returns once the server closed the connection, after saving
            self._process.wait(_START_TIMEOUT_S)
            if not dump.exists():
                pytest.fail("redis-server did not save its data on SHUTDOWN SAVE")
        else:
            self._terminate()

    def stop(self) -> None:
        """Stop the server for good (its files go)."""
        self._terminate()
        self._dir.cleanup()

    def _terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
