"""How a module whose functions read and write a state backend answers and counts each call (the state and
stream modules share it)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from iii.modules.api import CallInfo, FunctionError, Handler
from iii.modules.state.store import StoreError


def counted_handler(
    function_id: str,
    run: Callable[[Any], Awaitable[Any]],
    operations: Counter[tuple[str, str]],
    failure: tuple[str, str],
    log: logging.Logger,
) -> Handler:
    """``run`` as a handler: a bad request (``FunctionError``) is answered with its own code and counted
    ``refused``; a backend failure (:class:`StoreError`) is logged and answered with ``failure``'s code and
    message (the reference's, e.g. ``("STATE_SET_ERROR", "Failed to set value")``) and counted ``failed``; the
    rest are counted ``ok``. Counts go to ``operations[function_id, outcome]``."""
    code, message = failure

    async def handle(data: Any, call: CallInfo) -> Any:
        try:
            result = await run(data)
        except FunctionError:
            operations[function_id, "refused"] += 1
            raise
        except StoreError as error:
            operations[function_id, "failed"] += 1
            log.warning("%s failed: %s", function_id, error)
            raise FunctionError(code, f"{message}: {error}") from error
        operations[function_id, "ok"] += 1
        return result

    return handle
