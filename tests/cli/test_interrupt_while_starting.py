"""A Ctrl-C that lands while ``iii pipe`` builds its event loop ends the command without a traceback (seen once in
CI: the half-built loop's finalizer printed one). The signal is sent from inside the loop's constructor."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, os, signal, sys
from asyncio import unix_events
from iii.cli.stream_commands import {runner}

build = unix_events._UnixSelectorEventLoop.__init__
def interrupted_build(self, *args, **kwargs):
    unix_events._UnixSelectorEventLoop.__init__ = build  # the first loop only
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the loop is being built
    build(self, *args, **kwargs)
unix_events._UnixSelectorEventLoop.__init__ = interrupted_build

async def main():
    return "ran"

try:
    {runner}(main())
except KeyboardInterrupt:
    print("interrupted")
"""


def run(runner: str) -> subprocess.CompletedProcess[str]:
    code = SCRIPT.format(runner=runner)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_ctrl_c_while_the_loop_is_built_is_a_clean_interrupt() -> None:
    ended = run("_run_interruptibly")
    assert ended.stdout.strip() == "interrupted"
    assert "Traceback" not in ended.stderr and "never awaited" not in ended.stderr, ended.stderr
