"""How SDK clients end with the program that uses them.

A Python program ends in one of three ways, and its clients follow:

* **Its script ends normally.** A client that serves functions keeps the process alive (a non-daemon
  keep-alive thread, as the official SDK does) until :meth:`~iii.III.shutdown`; a client that only calls
  does not. At interpreter exit every client is shut down, which first flushes the streams it writes
  (``flush_timeout_s``), so a script may write, close and simply end.
* **Its main thread dies of an uncaught exception** (Ctrl-C's KeyboardInterrupt where it was raised: in
  ``time.sleep``, ``asyncio.run``, a blocking ``trigger``). Python prints the traceback as usual, then every
  client stops at once (calls still waiting fail with ``invocation_stopped``, streams get a second to flush)
  and releases the process: one Ctrl-C ends it, with no second traceback from the SDK's threads.
* **Ctrl-C (or SIGTERM) arrives after the script ended while its workers serve.** The main thread then waits
  for the keep-alive threads; a handler installed at that moment stops every client the same way and lets
  the process end (exit status 0: the program had finished).

One set of hooks serves every client of the process; clients are held by weak references.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from iii.sdk.client import III

INTERRUPT_FLUSH_S: Final = 1.0
"""How long streams may take to flush when the program is interrupted (it must end within about a second)."""

_clients: weakref.WeakSet[III] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def track(client: III) -> None:
    """Have ``client`` shut down when the program ends (see the module docstring)."""
    global _installed
    with _lock:
        _clients.add(client)
        if _installed:
            return
        _installed = True
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=_forked)
    previous_hook = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        previous_hook(kind, error, trace)  # the program's own traceback, as without the SDK
        if not hasattr(sys, "ps1") and not sys.flags.interactive:  # in a REPL an error does not end the program
            _stop_all(INTERRUPT_FLUSH_S if issubclass(kind, KeyboardInterrupt) else None)

    sys.excepthook = excepthook
    register_threading_atexit = getattr(threading, "_register_atexit", None)
    if register_threading_atexit is not None:  # CPython 3.9+: runs when the main thread is done, before joins
        register_threading_atexit(_main_thread_done)


def keep_process_alive(release: threading.Event) -> None:
    """Hold the process (a non-daemon thread) until ``release`` is set."""
    threading.Thread(target=release.wait, name="iii-keepalive", daemon=False).start()


def _stop_all(flush_timeout_s: float | None) -> None:
    for client in list(_clients):
        try:
            client._stop_now(flush_timeout_s)
        except Exception as exc:  # ending: say it, never raise it
            print(f"iii: stopping a client failed: {exc}", file=sys.stderr)


def _at_exit() -> None:
    _stop_all(None)


def _forked() -> None:
    """In a forked child: the clients' threads did not come along. Their calls raise UsageError, and exiting
    neither flushes nor waits for them (their sockets belong to the parent)."""
    for client in list(_clients):
        client._portal.forked()
        if client.telemetry is not None:
            client.telemetry.forked()
        if client._keepalive is not None:
            client._keepalive.set()
    _clients.clear()


def _main_thread_done() -> None:
    """The script ended normally; serving clients keep the process. Let Ctrl-C and SIGTERM stop them."""
    if not any(client._serving for client in list(_clients)):
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(signum, _interrupted)


def _interrupted(signum: int, frame: FrameType | None) -> Any:
    _stop_all(INTERRUPT_FLUSH_S)
