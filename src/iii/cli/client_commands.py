"""``iii call``, ``iii functions``, ``iii workers``, ``iii triggers``, ``iii observers``, ``iii queues``,
``iii channels``: use and inspect a running engine."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from iii.cli.connection import CLI_WORKER_NAME, connected, engine_options, failed, parse_data, print_json
from iii.errors import InvocationError


@click.command()
@click.argument("function_id")
@click.option("--data", "-d", help="the payload: JSON text, or @file.json")
@click.option("--timeout-ms", type=int, default=None, help="how long to wait for the result")
@engine_options
def call(function_id: str, data: str | None, timeout_ms: int | None, url: str | None, token: str | None) -> None:
    """Call FUNCTION_ID and print its result as JSON (exit code 1 and the error on failure)."""
    request: dict[str, Any] = {"function_id": function_id, "payload": parse_data(data)}
    if timeout_ms is not None:
        request["timeout_ms"] = timeout_ms
    print_json(_trigger(url, token, request))


def _trigger(url: str | None, token: str | None, request: dict[str, Any]) -> Any:
    """One call on a connection of its own; a failed call is the command's error."""
    with connected(url, token) as client:
        try:
            return client.trigger(request)
        except InvocationError as error:
            raise failed(error) from None


def _listing(url: str | None, token: str | None, function_id: str, payload: Any = None) -> Any:
    return _trigger(url, token, {"function_id": function_id, "payload": payload or {}})


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print(table: Table) -> None:
    # On a terminal the table fits its width; into a pipe or a file, rows are never folded.
    console = Console() if sys.stdout.isatty() else Console(width=10_000, no_color=True)
    console.print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the engine's answer as JSON")
@click.option("--all", "include_internal", is_flag=True, help="include the engine's own engine::* functions")
@engine_options
def functions(as_json: bool, include_internal: bool, url: str | None, token: str | None) -> None:
    """List the registered functions."""
    listing = _listing(url, token, "engine::functions::list", {"include_internal": include_internal})
    if as_json:
        print_json(listing)
        return
    table = _table("FUNCTION", "WORKER", "DESCRIPTION")
    for entry in sorted(listing["functions"], key=lambda e: e["function_id"]):
        table.add_row(entry["function_id"], entry.get("worker_name") or "", entry.get("description") or "")
    _print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the engine's answer as JSON")
@engine_options
def workers(as_json: bool, url: str | None, token: str | None) -> None:
    """List the connected workers (this command's own connection is left out)."""
    listing = _listing(url, token, "engine::workers::list")
    others = [w for w in listing["workers"] if w.get("name") != CLI_WORKER_NAME]
    if as_json:
        print_json({**listing, "workers": others})
        return
    table = _table("NAME", "ID", "FUNCTIONS", "CALLS", "ADDRESS", "CONNECTED")
    now_ms = time.time() * 1000
    for worker in sorted(others, key=lambda w: w.get("name") or ""):
        table.add_row(
            worker.get("name") or "",
            worker["id"],
            str(worker.get("function_count", 0)),
            str(worker.get("active_invocations", 0)),
            worker.get("ip_address") or "",
            _age((now_ms - worker.get("connected_at_ms", now_ms)) / 1000),
        )
    _print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the engine's answer as JSON")
@click.option("--all", "include_internal", is_flag=True, help="include bindings of the engine's own functions")
@engine_options
def triggers(as_json: bool, include_internal: bool, url: str | None, token: str | None) -> None:
    """List the triggers: every function bound to a trigger type, its status, and when a cron job runs next."""
    listing = _listing(url, token, "engine::registered-triggers::list", {"include_internal": include_internal})
    if as_json:
        print_json(listing)
        return
    table = _table("TYPE", "FUNCTION", "WORKER", "STATUS", "CONFIG", "NEXT RUN")
    rows = sorted(listing["registered_triggers"], key=lambda r: (r["trigger_type"], r["function_id"], r["id"]))
    for row in rows:
        details = row.get("details") or {}
        status = row.get("status", "")
        if row.get("error"):
            status = f"{status}: {row['error']}"
        table.add_row(
            row["trigger_type"],
            row["function_id"],
            row.get("worker_name") or "",
            status,
            row.get("config_summary") or "",
            str(details.get("next_run") or ""),
        )
    _print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the queues and their counts as JSON")
@engine_options
def queues(as_json: bool, url: str | None, token: str | None) -> None:
    """List the queue module's queues and durable topics: messages waiting, in flight and dead, and consumers."""
    with connected(url, token) as client:
        try:
            topics = client.trigger({"function_id": "engine::queue::list_topics", "payload": {}})
            found = []
            for topic in topics:
                request = {"function_id": "engine::queue::topic_stats", "payload": {"topic": topic["name"]}}
                stats = client.trigger(request)
                kind = "queue" if topic["broker_type"] == "function_queue" else "topic"
                found.append({"name": topic["name"], "kind": kind, **stats})
        except InvocationError as error:
            raise failed(error) from None
    if as_json:
        print_json(found)
        return
    table = _table("QUEUE", "KIND", "WAITING", "IN FLIGHT", "DEAD", "CONSUMERS")
    for row in sorted(found, key=lambda r: (r["kind"], r["name"])):
        counts = (row.get("depth", 0), row.get("in_flight", 0), row.get("dlq_depth", 0), row.get("consumer_count", 0))
        table.add_row(row["name"], row["kind"], *(str(count) for count in counts))
    _print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the engine's answer as JSON")
@engine_options
def observers(as_json: bool, url: str | None, token: str | None) -> None:
    """List the observers (observe.v1): what each observes, its target, its state, and what it fired and dropped."""
    listing = _listing(url, token, "engine::observers::list")
    if as_json:
        print_json(listing)
        return
    table = _table("SOURCE", "TARGET", "WORKER", "STATE", "FILTERS", "FIRES", "RUNNING", "DROPPED")
    rows = sorted(listing["observers"], key=lambda o: (o["source"]["function_id"], o["target"]["function_id"], o["id"]))
    for row in rows:
        state = row["state"]
        if row.get("reason"):
            state = f"{state}: {row['reason'].get('code', '')}"
        dropped = ", ".join(f"{code} {count}" for code, count in sorted(row.get("dropped", {}).items()))
        table.add_row(
            row["source"]["function_id"],
            row["target"]["function_id"],
            row.get("worker_name") or "",
            state,
            json.dumps(row["filters"], separators=(",", ":")) if row["filters"] else "",
            str(row["fires"]),
            f"{row['in_flight']} (+{row['waiting']} waiting)" if row["waiting"] else str(row["in_flight"]),
            dropped,
        )
    _print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the engine's answer as JSON")
@engine_options
def channels(as_json: bool, url: str | None, token: str | None) -> None:
    """List the live channels (never their keys)."""
    listing = _listing(url, token, "engine::channels::list")
    if as_json:
        print_json(listing)
        return
    table = _table("CHANNEL", "WRITER", "READER", "BYTES", "FRAMES", "QUEUED", "AGE")
    for channel in listing["channels"]:
        table.add_row(
            channel["channel_id"],
            channel["writer"],
            channel["reader"],
            _size(channel["bytes"]),
            str(channel["frames"]),
            _size(channel["queued_bytes"]),
            _age(channel["age_s"]),
        )
    _print(table)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
