"""The live console: ``GET /console`` (one static page, no build step, nothing fetched from elsewhere) and
``GET /console/state`` (the JSON it polls once a second: workers, functions, channels, observers and totals).

Views that read a module's backend ask over ``/console/query`` instead (:mod:`iii.engine.console_socket`).

With a token configured both need it, as an ``Authorization: Bearer`` header or, for a browser opening the
page, ``?token=`` (the page then sends it as a header).
"""

from __future__ import annotations

import functools
import importlib.resources
import time
from typing import TYPE_CHECKING, Any

from iii.engine.metrics import OK

if TYPE_CHECKING:
    from iii.engine.builtins import Builtins
    from iii.engine.core import Core

PAGE_PATHS = frozenset(("/console", "/console/"))
STATE_PATH = "/console/state"


@functools.cache
def page() -> bytes:
    """The console's HTML (packaged with the engine)."""
    return importlib.resources.files("iii.engine").joinpath("console.html").read_bytes()


def state(
    core: Core, builtins: Builtins, modules: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the page shows, read from the engine's tables now (and the modules' summaries, the cluster's
    when the engine is in one). Never keys or tokens."""
    metrics = core.metrics
    relayed_bytes, _ = core.channels.relayed()
    calls_ok = metrics.invocations.get(OK, 0)
    return {
        "time_ms": int(time.time() * 1000),
        "workers": builtins.workers_list(None, {})["workers"],
        "functions": builtins.functions_list(None, {})["functions"],
        "channels": core.channels.describe(),
        "observers": [observer.describe() for observer in core.observing.table],
        "modules": modules or {},
        "cluster": cluster,
        "totals": {
            "calls_ok": calls_ok,
            "calls_failed": sum(metrics.invocations.values()) - calls_ok,
            "calls_pending": len(core.router),
            "bytes_relayed": relayed_bytes,
        },
    }
