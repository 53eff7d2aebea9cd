"""The worker's own telemetry: a span around every function execution, its log records, sent to the engine.

What is recorded, as the official SDKs do:

* a span ``execute <function id>`` (kind internal) around every handler run, the child of the call's
  ``traceparent`` (a new trace without one), status ok, or error with the error's message and an ``exception``
  event; the call's baggage entries become its attributes (:mod:`~iii.sdk.telemetry.spans`);
* the calls a handler makes carry ``traceparent`` naming that span, and the call's baggage unchanged
  (:mod:`iii.sdk.calls`); with telemetry off they carry the call's own ``traceparent``, so a trace is not cut;
* Python ``logging`` records of the program (not the SDK's own nor its transport's) and ``Logger`` lines, with the
  trace and span ids of the handler they are made in (:mod:`~iii.sdk.telemetry.logs`).

How it is sent (:mod:`~iii.sdk.telemetry.exporter`): records are queued in memory (bounded: ``MAX_QUEUED`` spans
and as many log records; more are dropped and counted in ``Exporter.dropped``), and a flush on the SDK loop,
``flush_interval_s`` after the first record of a batch, encodes them (:mod:`iii.protocol.otlp`) and sends them on a
socket of their own to the engine's ``/otel`` (:mod:`~iii.sdk.telemetry.connection`), opened when there is
something to send. A call never waits for telemetry: recording a span is a few attribute stores and a deque
append. An engine that cannot be reached, or has no ``/otel``, is retried with backoff, quietly (debug log lines);
meanwhile what does not fit in the queue is dropped and counted.

Settings (:mod:`~iii.sdk.telemetry.settings`) come from ``InitOptions.otel`` (a mapping, or the official SDK's
``OtelConfig``), else the official SDKs' environment variables: ``OTEL_ENABLED=false`` turns it all off,
``OTEL_SERVICE_NAME`` names the service (default: the worker's name).

Modules, one job each: ``settings`` (what is recorded, how the service is named), ``spans`` (the execution span
and its OTLP encoding), ``connection`` (the ``/otel`` socket: connect, retry, backpressure), ``exporter`` (the
queues, batching and flushing, shutdown and fork), ``logs`` (which exporter a log record goes to, the ``logging``
handler, :class:`Logger`). W3C ``traceparent`` reading is shared with the engine (:mod:`iii.protocol.trace_context`).
"""
