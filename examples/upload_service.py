"""A file-upload service: HTTP uploads stream through a channel to disk, hashed on the way.

Routes (served by the engine's HTTP trigger port, 127.0.0.1:3111 by default):

* ``PUT /files/:name``: stores the request body as ``name`` and answers ``201 {"name", "bytes", "sha256"}``.
  The body is never held in memory: it streams from the HTTP client through the engine into this
  function, chunk by chunk, and a client that disconnects half way leaves no file behind.
* ``GET /files/:name``: streams the stored file back (``404`` if there is none).
* ``GET /files``: lists the stored files with their sizes.

Run it, then try it with curl::

    python examples/upload_service.py [ENGINE_URL] [--storage DIR]
    curl -T big.iso http://127.0.0.1:3111/files/big.iso
    curl -o copy.iso http://127.0.0.1:3111/files/big.iso
    curl http://127.0.0.1:3111/files

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``. The worker prints one line
``READY {"routes": [...]}`` once its routes are served.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iii import III, ChannelBrokenError, HttpRequest, http_response, register_worker

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNK = 1024 * 1024


class UploadService:
    """The three functions, storing files in ``storage``."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        storage.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path | None:
        return self.storage / name if SAFE_NAME.match(name) else None

    async def store(self, data: dict[str, Any]) -> dict[str, Any]:
        request = HttpRequest.of(data)
        name = request.path_params["name"]
        target = self._path(name)
        if target is None:
            return http_response({"error": f"bad file name {name!r}"}, status_code=400)
        digest = hashlib.sha256()
        size = 0
        partial = target.with_name(f".{name}.part")
        try:
            with partial.open("wb") as file:
                async for chunk in request.request_body:
                    file.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except ChannelBrokenError:
            partial.unlink(missing_ok=True)  # the client left half way: keep nothing
            raise
        partial.replace(target)
        return http_response({"name": name, "bytes": size, "sha256": digest.hexdigest()}, status_code=201)

    async def fetch(self, data: dict[str, Any]) -> Any:
        request = HttpRequest.of(data)
        target = self._path(request.path_params["name"])
        if target is None or not target.is_file():
            return http_response({"error": "no such file"}, status_code=404)
        response = request.response
        await response.headers(
            {"Content-Type": "application/octet-stream", "Content-Length": str(target.stat().st_size)}
        )
        with target.open("rb") as file:
            while chunk := file.read(CHUNK):
                await response.write(chunk)
        await response.close_async()
        return None

    def list_files(self, data: dict[str, Any]) -> dict[str, Any]:
        files = sorted(p for p in self.storage.iterdir() if p.is_file() and not p.name.startswith("."))
        return {"files": [{"name": p.name, "bytes": p.stat().st_size} for p in files]}


ROUTES = [
    ("files.store", "store", "PUT", "/files/:name"),
    ("files.fetch", "fetch", "GET", "/files/:name"),
    ("files.list", "list_files", "GET", "/files"),
]


def serve(client: III, service: UploadService) -> list[dict[str, Any]]:
    """Register the functions, bind them to their routes, and return the routes once the engine serves them."""
    for function_id, method_name, http_method, api_path in ROUTES:
        client.register_function(function_id, getattr(service, method_name))
        client.register_trigger(
            {"type": "http", "function_id": function_id, "config": {"api_path": api_path, "http_method": http_method}}
        )
    # The engine handles one worker's messages in order: this answer comes after the bindings above.
    listing = client.trigger({"function_id": "engine::registered-triggers::list", "payload": {"trigger_type": "http"}})
    ours = {function_id for function_id, *_ in ROUTES}
    return [t for t in listing["registered_triggers"] if t["function_id"] in ours and t["status"] == "active"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="File uploads streamed through iii channels.")
    parser.add_argument("url", nargs="?", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument("--storage", type=Path, help="where files are kept (default: a new temporary directory)")
    args = parser.parse_args(argv)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="iii-uploads-"))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with register_worker(args.url) as client:
        routes = serve(client, UploadService(storage))
        print("READY " + json.dumps({"routes": routes, "storage": str(storage)}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
