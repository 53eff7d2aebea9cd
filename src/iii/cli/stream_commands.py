"""``iii send`` and ``iii pipe``: stream files and pipes through channels to functions.

``iii send FILE --to FUNCTION`` creates a channel, calls the function with the channel's reader ref under
``--field`` (``reader`` by default), writes the file into the channel while the function reads it (with
a progress bar on stderr), and prints the function's result.

``iii pipe FUNCTION`` creates two channels and calls the function with ``{"input": reader ref, "output":
writer ref}``: stdin streams into ``input`` while whatever the function writes to ``output`` streams to
stdout, so ``cat big.csv | iii pipe csv.stats > out.json`` works in a shell pipeline.

Both start the call first and write while the function reads, so any size streams in bounded memory. The
writing runs in a daemon thread: if the call fails early, the command reports it and exits without
waiting for writes nobody will read. ``pipe`` reads stdin's descriptor itself (:class:`_StdinChunks`), so it
can stop reading at any moment, and a reader still busy at exit holds no lock the interpreter needs.
A function that returns before reading all of its input gets a warning; Ctrl-C exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from iii.cli.connection import connected, engine_options, failed, parse_data, print_json
from iii.errors import ChannelBrokenError, InvocationError
from iii.protocol import close_codes
from iii.sdk.channels import ChannelWriter
from iii.sdk.client import III

CHUNK_BYTES: Final = 1024 * 1024
_FEEDER_GRACE_S: Final = 2.0
_INTERRUPTED: Final = 128 + 2  # the shell's exit code for SIGINT
_STDIN_FD: Final = 0

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _interruptible(command: F) -> F:
    """Ctrl-C ends the command with exit code 130 and no traceback (click would say "Aborted!" and exit 1)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(_INTERRUPTED) from None

    return run  # type: ignore[return-value]


def _timeout_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout-ms",
        type=int,
        default=3_600_000,
        show_default=True,
        help="how long the function may take (the engine's --invocation-timeout-s bounds it too)",
    )(command)


def _payload_fields(data: str | None) -> dict[str, Any]:
    """``--data``: extra payload fields, a JSON object."""
    extra = parse_data(data) or {}
    if not isinstance(extra, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    return extra


def _progress(wanted: bool | None) -> Progress:
    """A progress bar on stderr (bytes, rate, ETA): shown when asked, else when stderr is a terminal."""
    show = sys.stderr.isatty() if wanted is None else wanted
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
        transient=False,
    )


class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Stopped(Exception):
    """Reading stdin was stopped: the input did not end, so the channel must not end cleanly either."""


class _StdinChunks:
    """Stdin's descriptor, read by one thread in chunks and stoppable from any other thread at any moment.

    Reads go to the descriptor itself, never through ``sys.stdin.buffer``: a thread blocked in that buffered
    reader holds its lock, and when the command exits meanwhile, the interpreter aborts closing stdin ("Fatal
    Python error: _enter_buffered_busy", exit 134). A read waits for data or for :meth:`stop`, whichever comes
    first, and returns what is there (up to ``size`` bytes), so data that trickles in goes on as it comes.
    After :meth:`stop`, reads raise :class:`_Stopped`; the end of stdin reads as ``b""``.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = False
        self._ended = False

    def read(self, size: int, /) -> bytes:
        chunks: list[bytes] = []
        have = 0
        wait: float | None = None  # for the first bytes; then only what is there already
        while have < size and not self._ended:
            if not self._ready(wait):
                break
            chunk = os.read(self.fd, size - have)
            if not chunk:
                self._ended = True
                break
            chunks.append(chunk)
            have += len(chunk)
            wait = 0
        return b"".join(chunks)

    def _ready(self, wait: float | None) -> bool:
        """Whether stdin can be read (at once, or within ``wait`` seconds: None = forever)."""
        if self._stopped:
            raise _Stopped
        readable, _, _ = select.select([self.fd, self._wake_r], [], [], wait)
        if self._stopped:
            raise _Stopped
        return self.fd in readable

    def stop(self) -> None:
        """Stop reading: a read waiting for data returns at once (raising :class:`_Stopped`), later ones too."""
        if not self._stopped:
            self._stopped = True
            os.write(self._wake_w, b"!")

    def __enter__(self) -> _StdinChunks:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        # Stopped, not closed: the reading thread may still be inside select() on these descriptors, and the
        # process is about to exit; closing them under it could hand their numbers to another file.
        self.stop()


class _Feeder(threading.Thread):
    """Copies a binary stream into a channel writer, reporting each chunk; remembers how it ended.

    The writer is closed (a clean end) only at the end of the source; a source that fails or is stopped
    leaves it open, so the reader never takes a cut stream for a whole one.
    """

    def __init__(self, source: _Source, writer: ChannelWriter, on_chunk: Callable[[int], None]) -> None:
        super().__init__(daemon=True, name="iii-feeder")
        self.source = source
        self.writer = writer
        self.on_chunk = on_chunk
        self.error: BaseException | None = None
        self.sent = 0
        self.ended = False
        """The whole source went into the channel, and the channel was closed after it."""

    def run(self) -> None:
        try:
            while chunk := self.source.read(CHUNK_BYTES):
                self.writer.write(chunk)
                self.sent += len(chunk)
                self.on_chunk(len(chunk))
            self.writer.close()
            self.ended = True
        except BaseException as exc:  # reported by the command
            self.error = exc

    def unread(self, returned_at: float) -> bool:
        """Once the function has returned (at ``returned_at``, a monotonic time): whether it left input unread.

        A function that read to the end has seen the writer's close, so the feeder is finishing; one still
        busy ``_FEEDER_GRACE_S`` after the return, or cut off (the reader went away), means the function
        stopped reading early.
        """
        self.join(max(0.0, returned_at + _FEEDER_GRACE_S - time.monotonic()))
        return not self.ended


def _call_in_background(client: III, request: dict[str, Any]) -> tuple[threading.Event, dict[str, Any]]:
    """Start a call on a daemon thread; the event is set when it has an outcome (``result`` or ``error``, and
    ``at``: when, a monotonic time)."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = client.trigger(request)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            outcome["at"] = time.monotonic()
            done.set()

    threading.Thread(target=run, daemon=True, name="iii-call").start()
    return done, outcome


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "function_id", required=True, help="the function that reads the file")
@click.option("--field", default="reader", show_default=True, help="payload field that carries the reader ref")
@click.option("--data", "-d", help="more payload fields: a JSON object, or @file.json")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: when stderr is a tty]")
@_timeout_option
@engine_options
@_interruptible
def send(
    file: Path,
    function_id: str,
    field: str,
    data: str | None,
    progress: bool | None,
    timeout_ms: int,
    url: str | None,
    token: str | None,
) -> None:
    """Stream FILE through a new channel to a function, and print its result."""
    extra = _payload_fields(data)
    size = file.stat().st_size
    with connected(url, token) as client, file.open("rb") as source, _progress(progress) as bar:
        channel = client.create_channel()
        task = bar.add_task(f"{file.name} → {function_id}", total=size)
        payload = {**extra, field: channel.reader_ref.model_dump()}
        done, outcome = _call_in_background(
            client, {"function_id": function_id, "payload": payload, "timeout_ms": timeout_ms}
        )
        feeder = _Feeder(source, channel.writer, lambda n: bar.advance(task, n))
        feeder.start()
        done.wait()
        if "error" in outcome:
            raise failed(outcome["error"])
        if feeder.unread(outcome["at"]):
            click.echo(f"warning: {function_id} returned after reading {feeder.sent} of {size} bytes", err=True)
    if feeder.error is not None and not isinstance(feeder.error, ChannelBrokenError):
        raise click.ClickException(f"sending {file} failed: {feeder.error}")
    print_json(outcome["result"])


@click.command()
@click.argument("function_id")
@click.option("--in-field", default="input", show_default=True, help="payload field for the reader of stdin")
@click.option("--out-field", default="output", show_default=True, help="payload field for the writer to stdout")
@click.option("--data", "-d", help="more payload fields: a JSON object, or @file.json")
@click.option("--progress/--no-progress", default=None, help="show progress on stderr [default: when it is a tty]")
@_timeout_option
@engine_options
@_interruptible
def pipe(
    function_id: str,
    in_field: str,
    out_field: str,
    data: str | None,
    progress: bool | None,
    timeout_ms: int,
    url: str | None,
    token: str | None,
) -> None:
    """Stream stdin through a function to stdout (cat big.csv | iii pipe csv.stats > out.json)."""
    extra = _payload_fields(data)
    try:
        os.fstat(_STDIN_FD)
    except OSError:
        raise click.ClickException("stdin is closed (give the command a file or a pipe to read)") from None
    stdout = sys.stdout.buffer
    # Leaving the block stops reading stdin first (whatever the reader is doing), then disconnects.
    with connected(url, token) as client, _StdinChunks(_STDIN_FD) as stdin, _progress(progress) as bar:
        into, out_of = client.create_channel(), client.create_channel()
        task = bar.add_task(f"stdin → {function_id}", total=None)
        payload = {**extra, in_field: into.reader_ref.model_dump(), out_field: out_of.writer_ref.model_dump()}
        request = {"function_id": function_id, "payload": payload, "timeout_ms": timeout_ms}
        done, outcome = _call_in_background(client, request)
        feeder = _Feeder(stdin, into.writer, lambda n: bar.advance(task, n))
        feeder.start()

        async def copy_out() -> None:
            async for chunk in out_of.reader:
                stdout.write(chunk)
            stdout.flush()

        unopened = functools.partial(_writer_unopened, client, out_of.writer_ref.channel_id)
        copied = _copy_until_failure(copy_out(), done, outcome, unopened)
        never_opened = isinstance(copied, _OutputUnopened) or (
            isinstance(copied, ChannelBrokenError) and copied.code == close_codes.WRITER_RELEASED
        )
        if copied is not None:
            done.wait()  # the call's outcome (on another socket, maybe later) explains a broken output best
        if "error" in outcome:
            raise failed(outcome["error"])
        if never_opened:
            click.echo(f"warning: {function_id} returned without opening its output", err=True)
        elif copied is not None:
            raise click.ClickException(f"the output stream broke: {copied}")
        done.wait()  # the output ended; the call's own outcome decides the exit code
        if "error" in outcome:
            raise failed(outcome["error"])
        if feeder.unread(outcome["at"]):
            click.echo(f"warning: {function_id} returned after reading {feeder.sent} bytes of stdin", err=True)
    if feeder.error is not None and not isinstance(feeder.error, (ChannelBrokenError, _Stopped)):
        raise click.ClickException(f"reading stdin failed: {feeder.error}")


class _OutputUnopened(Exception):
    """The function returned without ever opening its output: nothing will come, nor the end."""


def _copy_until_failure(
    copy: Coroutine[Any, Any, None],
    call_done: threading.Event,
    outcome: dict[str, Any],
    unopened: Callable[[], bool],
) -> BaseException | None:
    """Run the output copy to its end, unless the call fails first; returns how the copy failed, if it did.

    A function normally ends its output before it returns; when the output is still open ``_FEEDER_GRACE_S``
    after a successful return, ``unopened()`` tells whether the function ever opened it (else the copy
    would wait for the channel's TTL): then the copy stops and :class:`_OutputUnopened` is returned.
    """

    async def main() -> BaseException | None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def notify() -> None:  # a daemon thread: a call that never ends cannot hold the process at exit
            call_done.wait()
            with contextlib.suppress(RuntimeError):  # the copy ended first and its loop is closed: fine
                loop.call_soon_threadsafe(_resolve, finished)

        threading.Thread(target=notify, daemon=True, name="iii-call-watch").start()
        copying = asyncio.ensure_future(copy)
        await asyncio.wait({copying, finished}, return_when=asyncio.FIRST_COMPLETED)
        if not copying.done() and "error" in outcome:
            copying.cancel()  # the function failed: nobody will end its output
            return None
        if not copying.done():  # the function returned: its output should be ending
            await asyncio.wait({copying}, timeout=_FEEDER_GRACE_S)
            if not copying.done() and await asyncio.to_thread(unopened):
                copying.cancel()
                return _OutputUnopened()
        await asyncio.wait({copying})
        return copying.exception()

    try:
        return _run_interruptibly(main())
    finally:
        copy.close()  # never started when Ctrl-C came first: no "never awaited" warning (a no-op once it ran)


def _run_interruptibly(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with Ctrl-C held back while the event loop is being built: an interrupt that lands
    inside the loop's constructor leaves a half-built loop, whose finalizer then prints a traceback. A Ctrl-C
    pressed meanwhile is raised once the loop is whole (and ``main`` is closed, never started). The SIGINT
    handler is swapped rather than the signal masked: the SDK's threads would take a masked signal instead."""
    runner = asyncio.Runner()
    try:
        pressed: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
        try:
            runner.get_loop()  # builds the loop
        finally:
            signal.signal(signal.SIGINT, previous)
        if pressed:
            main.close()
            raise KeyboardInterrupt
        return runner.run(main)
    finally:
        runner.close()


def _writer_unopened(client: III, channel_id: str) -> bool:
    """Whether the engine lists the channel with its writer end never connected (False when it cannot tell)."""
    try:
        listing = client.trigger({"function_id": "engine::channels::list", "payload": {}})
    except InvocationError:
        return False
    return any(
        entry.get("channel_id") == channel_id and entry.get("writer") == "waiting"
        for entry in listing.get("channels", [])
    )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
