"""W3C trace context (https://www.w3.org/TR/trace-context/): reading a ``traceparent`` and making new ids, as the
SDK and the engine both do.

A ``traceparent`` is read strictly, as the recommendation tells a receiver to: ``version-trace_id-parent_id-flags``
in lower-case hex; version ``ff`` is invalid; a version-00 header is exactly 55 characters; a later version may
carry more after a ``-``; an all-zero trace or parent id is invalid. Whatever is not valid names no parent (the
receiver then starts a new trace); it is never an error.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Final, NamedTuple

_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_VERSION_00_LENGTH: Final = 55
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_getrandbits: Final = random.getrandbits


class TraceParent(NamedTuple):
    """A valid ``traceparent``'s fields, as they were sent (lower-case hex)."""

    trace_id: str
    parent_span_id: str
    flags: str
    """The trace flags, two hex digits: passed on unchanged by whoever forwards the trace."""

    @property
    def sampled(self) -> bool:
        """The ``sampled`` flag (the flags' lowest bit): the caller records this trace."""
        return int(self.flags, 16) & 1 == 1


@functools.lru_cache(maxsize=256)
def parse_traceparent(traceparent: str | None) -> TraceParent | None:
    """The fields of a W3C ``traceparent``; None when there is none or it is not valid (see the module docstring:
    upper-case hex, version ``ff``, an all-zero id, a version-00 header with more after it). Cached: the engine
    reads a call's context when deciding on its span and again when starting it."""
    if not traceparent:
        return None
    found = _TRACEPARENT.match(traceparent)
    if found is None:
        return None
    version, trace_id, span_id, flags = found.groups()
    if (
        version == "ff"
        or (version == "00" and len(traceparent) != _VERSION_00_LENGTH)
        or (len(traceparent) > _VERSION_00_LENGTH and traceparent[_VERSION_00_LENGTH] != "-")
    ):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, flags)


def new_trace_id() -> str:
    """A random trace id: 32 lower-case hex digits, never all zeros."""
    return f"{_getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random span id: 16 lower-case hex digits, never all zeros."""
    return f"{_getrandbits(64) or 1:016x}"
