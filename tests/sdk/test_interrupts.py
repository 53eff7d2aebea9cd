"""One Ctrl-C stops a worker, as it stops any Python program.

The KeyboardInterrupt reaches the program where it was raised (Python prints its traceback, as always), every
client stops, and the process ends within about a second, with no second traceback from the SDK's threads.
Before, the keep-alive thread held the process after the first Ctrl-C, and the second one ended it with
"Exception ignored in: <module 'threading'>".
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from iii import InitOptions, register_worker
from iii.testing import EngineProcess

PRELUDE = """
import asyncio, sys, time
from iii import register_worker, InitOptions
client = register_worker(sys.argv[1], InitOptions(worker_name="interruptible"))
assert client.register_function("worker.echo", lambda data: data).wait_active(10)
"""
SHAPES = {
    "sleep-loop": PRELUDE + "print('ready', flush=True)\nwhile True:\n    time.sleep(1)\n",
    "asyncio-run": PRELUDE
    + "async def main():\n    print('ready', flush=True)\n    await asyncio.Event().wait()\nasyncio.run(main())\n",
    "blocked-in-trigger": PRELUDE
    + "print('ready', flush=True)\nclient.trigger({'function_id': 'outside.never', 'timeout_ms': 600000})\n",
    # 'ready' once the script has ended: a threading atexit hook registered before the SDK's runs after it.
    "script-ended": "import threading\nthreading._register_atexit(lambda: print('ready', flush=True))\n" + PRELUDE,
}


@pytest.fixture(scope="module")
def outside(shared_engine: EngineProcess) -> Iterator[threading.Event]:
    """A worker in the test process whose ``outside.never`` sets the yielded event when called, and answers
    only when the test module ends."""
    arrived, release = threading.Event(), threading.Event()

    def never(data: object) -> bool:
        arrived.set()
        return release.wait(60)

    with register_worker(shared_engine.url, InitOptions(worker_name="outside")) as client:
        assert client.register_function("outside.never", never).wait_active(10)
        yield arrived
        release.set()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_one_sigint_ends_a_worker_within_a_second(
    shared_engine: EngineProcess, outside: threading.Event, shape: str
) -> None:
    outside.clear()
    child = subprocess.Popen(
        [sys.executable, "-c", SHAPES[shape], shared_engine.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        if shape == "blocked-in-trigger":
            assert outside.wait(10), "the child's call never reached the outside worker"
        interrupted_at = time.monotonic()
        child.send_signal(signal.SIGINT)
        code = child.wait(10)
        took = time.monotonic() - interrupted_at
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=10)
    assert took < 1.5, f"{shape}: ended {took:.2f} s after one SIGINT\n{stderr}"
    for noise in ("Exception ignored", "Exception in thread", "Error in sys.excepthook", "never retrieved"):
        assert noise not in stderr, f"{shape}: {noise!r} from the SDK's threads\n{stderr}"
    if shape == "script-ended":
        assert code == 0 and "Traceback" not in stderr, stderr
    else:  # the program's own KeyboardInterrupt traceback, as Python prints it without the SDK
        assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr
