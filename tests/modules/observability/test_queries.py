"""The pure queries over the stored records: ``engine::logs::list``'s ``function_id`` filter (ours), which finds a
record's function through its span."""

from __future__ import annotations

from typing import Any

import pytest

from iii.modules.api import FunctionError
from iii.modules.observability import queries
from iii.protocol.errors import DESERIALIZATION_ERROR

BASE_NS = 1_700_000_000_000_000_000


def log(body: str, span_id: str | None, n: int) -> dict[str, Any]:
    """A stored log record, as the rings hold it (the fields the filters read)."""
    return {
        "timestamp_unix_nano": BASE_NS + n,
        "severity_number": 9,
        "severity_text": "INFO",
        "body": body,
        "trace_id": "0af7651916cd43dd8448eb211c80319c" if span_id else None,
        "span_id": span_id,
        "service_name": "orders-worker",
    }


def stored_span(name: str, span_id: str, attributes: list[list[str]] | None = None) -> dict[str, Any]:
    return {"name": name, "span_id": span_id, "attributes": attributes or []}


SPANS = [
    stored_span("execute orders.place", "a1"),  # as the SDKs send it: the name is all that says the function
    stored_span("execute orders.place", "a2"),  # another run of it
    stored_span("execute orders.place.audit", "b1"),  # a function whose id starts with the same text
    stored_span("call orders.refund", "c1", [["function_id", "orders.refund"], ["iii.function.kind", "user"]]),
    stored_span("enqueue orders.place \u2192 jobs", "d1", [["function_id", "orders.place"], ["queue", "jobs"]]),
]
RECORDS = [
    log("placing", "a1", 1),
    log("placed", "a2", 2),
    log("auditing", "b1", 3),
    log("refunding", "c1", 4),
    log("queued", "d1", 5),
    log("from a call whose span has not arrived", "e1", 6),
    log("outside any call", None, 7),
]


def bodies(query: dict[str, Any], spans: list[dict[str, Any]] = SPANS) -> list[str]:
    found, total = queries.list_logs(RECORDS, query, spans)
    assert total == len(found)
    return [record["body"] for record in found]


def test_a_record_is_a_functions_when_its_span_is_an_execute_span_of_that_function() -> None:
    assert bodies({"function_id": "orders.place"}) == ["placed", "placing"]  # newest first; not the enqueue span's
    assert bodies({"function_id": "orders.place.audit"}) == ["auditing"]


def test_the_engines_call_span_names_its_function_by_attribute() -> None:
    assert bodies({"function_id": "orders.refund"}) == ["refunding"]
    # a span named like a call but without the attribute is not the engine's
    assert bodies({"function_id": "orders.refund"}, [stored_span("call orders.refund", "c1")]) == []


def test_a_record_whose_span_is_unknown_matches_no_function_until_the_span_is_stored() -> None:
    assert bodies({"function_id": "orders.ship"}) == []
    assert "from a call whose span has not arrived" not in bodies({"function_id": "orders.place"})
    arrived = [*SPANS, stored_span("execute orders.ship", "e1")]
    assert bodies({"function_id": "orders.ship"}, arrived) == ["from a call whose span has not arrived"]


def test_the_function_filter_combines_with_the_others_and_pages() -> None:
    found, total = queries.list_logs(RECORDS, {"function_id": "orders.place", "limit": 1}, SPANS)
    assert ([record["body"] for record in found], total) == (["placed"], 2)
    assert bodies({"function_id": "orders.place", "span_id": "a1"}) == ["placing"]
    assert bodies({"function_id": "orders.place", "service_name": "billing"}) == []
    assert len(bodies({})) == len(RECORDS)  # without it, the spans are not needed


def test_a_function_id_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(FunctionError) as refused:
        queries.list_logs(RECORDS, {"function_id": 7}, SPANS)
    assert refused.value.code == DESERIALIZATION_ERROR and "function_id must be a string" in str(refused.value)
