"""The ring buffer the observability stores are made of."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from iii.modules.observability import otlp
from iii.modules.observability.store import Ring, record_size
from tests.modules.observability import frames


def test_past_the_count_the_oldest_records_go_and_are_counted() -> None:
    ring: Ring[int] = Ring(max_count=3, max_bytes=1000)
    for item in range(5):
        ring.add(item, 10)
    assert list(ring) == [2, 3, 4]
    assert list(ring.newest_first()) == [4, 3, 2]
    assert (ring.dropped, ring.added, ring.bytes) == (2, 5, 30)


def test_past_the_bytes_the_oldest_records_go_until_the_new_one_fits() -> None:
    ring: Ring[str] = Ring(max_count=100, max_bytes=100)
    ring.add("a", 40)
    ring.add("b", 40)
    ring.add("c", 50)
    assert list(ring) == ["b", "c"]
    assert (ring.bytes, ring.dropped) == (90, 1)


def test_a_record_larger_than_the_whole_ring_is_not_kept_and_is_counted() -> None:
    ring: Ring[str] = Ring(max_count=10, max_bytes=100)
    ring.add("small", 10)
    ring.add("huge", 101)
    assert list(ring) == ["small"]
    assert ring.dropped == 1


def test_clear_forgets_the_records_without_counting_them_dropped() -> None:
    ring: Ring[int] = Ring(max_count=10, max_bytes=100)
    ring.add(1, 10)
    ring.clear()
    assert (len(ring), ring.bytes, ring.dropped) == (0, 0, 0)


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        Ring(max_count=0, max_bytes=10)


def test_since_gives_the_records_kept_after_a_count_still_held() -> None:
    ring: Ring[int] = Ring(max_count=3, max_bytes=100)
    for item in range(5):
        ring.add(item, 10)
    ring.add(99, 1000)  # over max_bytes: not kept, so not counted by `kept`
    assert ring.kept == 5
    assert (ring.since(0), ring.since(3), ring.since(5), ring.since(7)) == ([2, 3, 4], [3, 4], [], [])
    ring.clear()
    ring.add(5, 10)
    assert (ring.kept, ring.since(4), ring.since(5), ring.since(6)) == (6, [5], [5], [])


def _string(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _official_sdk_log(n: int) -> bytes:
    """A log message as the official Python SDK sends one (its Logger with data: one record, its resource)."""
    resource = [
        _string("telemetry.sdk.language", "python"),
        _string("telemetry.sdk.name", "iii-python-sdk"),
        _string("telemetry.sdk.version", "1.45.2"),
        _string("service.instance.id", f"854a2bc2-dbc0-45aa-92e9-{n:012d}"),
        _string("service.name", "orders-worker"),
        _string("service.version", "unknown"),
    ]
    data = [_string("order_id", f"ord_{n:06d}"), {"key": "amount", "value": {"doubleValue": 49.99}}]
    record = {
        "timeUnixNano": str(1_700_000_000_000_000_000 + n),
        "observedTimeUnixNano": str(1_700_000_000_000_000_000 + n),
        "severityNumber": 9,
        "severityText": "INFO",
        "body": {"stringValue": f"order {n} processed"},
        "attributes": [_string("service.name", ""), {"key": "log.data", "value": {"kvlistValue": {"values": data}}}],
    }
    scope_logs = [{"scope": {"name": "iii.logger", "version": ""}, "logRecords": [record]}]
    return (
        b"LOGS"
        + json.dumps({"resourceLogs": [{"resource": {"attributes": resource}, "scopeLogs": scope_logs}]}).encode()
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(_official_sdk_log, id="official Python SDK log"),
        pytest.param(lambda n: frames.logs_message(f"line {n}"), id="small log"),
        pytest.param(lambda n: frames.logs_message("x" * 4000 + str(n)), id="long log"),
        pytest.param(
            lambda n: frames.spans_message(frames.span(f"execute f{n}", f"{n + 1:016x}", frames.ROOT)), id="span"
        ),
    ],
)
def test_record_size_is_close_to_the_memory_the_records_hold(message: Callable[[int], bytes]) -> None:
    """The rings' byte bounds are about memory: a record's size is within -30% / +60% of what its objects hold
    (its JSON alone is a few times smaller)."""
    encoder = msgspec.json.Encoder()
    messages = [message(n) for n in range(500)]
    gc.collect()
    tracemalloc.start()
    try:
        records = [record for m in messages for record in otlp.decode(m)[1]]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimated = sum(record_size(encoder.encode(record)) for record in records)
    assert 0.7 * held <= estimated <= 1.6 * held
