"""What the engine announced when this worker connected, read by the connection and by channel ends."""

from __future__ import annotations

from iii.protocol import close_codes
from iii.protocol.messages import FUNCTION_STATUS_FEATURE, WorkerRegistered


class EngineTerms:
    """The terms of the engine this worker is connected to, from its ``workerregistered`` message.

    * ``max_message_bytes``: the largest message the engine acts on (``None``: it did not say, as the
      reference engine does not); larger calls and results are refused before they are sent.
    * ``strict_close``: the engine ends a channel's reader with code 1000 only after a deliberate end. The
      reference engine does not announce it and ends every stream with a bare close (no code), which a
      reader must then take as the end of the stream.
    * ``answers_registrations``: every function registration is answered (activated, or refused and kept as
      a standby); an engine that does not say so is assumed to have accepted them.

    Until a connection is made, the terms of this project's engine are assumed.
    """

    def __init__(self) -> None:
        self.max_message_bytes: int | None = None
        self.strict_close = True
        self.answers_registrations = True

    def update(self, registered: WorkerRegistered) -> None:
        features = registered.features or ()
        self.max_message_bytes = registered.max_message_bytes
        self.strict_close = close_codes.STRICT_CLOSE_FEATURE in features
        self.answers_registrations = FUNCTION_STATUS_FEATURE in features

    def is_clean_end(self, close_code: int | None) -> bool:
        """Whether a channel socket closed with ``close_code`` ended its stream completely."""
        if close_code == close_codes.NORMAL:
            return True
        return close_code == close_codes.NO_STATUS and not self.strict_close
