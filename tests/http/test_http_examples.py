"""The HTTP examples (``examples/upload_service.py``, ``examples/sse_progress.py``) run as scripts, used with curl."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii.testing import EngineProcess
from tests.conftest import ROOT
from tests.interop.processes import WorkerProcess

MIB = 1024 * 1024


class Example(WorkerProcess):
    """``python examples/<name>.py ENGINE_URL [args]``, stopped by SIGTERM (as a user's Ctrl-C)."""

    def __init__(self, engine: EngineProcess, name: str, *args: str) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, ROOT / "examples" / f"{name}.py", engine.url, *args]
        super().__init__(name, argv, cwd=ROOT, env=env)

    def stop(self, grace_s: float = 10.0) -> int | None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        return super().stop(grace_s)


@pytest.fixture
def example(shared_engine: EngineProcess) -> Iterator[Any]:
    started: list[Example] = []

    def start(name: str, *args: str) -> dict[str, Any]:
        process = Example(shared_engine, name, *args).start()
        started.append(process)
        return process.wait_ready(60)

    yield start
    for process in started:
        assert process.stop() == 0, process.output()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--max-time", "60", *args], capture_output=True, timeout=90
    )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return done


def test_the_upload_service_stores_hashes_and_serves_files(
    example: Any, shared_engine: EngineProcess, tmp_path: Path
) -> None:
    storage = tmp_path / "store"
    ready = example("upload_service", "--storage", str(storage))
    assert {(r["config"]["http_method"], r["config"]["api_path"]) for r in ready["routes"]} == {
        ("PUT", "/files/:name"),
        ("GET", "/files/:name"),
        ("GET", "/files"),
    }
    upload = tmp_path / "data.bin"
    upload.write_bytes(os.urandom(20 * MIB + 3))
    base = shared_engine.http_url
    stored = json.loads(curl("-T", str(upload), f"{base}/files/data.bin").stdout)
    assert stored == {"name": "data.bin", "bytes": upload.stat().st_size, "sha256": _sha256(upload)}
    assert (storage / "data.bin").read_bytes() == upload.read_bytes()
    copy = tmp_path / "copy.bin"
    curl("-o", str(copy), f"{base}/files/data.bin")
    assert copy.read_bytes() == upload.read_bytes()
    assert json.loads(curl(f"{base}/files").stdout) == {"files": [{"name": "data.bin", "bytes": upload.stat().st_size}]}
    missing = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/files/nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.stdout == "404"


def test_the_progress_stream_reports_every_step_then_the_checksum(example: Any, shared_engine: EngineProcess) -> None:
    example("sse_progress")
    done = curl("-N", f"{shared_engine.http_url}/jobs/checksum?mib=5")
    events = [
        dict(line.split(": ", 1) for line in block.splitlines()) for block in done.stdout.decode().strip().split("\n\n")
    ]
    assert [e["event"] for e in events] == ["progress"] * 5 + ["done"]
    assert [json.loads(e["data"])["step"] for e in events[:5]] == [1, 2, 3, 4, 5]
    expected = hashlib.sha256(b"".join(step.to_bytes(4, "big") * (MIB // 4) for step in range(1, 6)))
    assert json.loads(events[-1]["data"]) == {"sha256": expected.hexdigest()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
