"""The SDK's exceptions: one root, with local misuse and remote failure kept apart.

::

    IIIError
    ├── UsageError                 you called something the wrong way (write after close, read twice, a call
    │                              after shutdown, a malformed engine URL, ...)
    ├── InvocationError            a call failed: the engine or the remote handler said so (code, message, stacktrace)
    ├── FunctionError              raised by a handler to answer its call with an error code of its own
    ├── ChannelError
    │   ├── ChannelBrokenError     the stream was cut off: the data you have may be incomplete
    │   └── ChannelRefusedError    the engine would not open this end (taken already, wrong key, gone): no data
    └── EngineError
        ├── EngineUnavailableError the engine could not be reached, or no iii engine answers at the URL
        └── EngineRefusedError     the engine refused this worker (bad token, fatal rejection): no retry
"""

from __future__ import annotations


class IIIError(Exception):
    """Root of every exception raised by the iii SDK."""


class UsageError(IIIError, RuntimeError):
    """Local misuse of the API; nothing was sent. Fix the calling code."""


class InvocationError(IIIError):
    """A call failed remotely or timed out. ``str(e)`` is ``"<code>: <message>"``, as in the official SDKs.

    ``code`` is one of the protocol's error codes (``function_not_found``, ``invocation_failed``,
    ``invocation_stopped``, ``TIMEOUT``, ...); ``stacktrace`` is the remote handler's traceback, if any.
    """

    def __init__(
        self,
        code: str,
        message: str,
        function_id: str | None = None,
        stacktrace: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.function_id = function_id
        self.stacktrace = stacktrace
        self.invocation_id = invocation_id


class FunctionError(IIIError):
    """Raise it in a handler to answer the call with ``{"code": code, "message": message}``.

    Any other exception a handler raises is answered as ``invocation_failed`` (with its text and traceback);
    this one lets a function state what went wrong in a code its callers can act on (``NOT_FOUND``,
    ``version_conflict``, ...). The caller gets an :class:`InvocationError` with that code.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChannelError(IIIError):
    """A data channel failed."""


class ChannelBrokenError(ChannelError):
    """The stream ended without its writer ending it (writer lost, reader lost, expiry, engine shutdown).

    ``code`` and ``reason`` are the WebSocket close code and reason the engine gave; ``received`` is how many
    data bytes had arrived before the break (for a reader).
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "", received: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.received = received


class ChannelRefusedError(ChannelError):
    """The engine would not open this channel end; nothing was read or written through it.

    Why is in the message: the end is already taken by another reader or writer (close code 1008), the channel
    does not exist or the key is wrong (HTTP 404: it may have expired or ended), or the key opens the other
    end (HTTP 403). Not a :class:`ChannelBrokenError`: no stream was cut, this end never had one.
    ``status`` is the HTTP status of a refused upgrade; ``code`` and ``reason`` the close code and reason of
    an upgrade accepted only to be closed.
    """

    def __init__(self, message: str, status: int | None = None, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


class EngineError(IIIError):
    """The connection to the engine failed."""


class EngineUnavailableError(EngineError, ConnectionError):
    """The engine could not be reached within the connect timeout (the message says why the last attempt
    failed: connection refused, say), or what answers at the URL is not an iii engine (an HTTP 404 to the
    WebSocket upgrade, a server that does not speak WebSocket): raised at once, not retried."""


class EngineRefusedError(EngineError, PermissionError):
    """The engine refused this worker (a missing or wrong token, a fatal registration rejection). Not retried."""
