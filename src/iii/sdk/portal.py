"""The SDK's own event loop thread, and the dual-mode rule that every I/O method follows.

All SDK I/O runs as coroutines on one private loop (:class:`Portal`). A public method builds its coroutine
and hands it to :func:`dual`, which applies the rule in one place:

* the work **starts at once**, in call order, whether or not anyone awaits it (like a JavaScript promise);
* where an event loop runs in the calling thread, the call returns an **awaitable** for its completion
  (awaiting is optional for fire-and-forget methods);
* in plain synchronous code, value-producing and backpressured methods (``blocking=True``) **block** until
  done and return the value; fire-and-forget methods return ``None`` at once.

A fire-and-forget call's failure is never lost silently: it goes to ``on_error`` (the owning object then
raises it from its next call) and is logged.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from iii.errors import UsageError

log = logging.getLogger("iii.sdk")

T = TypeVar("T")

SHUT_DOWN: Final = "this III client has been shut down"
FORKED: Final = (
    "this III client belongs to the process that created it, not to a fork of it: register a new worker here"
)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Inbox:
    """Callbacks posted to one loop from other threads, run there in order, with one wake-up per burst.

    ``loop.call_soon_threadsafe`` wakes the loop for every callback (a write to its self-pipe on plain
    asyncio); under load, calls and answers come in bursts, and one wake-up can run them all.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = collections.deque()
        self._scheduled = False

    def post(self, callback: Callable[..., object], *args: Any) -> bool:
        """Queue ``callback(*args)``; False if the loop has closed (nothing will run)."""
        self._items.append((callback, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed
                self._scheduled = False
                return False
        return True

    def _drain(self) -> None:
        self._scheduled = False  # before taking items: a post from now on schedules another drain
        items = self._items
        while items:
            callback, args = items.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("a callback posted to the loop failed")


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def inbox(loop: asyncio.AbstractEventLoop) -> Inbox:
    """The inbox of ``loop`` (one per loop)."""
    found = _inboxes.get(loop)
    if found is None:
        with _inboxes_lock:
            found = _inboxes.get(loop)
            if found is None:
                found = _inboxes[loop] = Inbox(loop)
    return found


class Portal:
    """A private asyncio loop running in a daemon thread."""

    def __init__(self, name: str = "iii-sdk") -> None:
        self.loop = _new_loop()
        self._inbox = inbox(self.loop)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._stopped = False
        self._forked = False
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` has been called: nothing more can run on the loop."""
        return self._stopped

    def ensure_open(self) -> None:
        """Raise :class:`~iii.errors.UsageError` once the loop is stopped (its client was shut down), or in a
        forked child (the loop's thread did not come along: a call would wait forever)."""
        if self._forked:
            raise UsageError(FORKED)
        if self._stopped:
            raise UsageError(SHUT_DOWN)

    def forked(self) -> None:
        """This process is a fork of the one that made the portal: its thread is gone, nothing can run."""
        self._forked = True
        self._stopped = True

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread; it starts in submission order.

        Raises :class:`~iii.errors.UsageError` (closing ``coro``, so it never warns) once the loop is stopped.
        """
        try:
            self.ensure_open()
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except (UsageError, RuntimeError):  # RuntimeError: the loop closed meanwhile
            coro.close()
            raise UsageError(FORKED if self._forked else SHUT_DOWN) from None

    def call_soon(self, callback: Callable[..., object], *args: Any) -> bool:
        """Run ``callback(*args)`` on the loop, in call order, from any thread (at once on the loop's own thread
        is not needed: it is queued either way). Returns False, doing nothing, once the loop has stopped."""
        if self._stopped:
            return False
        return self._inbox.post(callback, *args)

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (never from the loop thread itself)."""
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError("a blocking iii call cannot run on the SDK's own loop; await the *_async variant")
        return self.submit(coro).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and join its thread (no-op when called from the loop thread)."""
        self._stopped = True
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread:
            self._thread.join(timeout_s)


def wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter``, a future of ``loop`` (any thread's), with None; nothing if its loop has closed."""
    inbox(loop).post(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in the calling thread, or None in plain synchronous code."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


LOOP_ENDED: Final = (
    "this channel end belongs to the event loop that first used it, and that loop has ended: use an end within "
    "one event loop (or first use it from plain synchronous code, which puts it on the SDK's loop)"
)


def submit_to(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on ``loop`` (any thread's); :class:`~iii.errors.UsageError` if that loop has closed."""
    try:
        return asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop closed
        coro.close()
        raise UsageError(LOOP_ENDED) from None


async def await_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` and await it from the loop running here (directly when it is ``loop``)."""
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(submit_to(loop, coro))


def dual(
    portal: Portal,
    coro: Coroutine[Any, Any, T],
    *,
    blocking: bool,
    on_error: Callable[[BaseException], None] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Any:
    """Start ``coro`` now on ``loop`` (default: the SDK loop), and return per the dual-mode rule (see the module
    docstring).

    Returns an awaitable when the calling thread runs an event loop; otherwise the result (``blocking``)
    or ``None`` (fire-and-forget).
    """
    running = running_loop()
    target = portal.loop if loop is None else loop
    if running is target:
        task = running.create_task(coro)
        if on_error is not None:
            task.add_done_callback(lambda t: _report(t, on_error))
        return task
    if target is portal.loop:
        future = portal.submit(coro)
    else:
        try:
            portal.ensure_open()
        except UsageError:
            coro.close()
            raise
        future = submit_to(target, coro)
    if on_error is not None:
        future.add_done_callback(lambda f: _report(f, on_error))
    if running is not None:
        wrapped = asyncio.wrap_future(future, loop=running)
        if on_error is not None:  # reported already; do not let an unawaited wrapper warn again
            wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
        return wrapped
    if blocking:
        if portal.in_loop_thread:  # pragma: no cover - only reachable from loop callbacks
            raise RuntimeError("a blocking iii call cannot run on the SDK's own loop")
        return future.result()
    return None


def _report(
    done: asyncio.Future[Any] | concurrent.futures.Future[Any], on_error: Callable[[BaseException], None]
) -> None:
    if done.cancelled():
        return
    error = done.exception()
    if error is not None:
        on_error(error)
