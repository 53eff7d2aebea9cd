"""Live data in a web page: a worker keeps a stream group up to date, and a page shows it as it changes.

The worker

* serves a page at ``GET /`` on the engine's HTTP port (an ``http`` trigger), which loads the browser
  client ``iii-stream.js`` from the engine's stream port and subscribes to the group ``live_list/demo``;
* keeps the group's items up to date with ``stream::set``: a ``clock`` item every second, and a note added
  every 3 seconds, the oldest removed (``stream::delete``) once there are more than three;
* sends an event to the group with ``stream::send`` every 5 seconds, which the page shows as the last event.

Run it next to an engine (``iii engine``) and open http://127.0.0.1:3111/ ::

    python examples/live_list/worker.py [ENGINE_URL] [--stream-url ws://127.0.0.1:3112]

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``; the stream URL (where the page's
browser finds the engine's stream port) to ``$III_STREAM_URL``, else ``ws://127.0.0.1:3112``. A token in the
page's address (``/?token=...``) is passed on to the stream port, for an engine whose ``[stream]
auth_function`` checks it. The worker prints one line ``READY {...}`` once its page is served, and runs until
Ctrl-C / SIGTERM. Nothing beyond the standard library and ``iii``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iii import III, IIIError, InitOptions, http_response, register_worker

STREAM = "live_list"
GROUP = "demo"
DEFAULT_STREAM_URL = "ws://127.0.0.1:3112"
NOTES_KEPT = 3
PAGE = Path(__file__).with_name("page.html")


def render_page(stream_url: str) -> str:
    """The page, with where to find the stream and which group to show filled in."""
    config = json.dumps({"streamUrl": stream_url.rstrip("/"), "streamName": STREAM, "groupId": GROUP})
    # Inside <script>, "</" would end the element early: JSON allows "<\/" in its place.
    return PAGE.read_text(encoding="utf-8").replace("{{CONFIG}}", config.replace("</", "<\\/"))


class LiveList:
    """The group's items and events, advanced by one :meth:`tick` a second."""

    def __init__(self, client: III) -> None:
        self.client = client
        self.ticks = 0
        self.notes: list[str] = []

    def call(self, function_id: str, **payload: Any) -> Any:
        return self.client.trigger(
            {"function_id": function_id, "payload": {"stream_name": STREAM, "group_id": GROUP, **payload}}
        )

    def set(self, item_id: str, label: str, value: str) -> None:
        # Items carry their own id: a page keys the items of a group's first sync by it.
        self.call("stream::set", item_id=item_id, data={"id": item_id, "label": label, "value": value})

    def clear(self) -> None:
        """Start from an empty group (a previous run's notes would otherwise stay)."""
        for item in self.call("stream::list"):
            if isinstance(item, dict) and "id" in item:
                self.call("stream::delete", item_id=str(item["id"]))

    def tick(self) -> None:
        now = time.strftime("%H:%M:%S")
        self.set("clock", "Clock", now)
        if self.ticks % 3 == 0:
            note = f"note-{self.ticks // 3 + 1:04d}"
            self.notes.append(note)
            self.set(note, f"Note {self.ticks // 3 + 1}", f"added at {now}")
            while len(self.notes) > NOTES_KEPT:
                self.call("stream::delete", item_id=self.notes.pop(0))
        if self.ticks % 5 == 0:
            self.call("stream::send", type="heartbeat", data={"tick": self.ticks, "at": now})
        self.ticks += 1


def serve(client: III, stream_url: str) -> list[dict[str, Any]]:
    """Serve the page at ``GET /``; return the route once the engine serves it."""
    html = render_page(stream_url)
    client.register_function(
        "live_list::page", lambda _request: http_response(html, headers={"Content-Type": "text/html; charset=utf-8"})
    )
    client.register_trigger(
        {"type": "http", "function_id": "live_list::page", "config": {"api_path": "/", "http_method": "GET"}}
    )
    payload = {"function_id": "live_list::page"}
    listing = client.trigger({"function_id": "engine::registered-triggers::list", "payload": payload})  # after it
    return [t for t in listing["registered_triggers"] if t["status"] == "active"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A live list in a web page, kept up to date through iii streams.")
    parser.add_argument("url", nargs="?", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument(
        "--stream-url",
        default=os.environ.get("III_STREAM_URL", DEFAULT_STREAM_URL),
        help=f"the stream port as browsers reach it (default: $III_STREAM_URL, else {DEFAULT_STREAM_URL})",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with register_worker(args.url, InitOptions(worker_name="live-list")) as client:
        routes = serve(client, args.stream_url)
        live_list = LiveList(client)
        live_list.clear()
        live_list.tick()
        print("READY " + json.dumps({"routes": routes, "stream_url": args.stream_url}), flush=True)
        while not stop.wait(1.0):  # the demo's pace: one tick a second
            try:
                live_list.tick()
            except IIIError as error:  # the engine restarting, say: go on with the next tick
                print(f"tick failed: {error}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
