"""``iii send`` and ``iii pipe``: stream files and pipes through channels to functions.

``iii send FILE --to FUNCTION`` creates a channel, calls the function with the channel's reader ref under
``--field`` (``reader`` by default), writes the file into the channel while the function reads it (with
a progress bar on stderr), and prints the function's result.

``iii pipe FUNCTION`` creates two channels and calls the function with ``{"input": reader ref, "output":
writer ref}``: stdin streams into ``input`` while whatever the function writes to ``output`` streams to
stdout, so ``cat big.csv | iii pipe csv.stats > out.json`` works in a shell pipeline.

Both start the call first and write while the function reads, so any size streams in bounded memory. The
writing runs in a daemon thread: if the call fails early, the command reports it and exits without
waiting for writes nobody will read.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, Final

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
from iii.errors import ChannelBrokenError
from iii.sdk.channels import ChannelWriter
from iii.sdk.client import III

CHUNK_BYTES: Final = 1024 * 1024
_FEEDER_GRACE_S: Final = 2.0


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


class _Feeder(threading.Thread):
    """Copies a binary stream into a channel writer, reporting each chunk; remembers how it ended."""

    def __init__(self, source: IO[bytes], writer: ChannelWriter, on_chunk: Callable[[int], None]) -> None:
        super().__init__(daemon=True, name="iii-feeder")
        self.source = source
        self.writer = writer
        self.on_chunk = on_chunk
        self.error: BaseException | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            while chunk := self.source.read(CHUNK_BYTES):
                self.writer.write(chunk)
                self.sent += len(chunk)
                self.on_chunk(len(chunk))
            self.writer.close()
        except BaseException as exc:  # reported by the command
            self.error = exc


def _call_in_background(client: III, request: dict[str, Any]) -> tuple[threading.Event, dict[str, Any]]:
    """Start a call on a daemon thread; the event is set when it has an outcome (``result`` or ``error``)."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = client.trigger(request)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
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
        # A function that read to the end has seen the writer's close, so the feeder is finishing; one still
        # busy later means the function returned without reading everything.
        feeder.join(_FEEDER_GRACE_S)
        if feeder.is_alive():
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
    stdout = sys.stdout.buffer
    with connected(url, token) as client, _progress(progress) as bar:
        into, out_of = client.create_channel(), client.create_channel()
        task = bar.add_task(f"stdin → {function_id}", total=None)
        payload = {**extra, in_field: into.reader_ref.model_dump(), out_field: out_of.writer_ref.model_dump()}
        request = {"function_id": function_id, "payload": payload, "timeout_ms": timeout_ms}
        done, outcome = _call_in_background(client, request)
        feeder = _Feeder(sys.stdin.buffer, into.writer, lambda n: bar.advance(task, n))
        feeder.start()

        async def copy_out() -> None:
            async for chunk in out_of.reader:
                stdout.write(chunk)
            stdout.flush()

        copied = _copy_until_failure(copy_out(), done, outcome)
        if "error" in outcome:
            raise failed(outcome["error"])
        if copied is not None:
            raise click.ClickException(f"the output stream broke: {copied}")
        done.wait()  # the output ended; the call's own outcome decides the exit code
        if "error" in outcome:
            raise failed(outcome["error"])


def _copy_until_failure(copy: Coroutine[Any, Any, None], call_done: threading.Event, outcome: dict[str, Any]) -> Any:
    """Run the output copy to its end, unless the call fails first; returns how the copy failed, if it did."""

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
        await asyncio.wait({copying})
        return copying.exception()

    return asyncio.run(main())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
