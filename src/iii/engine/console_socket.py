"""``/console/query``: the console page's questions to the modules, over a WebSocket.

``GET /console/state`` is answered from the engine's tables at once (picows answers a plain HTTP request
inside its upgrade callback, which cannot wait); a view that must read a backend, or depends on what the page
shows (the Streams view: one group's items), asks here instead. Each text frame is one question
``{"id", "module", "query"}`` and gets one answer ``{"id", "result"}`` or ``{"id", "error"}``, in the order they
finish; the module answers through :class:`~iii.modules.api.ConsoleQueries`. A socket has at most
``MAX_IN_FLIGHT`` questions being answered (more are answered ``busy``), and its questions are dropped when it
closes. It needs the engine's token like the rest of the console.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

import msgspec
from picows import WSFrame, WSMsgType, WSTransport

from iii.engine.sockets import TrackedListener, Tracker, answer_close, close_transport
from iii.protocol.codec import encode_value

if TYPE_CHECKING:
    from iii.engine.modules import RunningModules

log = logging.getLogger("iii.engine")

QUERY_PATH: Final = "/console/query"
MAX_IN_FLIGHT: Final = 8
MAX_QUESTION_BYTES: Final = 64 * 1024
_UNSUPPORTED_DATA: Final = 1003
_TOO_BIG: Final = 1009


class ConsoleSocket(TrackedListener):
    """One console page's question socket (see the module docstring)."""

    def __init__(self, modules: RunningModules, tracker: Tracker) -> None:
        super().__init__(tracker)
        self._modules = modules
        self._answering: set[asyncio.Task[None]] = set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            answer_close(transport, frame)
            return
        if frame.msg_type is not WSMsgType.TEXT:
            close_transport(transport, _UNSUPPORTED_DATA, "console questions are JSON text frames")
            return
        payload = frame.get_payload_as_bytes()
        if not frame.fin or len(payload) > MAX_QUESTION_BYTES:
            close_transport(transport, _TOO_BIG, f"a console question is one frame of at most {MAX_QUESTION_BYTES}")
            return
        try:
            question = msgspec.json.decode(payload)
        except msgspec.DecodeError as error:
            self._send(transport, {"id": None, "error": f"not JSON: {error}"})
            return
        if not isinstance(question, dict) or not isinstance(question.get("module"), str):
            self._send(transport, {"id": None, "error": 'a question is {"id", "module", "query"}'})
            return
        if len(self._answering) >= MAX_IN_FLIGHT:
            self._send(transport, {"id": question.get("id"), "error": "busy: too many questions being answered"})
            return
        task = asyncio.get_running_loop().create_task(self._answer(transport, question))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for task in list(self._answering):
            task.cancel()
        super().on_ws_disconnected(transport)

    async def _answer(self, transport: WSTransport, question: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"id": question.get("id")}
        try:
            answer["result"] = await self._modules.console_query(question["module"], question.get("query"))
        except (LookupError, ValueError) as error:
            answer["error"] = str(error)
        except Exception as error:  # the backend failed: the page says so and asks again on its next poll
            log.warning("console question to module=%s failed: %s", question["module"], error)
            answer["error"] = f"failed: {error}"
        self._send(transport, answer)

    @staticmethod
    def _send(transport: WSTransport, answer: dict[str, Any]) -> None:
        if not transport.is_disconnected:
            transport.send(WSMsgType.TEXT, encode_value(answer))
