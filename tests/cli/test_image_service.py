"""``examples/image_service.py`` run as a script, driven by the ``iii`` command as the README shows it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii.testing import EngineProcess
from tests.conftest import ROOT
from tests.interop.processes import WorkerProcess

FUNCTIONS = {"images.info", "images.fit", "files.sha256", "text.upper"}
README_OUTPUT_CHECKED = (
    'iii call images.fit --data \'{"width": 800, "height": 600}\'',
    "iii call images.rotate",
    "iii send docs/console.png --to images.info",
    "printf 'hello\\nworld\\n' | iii pipe text.upper",
)
"""README commands whose output does not depend on time, ids or speed: the test compares it to the letter."""


class ImageService(WorkerProcess):
    """``python examples/image_service.py ENGINE_URL``, stopped by SIGTERM (as a user's Ctrl-C)."""

    def __init__(self, engine: EngineProcess) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, ROOT / "examples" / "image_service.py", engine.url]
        super().__init__("image_service", argv, cwd=ROOT, env=env)

    def stop(self, grace_s: float = 10.0) -> int | None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        return super().stop(grace_s)


@pytest.fixture(scope="module")
def service(shared_engine: EngineProcess) -> Iterator[dict[str, object]]:
    process = ImageService(shared_engine).start()
    try:
        yield process.wait_ready(60)
    finally:
        assert process.stop() == 0, process.output()


def shell(engine: EngineProcess, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a user would (``iii`` of this venv on the PATH, ``III_URL`` set), in the repository."""
    env = {key: value for key, value in os.environ.items() if key != "III_TOKEN"}
    env["III_URL"] = engine.url
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def readme_output(command: str) -> str:
    """What the README's ``iii`` section shows after ``$ command`` (up to the next prompt), progress bars left out."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"$ {command}") + 1
    shown = []
    for line in lines[start:]:
        if line.startswith("$ ") or line == "```":
            break
        if "━" not in line:  # the progress bar goes to stderr, and only on a terminal
            shown.append(line)
    return "\n".join(shown) + "\n"


def test_the_worker_serves_its_functions_under_its_name(service: dict[str, object]) -> None:
    entries = service["functions"]
    assert isinstance(entries, list)
    assert {entry["function_id"] for entry in entries} == FUNCTIONS
    assert {entry["worker_name"] for entry in entries} == {"image-service"}


@pytest.mark.parametrize("command", README_OUTPUT_CHECKED)
def test_the_readme_shows_what_the_command_prints(
    service: dict[str, object], shared_engine: EngineProcess, command: str
) -> None:
    done = shell(shared_engine, command)
    assert done.stdout + done.stderr == readme_output(command)


def test_the_readme_lists_the_functions_as_iii_functions_does(
    service: dict[str, object], shared_engine: EngineProcess
) -> None:
    done = shell(shared_engine, "iii functions")
    assert done.returncode == 0, done.stderr
    printed = [line.rstrip() for line in done.stdout.splitlines()]
    assert printed == readme_output("iii functions").splitlines()


def test_images_info_reads_png_jpeg_and_gif_headers(
    service: dict[str, object], shared_engine: EngineProcess, tmp_path: Path
) -> None:
    png = (ROOT / "docs" / "console.png").read_bytes()
    expected_png = {
        "format": "png",
        "width": int.from_bytes(png[16:20], "big"),
        "height": int.from_bytes(png[20:24], "big"),
        "bytes": len(png),
    }
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + (600).to_bytes(2, "big") + (800).to_bytes(2, "big") + b"\x03" + bytes(9)
    jpeg = b"\xff\xd8" + app0 + sof0 + os.urandom(200_000)
    gif = b"GIF89a" + (320).to_bytes(2, "little") + (200).to_bytes(2, "little") + bytes(100)
    cases = [
        ("console.png", png, expected_png),
        ("photo.jpg", jpeg, {"format": "jpeg", "width": 800, "height": 600, "bytes": len(jpeg)}),
        ("anim.gif", gif, {"format": "gif", "width": 320, "height": 200, "bytes": len(gif)}),
    ]
    for name, content, expected in cases:
        (tmp_path / name).write_bytes(content)
        done = shell(shared_engine, f"iii send {tmp_path / name} --to images.info")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == expected


def test_bad_input_is_a_clear_error(service: dict[str, object], shared_engine: EngineProcess, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    done = shell(shared_engine, f"iii send {text} --to images.info")
    assert done.returncode == 1
    assert "not a PNG, JPEG or GIF image" in done.stderr
    done = shell(shared_engine, """iii call images.fit --data '{"width": 0, "height": 600}'""")
    assert done.returncode == 1
    assert "width, height and box must be positive integers" in done.stderr


def test_sha256_and_upper_stream_their_bytes(
    service: dict[str, object], shared_engine: EngineProcess, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "data.bin").write_bytes(data)
    done = shell(shared_engine, f"iii send {tmp_path / 'data.bin'} --to files.sha256")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    text = b"Mixed case, digits 123 and \xc3\xa9 stay; letters go UP\n" * 20_000
    done = subprocess.run(  # bytes in, bytes out: not through the text-mode helper
        [sys.executable, "-m", "iii", "pipe", "text.upper", "--url", shared_engine.url],
        input=text,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == re.sub(rb"[a-z]+", lambda m: m.group().upper(), text)
