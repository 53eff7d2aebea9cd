"""Typed values for every message of the iii worker protocol.

One frozen-by-convention :class:`msgspec.Struct` per wire ``type``. The class name is the wire name in
CamelCase; the ``type`` tag is the lowercase name the official SDKs use. Unknown fields are ignored when
decoding (msgspec's default), which is the protocol's version-skew rule. Optional fields default to
``None`` and are omitted when encoding, as the reference engine does.

Payloads that the engine only relays (``data``, ``result``, ``error``, ``metadata``) are kept as
:class:`msgspec.Raw`: the engine forwards their bytes without building Python objects for them. An
absent payload field is :data:`JSON_NULL`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

JSON_NULL: Final = msgspec.Raw(b"null")
"""The raw JSON ``null`` that stands for an absent payload field.

Decoding a message without the field gives this very object, and encoding leaves a field out when it
*is* this object (msgspec compares defaults by identity); an explicit ``null`` decodes to another
``Raw(b"null")`` and is written back as ``null``. Either way the value means null.
"""


class Message(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every protocol message; subclasses set their wire ``type`` with ``tag=``."""


# --- control -------------------------------------------------------------------------------------------


class WorkerRegistered(Message, tag="workerregistered"):
    """E→W, always the first frame on a worker socket.

    ``features`` names what the engine offers beyond the base protocol (the official 0.25 SDK reads it for
    ``observe.v1``); ``max_message_bytes`` is the largest message it acts on. Both are ours to send and
    are ignored by SDKs that do not know them.
    """

    worker_id: str
    reattach_token: str | None = None
    features: list[str] | None = None
    max_message_bytes: int | None = None


class Reattach(Message, tag="reattach"):
    """W→E, first message of a reconnect: retire the worker's previous connection."""

    previous_worker_id: str
    reattach_token: str | None = None


class Ping(Message, tag="ping"):
    """W→E JSON-level liveness check; answered with :class:`Pong`."""


class Pong(Message, tag="pong"):
    """E→W answer to :class:`Ping`."""


class ErrorNotice(Message, tag="error"):
    """E→W notice that a message was refused and why (official SDKs ignore it; it is for humans and tests).
    ``function_id`` (ours) names the function whose registration was refused, when that is what it says."""

    error: ErrorBody
    function_id: str | None = None


# --- functions -----------------------------------------------------------------------------------------


class RegisterFunction(Message, tag="registerfunction"):
    """W→E: export a function under ``id``."""

    id: str
    description: str | None = None
    request_format: msgspec.Raw = JSON_NULL
    response_format: msgspec.Raw = JSON_NULL
    metadata: msgspec.Raw = JSON_NULL
    invocation: msgspec.Raw = JSON_NULL
    observe: msgspec.Raw = JSON_NULL
    """observe.v1: how the function is observed (``delivery``, ``args_format``, ``allow``, ...), or null."""


class UnregisterFunction(Message, tag="unregisterfunction"):
    """W→E: withdraw an export (only the owning connection's request has an effect)."""

    id: str


class RegistrationRejected(Message, tag="registrationrejected"):
    """E→W: a registration was refused; ``FUNCTION_NAMESPACE_CONFLICT`` is non-fatal for the SDKs."""

    code: str
    namespace: str
    owner_worker_id: str
    function_id: str | None = None
    worker_name: str | None = None


FUNCTION_STATUS_FEATURE: Final = "iii-py.function-status.v1"
"""Announced in ``workerregistered.features`` by an engine that answers every registration: with
:class:`FunctionActivated`, with ``registrationrejected`` (the worker then stands by), or with an
:class:`ErrorNotice` naming the function (refused for good: an HTTP-invoked function whose URL is not allowed)."""


class FunctionActivated(Message, tag="functionactivated"):
    """E→W (ours): this worker now serves ``function_id``: its registration was accepted, or it stood by
    (after a ``registrationrejected``) and took over from the owner that left. SDKs that do not know the
    type ignore it, as the protocol requires."""

    function_id: str


class TriggerAction(msgspec.Struct, omit_defaults=True):
    """``{"type": "void"}`` or ``{"type": "enqueue", "queue": ...}``; other types are kept as given."""

    type: str
    queue: str | None = None


class InvokeFunction(Message, tag="invokefunction"):
    """W→E: a call. ``invocation_id`` absent means nobody waits for the answer.

    ``timeout_ms`` is an optional extension of ours: the engine then fails the call with ``TIMEOUT`` after
    the smaller of it and its own limit. Official SDKs do not send it.
    """

    function_id: str
    invocation_id: str | None = None
    data: msgspec.Raw = JSON_NULL
    action: TriggerAction | None = None
    metadata: msgspec.Raw = JSON_NULL
    traceparent: str | None = None
    baggage: str | None = None
    namespace: str | None = None
    timeout_ms: int | None = None
    caller: msgspec.Raw = JSON_NULL
    """observe.v1: the handler the call is made from (``function_id``, ``invocation_id``, ``parent``)."""
    observe_depth: int | None = None
    """observe.v1: how many observer hops led to this call."""
    activation: msgspec.Raw = JSON_NULL
    """observe.v1: ``{observer_id}`` on an owner's delivery to an observer's target (``obs.call``)."""


class Delivery(Message, tag="invokefunction"):
    """E→W: a call delivered to the worker that hosts ``function_id``; ``data`` is always present."""

    invocation_id: str
    function_id: str
    data: msgspec.Raw
    metadata: msgspec.Raw = JSON_NULL
    traceparent: str | None = None
    baggage: str | None = None
    caller: msgspec.Raw = JSON_NULL
    """observe.v1: who made the call (the engine stamps the calling worker's id and name)."""
    observe_depth: int | None = None
    activation: msgspec.Raw = JSON_NULL
    """observe.v1: ``{observer_id, activation_id}`` when the call is an observer's activation."""


class InvocationResult(Message, tag="invocationresult"):
    """W→E (from the host) and E→W (to the caller): the outcome of one call.

    A truthy ``error`` means failure; otherwise ``result`` (absent = null) is the value.
    """

    invocation_id: str
    function_id: str = ""
    result: msgspec.Raw = JSON_NULL
    error: msgspec.Raw = JSON_NULL
    traceparent: str | None = None
    baggage: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The error shape of ``invocationresult.error``: a code of :mod:`iii.protocol.errors` and a message."""

    code: str
    message: str
    stacktrace: str | None = None


# --- triggers (relayed; the trigger system lives in the engine's trigger module) ---------------------------


class RegisterTriggerType(Message, tag="registertriggertype"):
    """W→E: become the provider of trigger type ``id``."""

    id: str
    description: str = ""
    trigger_request_format: msgspec.Raw = JSON_NULL
    call_request_format: msgspec.Raw = JSON_NULL
    namespace: str | None = None


class UnregisterTriggerType(Message, tag="unregistertriggertype"):
    """W→E: stop providing trigger type ``id``."""

    id: str
    namespace: str | None = None


class RegisterTrigger(Message, tag="registertrigger"):
    """W→E: bind ``function_id`` to a trigger of ``trigger_type``; E→provider: activate that binding."""

    id: str
    trigger_type: str
    function_id: str
    config: msgspec.Raw = JSON_NULL
    metadata: msgspec.Raw = JSON_NULL
    namespace: str | None = None
    trigger_namespace: str | None = None


class UnregisterTrigger(Message, tag="unregistertrigger"):
    """W→E: remove a binding; E→provider: deactivate it."""

    id: str
    trigger_type: str | None = None


class TriggerRegistrationResult(Message, tag="triggerregistrationresult"):
    """Provider→E ack or refusal of a binding; E→binder when the provider refused."""

    id: str
    trigger_type: str = ""
    function_id: str = ""
    error: msgspec.Raw = JSON_NULL


# --- observe.v1 ----------------------------------------------------------------------------------------
# Sent only to and from connections that declared ``observe.v1`` (see :mod:`iii.engine.observers`).


class Observe(Message, tag="observe"):
    """Create, or replay after a reconnect (same id), an observer owned by the sending connection."""

    id: str
    source: dict[str, Any]
    target: dict[str, Any]
    metadata: msgspec.Raw = JSON_NULL
    max_fires: int | None = None
    expires_in_ms: int | None = None
    max_in_flight: int | None = None


class Unobserve(Message, tag="unobserve"):
    id: str


class ObserverAck(Message, tag="observerack"):
    """The owner of an observed function accepts (or, with ``error``, refuses) an observer pushed to it."""

    function_id: str
    id: str
    revision: int = 0
    namespace: str | None = None
    error: dict[str, Any] | None = None


class InvocationsObserved(Message, tag="invocationsobserved"):
    """An owner's report of calls it ran in process (and of ``obs.emit`` events), with the observers matched."""

    items: list[dict[str, Any]] = []


class LocalInvocationStats(Message, tag="localinvocationstats"):
    """An owner's periodic counts of the calls it ran in process, and of reports it had to drop (accepted, not kept:
    the engine does not count in-process calls yet)."""

    window_ms: int = 0
    functions: list[dict[str, Any]] = []
    dropped_reports: list[dict[str, Any]] = []


class ObserveResult(Message, tag="observeresult"):
    """The answer to ``observe``: the observer's state, and why when it is ``error``."""

    id: str
    state: str
    error: ErrorBody | None = None


class ObserverStateChanged(Message, tag="observerstatechanged"):
    id: str
    state: str
    reason: ErrorBody | None = None
    fires: int = 0


class FunctionRegistered(Message, tag="functionregistered"):
    """The acknowledgement of a ``registerfunction``, with the function's whole current observer set."""

    id: str
    namespace: str
    revision: int
    local_dispatch: bool
    observers: list[dict[str, Any]]


class ObserverAdded(Message, tag="observeradded"):
    function_id: str
    namespace: str
    revision: int
    observer: dict[str, Any]


class ObserverRemoved(Message, tag="observerremoved"):
    function_id: str
    namespace: str
    revision: int
    id: str


INBOUND_TYPES: Final[tuple[type[Message], ...]] = (
    Reattach,
    Ping,
    RegisterFunction,
    UnregisterFunction,
    InvokeFunction,
    InvocationResult,
    RegisterTriggerType,
    UnregisterTriggerType,
    RegisterTrigger,
    UnregisterTrigger,
    TriggerRegistrationResult,
    Observe,
    Unobserve,
    ObserverAck,
    InvocationsObserved,
    LocalInvocationStats,
)
"""Every message type a worker may send to the engine."""

InboundMessage = (
    Reattach
    | Ping
    | RegisterFunction
    | UnregisterFunction
    | InvokeFunction
    | InvocationResult
    | RegisterTriggerType
    | UnregisterTriggerType
    | RegisterTrigger
    | UnregisterTrigger
    | TriggerRegistrationResult
    | Observe
    | Unobserve
    | ObserverAck
    | InvocationsObserved
    | LocalInvocationStats
)


FromEngineMessage = (
    WorkerRegistered
    | InvokeFunction
    | InvocationResult
    | RegistrationRejected
    | FunctionActivated
    | Pong
    | ErrorNotice
    | RegisterTrigger
    | UnregisterTrigger
    | TriggerRegistrationResult
    | ObserveResult
    | ObserverStateChanged
    | FunctionRegistered
    | ObserverAdded
    | ObserverRemoved
)
"""Every message type an engine may send to a worker (a delivery decodes as :class:`InvokeFunction`)."""


def is_null(raw: msgspec.Raw) -> bool:
    """True when a raw payload field is absent or JSON ``null``."""
    return raw is JSON_NULL or bytes(raw).strip() == b"null"
