"""A consumer process of a FIFO queue: serves ``jobs::order`` next to one engine, records every delivery it gets, and
fails the first delivery of each message whose ``fail_once`` is set (the retry is then the second).

Run: ``python -m tests.modules.queue.fifo_consumer ws://127.0.0.1:PORT RECORD_FILE MARKER_DIR NAME``. Each delivery
is a JSON line ``{"t": monotonic start, "ok": bool, "data": payload, "by": NAME}`` (the monotonic clock is the
machine's, so lines of several consumers compare); ``MARKER_DIR`` holds one file per failed first attempt, shared
by the consumers, so a message fails once whichever consumer gets it first.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from iii import InitOptions, register_worker


def main() -> None:
    url, record, markers, name = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    lock = threading.Lock()

    def write(line: dict[str, Any]) -> None:
        with lock, record.open("a") as out:
            out.write(json.dumps(line) + "\n")

    def order(data: dict[str, Any]) -> None:
        started = time.monotonic()
        first_attempt = False
        if data.get("fail_once"):
            try:
                os.close(os.open(markers / f"{data['customer']}-{data['n']}", os.O_CREAT | os.O_EXCL))
                first_attempt = True
            except FileExistsError:
                pass
        time.sleep(0.002)  # a little work, so that deliveries of several consumers overlap in time
        write({"t": started, "ok": not first_attempt, "data": data, "by": name})
        if first_attempt:
            raise RuntimeError(f"first delivery of {data['customer']}-{data['n']} fails")

    with register_worker(url, InitOptions(worker_name=name)) as client:
        client.register_function("jobs::order", order)
        print("registered", flush=True)
        sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
