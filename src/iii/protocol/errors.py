"""Error codes carried in ``invocationresult.error.code`` and in ``error`` notices.

The lowercase codes are the reference engine's; the others are the official SDKs' local codes, which
our engine also uses where the meaning is the same (an engine-side timeout is still a ``TIMEOUT``).
"""

from typing import Final

FUNCTION_NOT_FOUND: Final = "function_not_found"
INVOCATION_FAILED: Final = "invocation_failed"
INVOCATION_STOPPED: Final = "invocation_stopped"
INVOCATION_ERROR: Final = "invocation_error"
DESERIALIZATION_ERROR: Final = "deserialization_error"
TIMEOUT: Final = "TIMEOUT"
FORBIDDEN: Final = "FORBIDDEN"
"""The caller's connection may not do this (a worker of the RBAC port calling a function it is not allowed)."""
AUTH_ERROR: Final = "AUTH_ERROR"
"""A worker port's gate (the RBAC listener's auth function) did not admit the worker (an ``error`` notice, then a
close)."""
INVALID_MESSAGE: Final = "invalid_message"
"""A message on the control socket could not be decoded or had fields of the wrong type."""
ENQUEUE_ERROR: Final = "enqueue_error"
LIMIT_EXCEEDED: Final = "limit_exceeded"
"""A per-worker limit (pending invocations, open channels) was reached."""
MESSAGE_TOO_BIG: Final = "message_too_big"
"""A message (a call, a result) was larger than the engine's ``--max-message-bytes``; it was not acted on."""
NOT_SUPPORTED: Final = "not_supported"
"""A registration asks for something no module of this engine provides (``invocation`` without the
http_functions module)."""

FUNCTION_NAMESPACE_CONFLICT: Final = "FUNCTION_NAMESPACE_CONFLICT"
"""``registrationrejected`` code: another live worker owns the function id (non-fatal for SDKs)."""
