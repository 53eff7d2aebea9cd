"""A worker process that serves ``jobs::hang``: it prints the payload it got, then never answers (a test kills it).

Run: ``python -m tests.modules.queue.blocking_worker ws://127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from iii import InitOptions, register_worker


def main() -> None:
    client = register_worker(sys.argv[1], InitOptions(worker_name="hanging"))
    never = threading.Event()

    def hang(data: Any) -> None:
        print(json.dumps(data), flush=True)
        never.wait()

    client.register_function("jobs::hang", hang)
    print("registered", flush=True)
    never.wait()


if __name__ == "__main__":
    main()
