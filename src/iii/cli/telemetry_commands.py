"""``iii logs`` and ``iii trace``: the workers' logs and traces the engine's observability module keeps.

Both ask the module's functions (``engine::logs::list``, ``engine::traces::tree``) on a connection of their own.
The module has no push of new records yet, so ``iii logs -f`` asks again every :data:`POLL_S` for the records
it has not printed (see :class:`_Tail`).
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

import click
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from iii.cli.connection import connected, engine_options, failed
from iii.errors import InvocationError
from iii.sdk.client import III

POLL_S: Final = 0.25
"""How often ``iii logs -f`` asks for new records."""
NS_PER_MS: Final = 1_000_000
LOOKBACK_S: Final = 5.0
"""How late a record may reach the engine (after a newer one was printed) and still be shown by ``-f``."""
LOOKBACK_NS: Final = int(LOOKBACK_S * 1e9)
MAX_PAGE: Final = 10_000
"""The most records ``engine::logs::list`` answers at once (its limit)."""
SEVERITY_MIN: Final = {"debug": 5, "info": 9, "warn": 13, "error": 17}
"""``--level``: the OpenTelemetry severity number each level starts at."""
_LEVELS: Final = ((21, "FATAL", "bold red"), (17, "ERROR", "red"), (13, "WARN", "yellow"), (9, "INFO", "green"))
_TRACE_ID_CHARS: Final = 8


def _console() -> Console:
    # Into a pipe or a file: no colour, and a line is never folded.
    if sys.stdout.isatty():
        return Console(highlight=False, soft_wrap=True)
    return Console(highlight=False, soft_wrap=True, no_color=True, width=10_000)


def _ask(client: III, function_id: str, payload: dict[str, Any]) -> Any:
    try:
        return client.trigger({"function_id": function_id, "payload": payload})
    except InvocationError as error:
        raise failed(error) from None


def _level(severity_number: int) -> tuple[str, str]:
    """A record's level name and colour, from its severity number (OpenTelemetry's ranges)."""
    for floor, name, style in _LEVELS:
        if severity_number >= floor:
            return name, style
    return ("DEBUG", "blue") if severity_number >= 5 else ("TRACE", "dim")


def log_line(record: dict[str, Any]) -> Text:
    """One record on one line: local time, level, service, message, the first characters of its trace id.
    Line breaks in the message are escaped so that a worker's text cannot start a line of its own."""
    stamp = datetime.datetime.fromtimestamp(record["timestamp_unix_nano"] / 1e9)
    name, style = _level(record["severity_number"])
    body = str(record.get("body", "")).replace("\r", "\\r").replace("\n", "\\n")
    line = Text()  # (a style given to Text() would be the whole line's)
    line.append(stamp.strftime("%H:%M:%S.%f")[:-3] + " ", style="dim")
    line.append(f"{name:<5}", style=style)
    line.append(f" {record.get('service_name') or 'unknown'} ", style="cyan")
    line.append(body)
    if record.get("trace_id"):
        line.append(f" trace={record['trace_id'][:_TRACE_ID_CHARS]}", style="dim")
    return line


def _identity(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["timestamp_unix_nano"], record.get("service_name"), record.get("span_id"), record.get("body"))


class _Tail:
    """The records not printed yet. A record is stamped by its worker when it is logged and reaches the engine
    later (the SDKs send every 100 ms), possibly after a newer record of another worker was printed; so each ask
    reaches :data:`LOOKBACK_S` back from the newest record printed, and the records of that window already printed
    (remembered by their stamp, service, span and message) are left out. A record that arrives later still is
    not shown by the tail; nor one older than the first page when ``--limit`` cut that page short.

    With ``--function`` a record is selected only once its span is stored, which the SDKs send when the call
    ends: to the tail it is a late record like any other, shown once then if it is within the window."""

    def __init__(self, query: dict[str, Any]) -> None:
        self.query = query
        self.newest_ns: int | None = None
        self.cutoff_ns = 0
        """Records older than this are not shown (set by :meth:`first`)."""
        self.printed: dict[tuple[Any, ...], int] = {}
        """The records printed within the window: identity -> stamp."""

    def new(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` (newest first, as the engine answers) oldest first, without those already printed."""
        fresh = []
        for record in sorted(records, key=lambda r: r["timestamp_unix_nano"]):
            identity = _identity(record)
            if identity not in self.printed and record["timestamp_unix_nano"] >= self.cutoff_ns:
                self.printed[identity] = record["timestamp_unix_nano"]
                fresh.append(record)
        if self.printed:
            self.newest_ns = max(self.newest_ns or 0, *self.printed.values())
            floor = self._floor_ms(self.newest_ns) * NS_PER_MS  # what the next ask reaches back to, exactly
            self.printed = {identity: stamp for identity, stamp in self.printed.items() if stamp >= floor}
        return fresh

    def first(self, records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        """The first page (the newest ``limit`` records) oldest first; when it is full, the older records the
        limit left out are not shown later either."""
        fresh = self.new(records)
        if len(records) >= limit and fresh:
            self.cutoff_ns = fresh[0]["timestamp_unix_nano"]
        return fresh

    def next_query(self) -> dict[str, Any]:
        """The next ask: from :data:`LOOKBACK_S` before the newest record printed (the filter is in Unix ms)."""
        start = {} if self.newest_ns is None else {"start_time": self._floor_ms(self.newest_ns)}
        return {**self.query, **start, "limit": MAX_PAGE}

    @staticmethod
    def _floor_ms(newest_ns: int) -> int:
        return max(0, newest_ns - LOOKBACK_NS) // NS_PER_MS


@click.command()
@click.option("--follow", "-f", is_flag=True, help="keep printing new records until Ctrl-C")
@click.option("--worker", help="only records of services whose name contains this (case-insensitive)")
@click.option(
    "--function",
    "function_id",
    help="only records logged in runs of this function (with -f: a call's lines show when it ends)",
)
@click.option("--level", type=click.Choice(list(SEVERITY_MIN)), help="only records at this level or above")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE),
    default=100,
    show_default=True,
    help="how many of the newest records to print",
)
@engine_options
def logs(
    follow: bool,
    worker: str | None,
    function_id: str | None,
    level: str | None,
    limit: int,
    url: str | None,
    token: str | None,
) -> None:
    """Print the workers' log records the engine keeps, oldest first, coloured by level (-f: and the new ones,
    until Ctrl-C).

    --function F: a record is F's once the span of the call it was logged in reaches the engine, when the call
    ends. So with -f a call's lines show when it ends, and not at all if they are more than 5 s older than the
    newest line printed by then (a long call while other lines were printed); without -f they show."""
    query: dict[str, Any] = {}
    if worker:
        query["service_name"] = worker
    if function_id:
        query["function_id"] = function_id
    if level:
        query["severity_min"] = SEVERITY_MIN[level]
    console = _console()
    tail = _Tail(query)
    try:
        with connected(url, token) as client:
            answer = _ask(client, "engine::logs::list", {**query, "limit": limit})
            for record in tail.first(answer["logs"], limit):
                console.print(log_line(record))
            while follow:
                time.sleep(POLL_S)
                answer = _ask(client, "engine::logs::list", tail.next_query())
                for record in tail.new(answer["logs"]):
                    console.print(log_line(record))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a tail ends: not a failure


def _walk(nodes: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node["children"])


def span_label(span: dict[str, Any], trace_start_ns: int) -> Text:
    """A span's name, service, duration, status and start offset from the trace's start."""
    end_ns = span["end_time_unix_nano"] or time.time_ns()
    duration_ms = max(0, end_ns - span["start_time_unix_nano"]) / NS_PER_MS
    offset_ms = (span["start_time_unix_nano"] - trace_start_ns) / NS_PER_MS
    status = span.get("status") or "unset"
    label = Text()
    label.append(span["name"] or "(unnamed)", style="bold")
    label.append(f"  {span.get('service_name') or 'unknown'}", style="cyan")
    label.append(f"  {duration_ms:.2f} ms")
    label.append(f"  {status}", style="red" if status == "error" else "green" if status == "ok" else "dim")
    label.append(f"  +{offset_ms:.2f} ms", style="dim")
    return label


@click.command()
@click.argument("trace_id")
@engine_options
def trace(trace_id: str, url: str | None, token: str | None) -> None:
    """Print the spans of trace TRACE_ID as a tree: name, service, duration, status, start offset."""
    with connected(url, token) as client:
        answer = _ask(client, "engine::traces::tree", {"trace_id": trace_id})
    roots = answer["roots"]
    if not roots:
        raise click.ClickException(f"no trace {trace_id} in the engine's store (unknown, or dropped)")
    start_ns = min(span["start_time_unix_nano"] for span in _walk(roots))
    tree = Tree(Text(f"trace {trace_id}", style="bold"))

    def add(branch: Tree, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            add(branch.add(span_label(node, start_ns)), node["children"])

    add(tree, roots)
    _console().print(tree)
