"""WebSocket close codes the engine sends, and what each means to the peer.

Only :data:`NORMAL` means "the stream ended as its writer intended". Every other code tells a channel
reader that what it received may be incomplete.
"""

from typing import Final

NORMAL: Final = 1000
"""The writer ended the stream deliberately (or the worker socket closed normally)."""
GOING_AWAY: Final = 1001
"""The engine is shutting down: sent to the worker sockets and to every other socket still open (the SDKs'
telemetry, the console's queries)."""
POLICY_VIOLATION: Final = 1008
"""Refused: the end is already taken, the bearer token is missing or wrong, or a worker port's gate (the RBAC
listener's auth function) refused the worker."""
MESSAGE_TOO_BIG: Final = 1009
"""A message exceeded the configured limit."""
INTERNAL_ERROR: Final = 1011
"""The engine failed while serving this socket."""
SERVICE_RESTART: Final = 1012
"""The engine is shutting down; the stream was cut off."""
TRY_AGAIN_LATER: Final = 1013
"""A worker port could not admit the worker now (its auth function is not there yet, say): connect again later."""

WRITER_LOST: Final = 4001
"""The writer disconnected, or closed with an error code, before ending the stream."""
READER_LOST: Final = 4002
"""The reader went away; nothing more can be delivered."""
PEER_NEVER_CONNECTED: Final = 4003
"""The other end never connected before the channel's time to live ran out."""
WRITER_RELEASED: Final = 4004
"""The writer never connected, and whoever held it let it go (the handler it was given to returned without
using it): no data will come."""

NO_STATUS: Final = 1005
"""What a receiver reports for a close frame that carries no code. The reference engine ends every stream
so, complete or not; this engine never does."""
STRICT_CLOSE_FEATURE: Final = "iii-py.channel-close-codes.v1"
"""Announced in ``workerregistered.features`` by an engine that ends a channel's reader with :data:`NORMAL`
only after a deliberate end. A reader facing an engine that does not announce it (the reference engine)
must take a bare close (:data:`NO_STATUS`) as the end of the stream."""
