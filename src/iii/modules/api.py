"""The one interface a module is written against: what a worker can do.

A module serves functions, provides trigger types, invokes functions and hears that a worker left; nothing
else. The engine gives each module a :class:`ModuleHost` that does these things in-process (no hop, nothing
else to start); a module run as its own process gets a host that does them over the worker protocol with
the SDK. A module never imports the engine's server and never reaches into another module's tables.

Values crossing this interface are plain decoded JSON (``dict``, ``list``, ``str``, numbers, ``None``).

Contracts:

* A function handler is ``handler(data, call) -> result`` or ``async def``: ``data`` is the decoded payload,
  ``call`` says who called (:class:`CallInfo`). It raises :class:`FunctionError` (``iii.errors.FunctionError``,
  which the SDK's handlers may raise too) to answer an error with a code of its own; any other exception is
  answered as ``invocation_failed`` and logged. An ``async`` handler (or one returning an awaitable) is
  answered when the awaitable completes, so a handler may wait for I/O.
* A trigger provider is told of each binding of its type with :meth:`TriggerProvider.activate` (return None to
  accept, or the reason it is refused) and of its end with :meth:`TriggerProvider.deactivate`. Firing is the
  provider's business: it invokes the bound function through the host.
* :meth:`ModuleHost.invoke` returns an awaitable of the result; it raises :class:`InvocationError` with the
  callee's error code when the call fails (``deserialization_error`` for a result no Python value holds). Inside
  the engine the call starts at once (the awaitable is a future); a host may also start it only when it is
  awaited (a coroutine), so await it, or wrap it with ``asyncio.ensure_future``. Cancelling it stops the wait:
  inside the engine the pending call is dropped (on the loop's next iteration), so a late result goes nowhere;
  over the worker protocol the engine keeps it until the callee answers or the call times out.
* A function kind (:meth:`ModuleHost.provide_function_kind`) lets a module serve, inside the engine, functions
  that workers register with a field of ``registerfunction`` naming how they are served (``invocation``: an
  HTTP endpoint the engine calls). The module's :meth:`FunctionKind.accept` checks each such registration and
  returns the handler that serves it, or refuses it; the registering worker stays the function's owner (its
  ``unregisterfunction`` and its disconnect remove the function, the listings show it under its name).
* Channels (:meth:`ModuleHost.create_channel`) are the workers' data channels: the module keeps one end
  (:meth:`ModuleChannel.writer` or :meth:`ModuleChannel.reader`) and hands the other end's ref to a function
  in a call's payload. Both ends are backpressured: a writer is held back (:meth:`ModuleWriter.drain`) while
  the channel's buffer is full, and a reader that does not read holds its writer back. A reader sees a clean
  end only when the writer closed the stream (:meth:`ModuleWriter.close`); any other end raises
  :class:`~iii.errors.ChannelBrokenError` after the data that did arrive. Inside the engine the module's ends
  are the engine's own (no socket, no copy beyond the relay's); over the worker protocol they are the SDK's.
* A worker port (:meth:`ModuleHost.serve_workers`) is another port where workers connect with the ordinary
  worker protocol, each admitted by the module's :class:`WorkerGate` before the engine hears a word of it, and
  then held to the :class:`WorkerPolicy` the gate gave it: which functions it may see and call, what its
  registrations become (or whether they are refused), and which of its calls the module answers itself. Inside
  the engine only: over the worker protocol a worker cannot let others in.
* Telemetry (:meth:`ModuleHost.receive_telemetry`): the binary messages the SDKs send to the engine's ``/otel``
  socket (their logs, spans and metrics) go to the module's :class:`TelemetrySink`, one module at a time, and
  so do the engine's own spans (:meth:`TelemetrySink.keep`). With no sink, the engine reads the messages and
  drops them, and records no span. Inside the engine only: over the worker protocol a worker does not see
  other workers' telemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from iii.errors import ChannelBrokenError, FunctionError

__all__ = [
    "AdmissionError",
    "BindingInfo",
    "CallInfo",
    "ChannelBrokenError",
    "ConsoleQueries",
    "DescribingProvider",
    "FunctionDeclaration",
    "FunctionError",
    "FunctionKind",
    "FunctionRegistration",
    "Handler",
    "InterceptedCall",
    "InvocationError",
    "MetricSample",
    "Module",
    "ModuleChannel",
    "ModuleHost",
    "ModuleReader",
    "ModuleSpan",
    "ModuleWriter",
    "TelemetrySink",
    "TriggerDeclaration",
    "TriggerProvider",
    "TriggerTypeDeclaration",
    "WorkerGate",
    "WorkerPolicy",
    "WorkerPort",
    "WorkerRequest",
]


class InvocationError(Exception):
    """A call made through :meth:`ModuleHost.invoke` failed; ``code`` is the error code the caller got."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who made a call: the calling worker's id (None for a call from inside the engine), and the W3C trace
    context the call came with (None if it came with none)."""

    worker_id: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A function bound to a trigger type, as its provider sees it (``config`` decoded, ``{}`` if none)."""

    binding_id: str
    trigger_type: str
    function_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    metadata: Any = None
    worker_id: str | None = None
    """The worker that made the binding (None for one made inside the engine)."""


Handler = Callable[[Any, CallInfo], Any | Awaitable[Any]]
"""A function a module serves (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class FunctionRegistration:
    """A worker's registration of a function that a module's :class:`FunctionKind` is asked to serve."""

    function_id: str
    config: Any
    """The decoded value of the registration's field that names the kind (the ``invocation`` object)."""
    worker_id: str
    """The registering worker, which owns the function."""
    description: str | None = None
    metadata: Any = None


class FunctionKind(Protocol):
    """A kind of function a module serves on behalf of the workers that register them."""

    def accept(self, registration: FunctionRegistration) -> Handler:
        """The handler that serves ``registration``'s function from now on (it replaces the worker's earlier
        registration of the same id, if any), or :class:`FunctionError` to refuse it: its code and message go
        to the worker and the engine's log, so the message must hold no secret. Called on the engine's loop
        for each registration: it must not wait (a check that needs I/O, a DNS lookup, belongs to the calls).
        The kind is not told when the function goes: what it serves lives in the handler alone."""


class TriggerProvider(Protocol):
    """A trigger type a module provides."""

    def activate(self, binding: BindingInfo) -> str | None:
        """Start serving ``binding``; returns None when accepted, or why it is refused."""

    def deactivate(self, binding: BindingInfo) -> None:
        """Stop serving ``binding`` (only called for an accepted one)."""


@runtime_checkable
class DescribingProvider(TriggerProvider, Protocol):
    """A provider that also says something about each binding it serves (a cron job's next run, say): the
    listings (``engine::registered-triggers::list``, ``iii triggers``, the console) show it with the binding."""

    def describe(self, binding_id: str) -> Mapping[str, Any]:
        """JSON-ready fields about the accepted binding ``binding_id`` (empty if there is nothing to say)."""


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One value a module reports on ``/metrics``: ``name`` (without the ``iii_`` prefix), labels, value."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    help: str = ""
    kind: str = "gauge"
    """``gauge`` or ``counter``."""


class ModuleWriter(Protocol):
    """The writing end of a channel, kept by the module (:meth:`ModuleChannel.writer`)."""

    @property
    def cut(self) -> bool:
        """The stream can take no more: its reader went away, or the channel was cut off (what is written is
        then dropped). A host may learn it only at the next :meth:`write`."""

    def write(self, data: bytes) -> None:
        """Send ``data`` (in frames of at most 64 KiB) after what was written before. Never waits: await
        :meth:`drain` between writes to go at the reader's pace."""

    async def drain(self) -> None:
        """Wait while the writer is held back (the channel's buffer is full and its reader has not caught up);
        returns at once when there is room, or when the stream is over."""

    def close(self) -> None:
        """End the stream cleanly after what was written: the reader sees a complete stream."""

    def abort(self, reason: str) -> None:
        """End the stream as broken: the reader gets what was written, then a cut end (close code 4001 with
        ``reason``), never a clean one. Nothing happens if the stream is over already."""


class ModuleReader(Protocol):
    """The reading end of a channel, kept by the module (:meth:`ModuleChannel.reader`)."""

    def read(self) -> Awaitable[bytes | str | None]:
        """The next piece of the stream, in order: ``bytes`` (data), ``str`` (a text message), or None at its
        clean end (and after it); :class:`~iii.errors.ChannelBrokenError` at any other end, after what did
        arrive. Unread data holds the writer back. One read at a time; as with :meth:`ModuleHost.invoke`, the
        awaitable is a future inside the engine and may be a coroutine elsewhere."""

    def close(self, reason: str) -> None:
        """Stop reading: the writer learns that its reader went away (close code 4002); a :meth:`read`
        waiting or to come raises :class:`~iii.errors.ChannelBrokenError`. Idempotent."""


class ModuleChannel(Protocol):
    """A channel the module created: it keeps one end and hands the other end's ref to a function."""

    writer_ref: Mapping[str, str]
    """The writing end's ref (``{channel_id, access_key, direction: "write"}``), for a payload."""
    reader_ref: Mapping[str, str]
    """The reading end's ref, for a payload."""

    def writer(self) -> ModuleWriter:
        """Keep the writing end (its ref then opens nothing); call it once, before handing out ``reader_ref``."""

    def reader(self) -> ModuleReader:
        """Keep the reading end (its ref then opens nothing); call it once, before handing out ``writer_ref``."""

    def release(self, reason: str) -> None:
        """Finish the ends that no one has connected: their refs open nothing any more. A released reader fails
        the writer (4002); a released writer ends the reader's stream (4004). Call it when whoever was given a
        ref is done with it (its call returned), so that nothing waits for the channel's expiry."""


class AdmissionError(FunctionError):
    """A :class:`WorkerGate` refuses a worker: ``code`` and ``message`` go to it (an ``error`` message), then its
    socket is closed. ``temporary``: the refusal says nothing about the worker (the gate could not decide now:
    its auth function is not registered yet, say), so the close code is 1013 (try again later) instead of 1008
    (refused), and the SDKs connect again."""

    def __init__(self, code: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(code, message)
        self.temporary = temporary


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """A worker's connection to a module's worker port, as its WebSocket upgrade request gave it.

    Header values can be credentials: a module must never log them."""

    headers: Mapping[str, str]
    """Header names in lower case; a header sent twice has its values joined with ``, ``."""
    query_params: Mapping[str, list[str]]
    """Each parameter of the URL's query, with every value it was given."""
    ip_address: str


@dataclass(frozen=True, slots=True)
class FunctionDeclaration:
    """A function a worker registers (``registerfunction``), as a :class:`WorkerPolicy` sees and rewrites it."""

    function_id: str
    description: str | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class TriggerDeclaration:
    """A trigger a worker registers (``registertrigger``): ``function_id`` bound to a trigger of ``trigger_type``."""

    trigger_id: str
    trigger_type: str
    function_id: str
    config: Any = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class TriggerTypeDeclaration:
    """A trigger type a worker offers to provide (``registertriggertype``)."""

    trigger_type_id: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class InterceptedCall:
    """A call a worker of a module's worker port makes, which its policy may answer itself
    (:meth:`WorkerPolicy.intercept`). The policy has already let the worker call ``function_id``."""

    function_id: str
    payload: Any
    """The payload, with ``_caller_worker_id`` set to the calling worker's id when it is an object (as the
    engine sets it for the callee of any worker's call)."""
    action: Mapping[str, Any] | None = None
    """The call's ``action`` (``{"type": "void"}``, ...), if it had one."""
    metadata: Any = None
    """The call's invocation metadata."""
    timeout_s: float | None = None
    """How long the caller is willing to wait (None: the engine's invocation timeout)."""
    engine_builtin: bool = False
    """``function_id`` is one of the engine's own ``engine::*`` functions (its core's API), not a worker's or a
    module's."""


class WorkerPolicy(Protocol):
    """What one worker admitted on a module's worker port may do.

    The engine asks it about every message of the worker that reaches others, in the order they came. A method
    that needs to wait (a call of a hook function) returns an awaitable: the worker's later messages wait
    behind it, so a registration is in place before a call that follows it. Anything it raises other than
    :class:`FunctionError` refuses too (the engine logs it): a policy that fails, fails closed. A worker may
    always call, see and bind its own functions: the engine does not ask about those.
    """

    def check_call(self, function_id: str, metadata: Any) -> None:
        """Raise :class:`FunctionError` when the worker may neither call nor see ``function_id`` (``metadata`` is
        the function's; None when no function has the id, which must be refused alike, so that a refusal does not
        tell whether a function exists). The error is the answer to the worker's call; functions it refuses are
        left out of the worker's listings."""

    def function(self, declared: FunctionDeclaration) -> FunctionDeclaration | Awaitable[FunctionDeclaration]:
        """What the worker's registration of a function becomes (another id, description or metadata), or
        :class:`FunctionError` to refuse it. The worker goes on serving the function under its own id: calls
        reach it under the id it registered."""

    def trigger(self, declared: TriggerDeclaration) -> TriggerDeclaration | Awaitable[TriggerDeclaration]:
        """What the worker's registration of a trigger becomes, or :class:`FunctionError` to refuse it. The
        engine then checks the function it binds as it checks a call (:meth:`check_call`)."""

    def trigger_type(
        self, declared: TriggerTypeDeclaration
    ) -> TriggerTypeDeclaration | Awaitable[TriggerTypeDeclaration]:
        """What the worker's registration of a trigger type becomes, or :class:`FunctionError` to refuse it."""

    def intercept(self, call: InterceptedCall) -> Awaitable[Any] | None:
        """None: the call goes to its function. Otherwise the call is answered by the awaitable instead: its
        value is the result, its :class:`FunctionError` or :class:`InvocationError` the error."""


class WorkerGate(Protocol):
    """Who may connect to a module's worker port (:meth:`ModuleHost.serve_workers`)."""

    async def admit(self, request: WorkerRequest) -> WorkerPolicy:
        """Admit the worker under the policy returned, or raise :class:`AdmissionError` (any other exception
        refuses it too). Until it returns, the engine holds what the worker sends and has not announced it."""


class WorkerPort(Protocol):
    """A worker port a module opened."""

    @property
    def port(self) -> int:
        """The port it is bound to (the one chosen, for port 0)."""

    @property
    def url(self) -> str:
        """``ws://host:port`` for workers."""

    async def close(self) -> None:
        """Stop taking connections, and close those it took (idempotent)."""


class TelemetrySink(Protocol):
    """Where the telemetry the engine accepts goes (:meth:`ModuleHost.receive_telemetry`)."""

    def receive(self, message: bytes) -> None:
        """One binary message as an SDK sent it on ``/otel`` (or, as the reference allows, on its worker socket):
        a 4-byte tag, ``OTLP`` (spans), ``LOGS`` or ``MTRC`` (metrics), then the OTLP/JSON export request. Any
        other bytes may arrive too: the sink judges them. Called on the engine's loop for each message, so it must
        not wait; anything it raises is logged and the message dropped, and the sending connection goes on."""

    def keep(self, signal: str, records: list[dict[str, Any]]) -> None:
        """Records the engine made itself: ``signal`` ``"spans"``, its own spans (:mod:`iii.engine.spans`), in the
        shape of the decoded ones (``trace_id``, ``span_id``, ``parent_span_id``, ``name``, times in Unix
        nanoseconds, ``status``, ``attributes`` as ``[key, value]`` string pairs, ``service_name``, ...).
        Called on the engine's loop, at most once a turn of it, with what ended since: it must not wait."""


class ModuleSpan(Protocol):
    """A span the engine records for something a module does (:meth:`ModuleHost.start_span`)."""

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` naming this span: pass it to the calls the work makes
        (:meth:`ModuleHost.invoke`), so that their spans are its children."""

    def set(self, key: str, value: str) -> None:
        """Add an attribute."""

    def end(self, error: tuple[str, str] | None = None) -> None:
        """End the span now: its work succeeded, or failed with ``(code, message)``. Call it once."""


class ModuleHost(Protocol):
    """What a module may do: the capabilities of any worker (see the module docstring)."""

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str = "",
        request_format: Any = None,
        response_format: Any = None,
    ) -> None:
        """Serve ``function_id`` with ``handler``."""

    def register_trigger_type(self, type_id: str, provider: TriggerProvider, *, description: str = "") -> None:
        """Provide trigger type ``type_id``: bindings to it go to ``provider``."""

    def provide_function_kind(self, field: str, kind: FunctionKind) -> None:
        """Serve the functions that workers register with ``field`` in ``registerfunction`` (``invocation``, the
        only such field of the protocol), through ``kind`` (see :class:`FunctionKind`). ``ValueError`` if the
        field is not one, or another module provides it.

        Only inside the engine: over the worker protocol a worker cannot take other workers' registrations, so
        a host there raises ``NotImplementedError`` (a module that provides a kind runs inside the engine).
        """

    def invoke(
        self,
        function_id: str,
        data: Any,
        *,
        timeout_s: float | None = None,
        metadata: Any = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> Awaitable[Any]:
        """Call ``function_id``; the awaitable gives its result or raises :class:`InvocationError` (see the module
        docstring). ``metadata`` goes with the call (the callee's invocation metadata), and so do ``traceparent``
        and ``baggage``, as a worker's ``invokefunction`` carries them: ``traceparent`` is the W3C trace context
        the call continues (the engine's span of the call, and the callee's, are in that trace). A host over the
        worker protocol may leave them out (the SDK's calls carry the SDK's own context)."""

    def invoke_void(self, function_id: str, data: Any) -> None:
        """Call ``function_id`` without waiting for (or getting) its result."""

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(worker_id)`` whenever a worker disconnects for good."""

    async def create_channel(self, buffer_frames: int = 64) -> ModuleChannel:
        """A new data channel whose buffer holds ``buffer_frames`` frames before its writer is held back."""

    async def serve_workers(self, host: str, port: int, gate: WorkerGate) -> WorkerPort:
        """Open another port for workers, where ``gate`` admits each (see the module docstring). Channel sockets
        (``/ws/channels/...``) are served there too; ``OSError`` if the address cannot be bound. Only inside the
        engine: a host over the worker protocol raises ``NotImplementedError``."""

    def start_span(
        self, name: str, traceparent: str | None, attributes: Iterable[tuple[str, str]] = (), *, root: bool = False
    ) -> ModuleSpan | None:
        """A span for work the module does (a queue delivery, an HTTP exchange), a child of ``traceparent``, kept
        with the engine's own spans. None when ``traceparent`` names no sampled trace, unless ``root`` (work that
        enters the system here, as an HTTP request: a new trace is started), and when the engine records no spans
        (no module receives telemetry, or the module runs over the worker protocol): then there is nothing to
        end."""

    def receive_telemetry(self, sink: TelemetrySink) -> None:
        """Have ``sink`` receive the telemetry the engine accepts from now on (see :class:`TelemetrySink`; once
        the module has stopped, its sink should drop what still comes); ``ValueError`` if another module
        receives it already. Only inside the engine: a host over the worker protocol raises
        ``NotImplementedError``."""


class Module(Protocol):
    """A capability around the core. ``name`` names it in the config, logs, the console and metrics."""

    name: str

    async def start(self, host: ModuleHost) -> None:
        """Open backends, then register functions and trigger types on ``host``."""

    async def stop(self) -> None:
        """Stop serving and close backends (pending durable writes are finished first)."""

    def metrics(self) -> Iterable[MetricSample]:
        """What the module reports on ``/metrics`` (may be empty)."""

    def snapshot(self) -> Mapping[str, Any]:
        """A JSON-ready summary for the console (scopes and keys, topics and subscribers, jobs and next runs)."""


@runtime_checkable
class ConsoleQueries(Protocol):
    """A module whose console view needs reads a :meth:`Module.snapshot` cannot give (they await the backend,
    or depend on what the page shows): the page asks them over ``/console/query``."""

    async def console_query(self, query: Any) -> Any:
        """Answer one question of the console page (decoded JSON in, JSON-ready out); ``ValueError`` with the
        reason for a malformed one. The answer must be bounded in size whatever the module holds."""
