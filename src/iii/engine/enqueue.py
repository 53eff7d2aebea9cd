"""The ``enqueue`` action of ``invokefunction``: the core hands the call to the queue provider, nothing more.

``{"action": {"type": "enqueue", "queue": Q}}`` asks for the call to be made later, through queue ``Q``. The
core knows no queue: it calls :data:`ENQUEUE_PROVIDER` (``engine::queue::enqueue``, served by the queue module,
or by any worker that registers it) with ``{queue, function_id, data, messageReceiptId, traceparent,
baggage}``, a fresh receipt id, and answers the caller ``{"messageReceiptId": ...}`` once the provider has
accepted the message, or ``enqueue_error`` with the provider's message (the reference engine's shapes).

When the engine records spans (:mod:`iii.engine.spans`), an enqueue gets the reference's ``enqueue <fn> → <queue>``
span, a child of the enqueuer's ``traceparent``, from the action until the provider answers; the message carries
a ``traceparent`` naming it, so the delivery's spans, however much later, are its children.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

import msgspec

from iii.engine.calling import error_raw
from iii.protocol import errors
from iii.protocol.codec import decode_value, encode_value
from iii.protocol.messages import JSON_NULL, is_null

if TYPE_CHECKING:
    from iii.engine.peers import Caller
    from iii.engine.spans import EngineSpans, OpenSpan

ENQUEUE_PROVIDER: Final = "engine::queue::enqueue"


def enqueue_request(
    queue: str, function_id: str, data: msgspec.Raw, traceparent: str | None, baggage: str | None
) -> tuple[str, msgspec.Raw]:
    """A new receipt id and the provider's payload for one enqueue (``data`` passed on as it came)."""
    receipt = str(uuid.uuid4())
    payload = {
        "queue": queue,
        "function_id": function_id,
        "data": data,
        "messageReceiptId": receipt,
        "traceparent": traceparent,
        "baggage": baggage,
    }
    return receipt, msgspec.Raw(encode_value(payload))


def enqueue_span(spans: EngineSpans, queue: str, function_id: str, traceparent: str | None) -> OpenSpan:
    """The span of one enqueue (the reference's name and attributes)."""
    attributes = [
        ("function_id", function_id),
        ("queue", queue),
        ("messaging.system", "iii-queue"),
        ("messaging.destination.name", queue),
        ("messaging.operation.type", "publish"),
    ]
    return spans.start(f"enqueue {function_id} \u2192 {queue}", traceparent, attributes)


class EnqueueAnswer:
    """The provider's caller for one enqueue: turns its outcome into the enqueuer's answer (none for a caller
    that wants none), and ends the enqueue's span, if it has one."""

    write_paused = False
    """The answer is one small message: the provider is never held back for it."""

    def __init__(
        self,
        caller: Caller | None,
        invocation_id: str,
        function_id: str,
        receipt: str,
        span: OpenSpan | None = None,
    ) -> None:
        self._caller = caller
        self._invocation_id = invocation_id
        self._function_id = function_id
        self._receipt = receipt
        self._span = span

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        if self._span is not None:
            self._span.end(None if is_null(error) else _error_fields(error))
        if self._caller is None:
            return
        if is_null(error):
            answer = msgspec.Raw(encode_value({"messageReceiptId": self._receipt}))
            self._caller.deliver_result(self._invocation_id, self._function_id, answer, JSON_NULL)
            return
        code, message = _error_fields(error)
        if code == errors.FUNCTION_NOT_FOUND:
            message = (
                f"no queue provider: an enqueue is handed to {ENQUEUE_PROVIDER}, which the queue module serves "
                f"(run the engine with 'queue' in --modules) or a worker may register ({message})"
            )
        self._caller.deliver_result(
            self._invocation_id, self._function_id, JSON_NULL, error_raw(errors.ENQUEUE_ERROR, message)
        )


def _error_fields(error: msgspec.Raw) -> tuple[str, str]:
    try:
        value = decode_value(error)
    except msgspec.DecodeError:
        return errors.INVOCATION_FAILED, "the queue provider answered an undecodable error"
    if isinstance(value, dict):
        return str(value.get("code") or errors.INVOCATION_FAILED), str(value.get("message") or "")
    return errors.INVOCATION_FAILED, str(value)
