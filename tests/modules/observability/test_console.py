"""The observability module's answers to the console's Logs and Trace views (``console_query``): filters, the
live tail's cursor, the bounds, and malformed queries refused with the reason."""

from __future__ import annotations

import pytest

from iii.modules.observability.console import MAX_LOGS, MAX_SPANS
from tests.modules.observability.conftest import StartObservability
from tests.modules.observability.frames import CHILD, ROOT, TRACE, logs_message, span, spans_message
from tests.modules.observability.test_module import send


def bodies(answer: dict[str, object]) -> list[str]:
    logs = answer["logs"]
    assert isinstance(logs, list)
    return [record["body"] for record in logs]


async def test_logs_are_filtered_by_level_service_and_text_oldest_first(
    start_observability: StartObservability,
) -> None:
    module, host = await start_observability()
    send(host, logs_message("order 1 placed", "order 2 placed", service="orders-worker"))
    send(host, logs_message("Payment FAILED for order 2", service="payments", severity=17, text="ERROR"))
    send(host, logs_message("cache warm", service="payments", severity=5, text="DEBUG"))
    every = await module.console_query({"view": "logs"})
    assert bodies(every) == ["order 1 placed", "order 2 placed", "Payment FAILED for order 2", "cache warm"]
    assert (every["shown"], every["total"]) == (4, 4)
    assert bodies(await module.console_query({"view": "logs", "severity_min": 9})) == bodies(every)[:3]
    assert bodies(await module.console_query({"view": "logs", "service": "PAY"})) == bodies(every)[2:]
    assert bodies(await module.console_query({"view": "logs", "text": "order 2"})) == [
        "order 2 placed",
        "Payment FAILED for order 2",
    ]
    both = {"view": "logs", "service": "payments", "severity_min": 13, "text": "failed"}
    assert bodies(await module.console_query(both)) == ["Payment FAILED for order 2"]


async def test_the_tail_after_a_cursor_gets_only_the_records_stored_since(
    start_observability: StartObservability,
) -> None:
    module, host = await start_observability()
    send(host, logs_message("before"))
    first = await module.console_query({"view": "logs"})
    assert bodies(first) == ["before"]
    quiet = await module.console_query({"view": "logs", "after": first["cursor"]})
    assert bodies(quiet) == [] and quiet["cursor"] == first["cursor"]
    send(host, logs_message("after 1", "after 2"))
    await host.call("engine::log::warn", {"message": "from a worker"})
    tail = await module.console_query({"view": "logs", "after": first["cursor"]})
    assert bodies(tail) == ["after 1", "after 2", "from a worker"]
    filtered = await module.console_query({"view": "logs", "after": first["cursor"], "severity_min": 13})
    assert bodies(filtered) == ["from a worker"]


async def test_a_logs_answer_holds_at_most_the_newest_max_logs_records(start_observability: StartObservability) -> None:
    module, host = await start_observability()
    send(host, logs_message(*(f"line {n}" for n in range(MAX_LOGS + 50))))
    answer = await module.console_query({"view": "logs", "limit": 10 * MAX_LOGS})
    assert (answer["shown"], answer["total"]) == (MAX_LOGS, MAX_LOGS + 50)
    assert bodies(answer) == [f"line {n}" for n in range(50, MAX_LOGS + 50)]
    few = await module.console_query({"view": "logs", "limit": 3})
    assert bodies(few) == [f"line {n}" for n in range(MAX_LOGS + 47, MAX_LOGS + 50)]
    assert (await module.console_query({"view": "logs", "limit": 0}))["logs"] == []


async def test_a_trace_comes_in_tree_order_with_depths_and_offsets(start_observability: StartObservability) -> None:
    module, host = await start_observability()
    grandchild, sibling = "1" * 16, "2" * 16
    send(
        host,
        spans_message(
            span("execute orders.get", CHILD, parent=ROOT, start_ms=2, ms=6),
            span("call orders.get", ROOT, ms=10),
            span("execute stock.check", sibling, parent=ROOT, start_ms=8, ms=1),
            span("query db", grandchild, parent=CHILD, start_ms=3, ms=2),
            span("elsewhere", "3" * 16, trace="f" * 32),
        ),
    )
    answer = await module.console_query({"view": "trace", "trace_id": TRACE})
    rows = [(s["name"], s["depth"], s["offset_ms"], s["duration_ms"]) for s in answer["spans"]]
    assert rows == [
        ("call orders.get", 0, 0.0, 10.0),
        ("execute orders.get", 1, 2.0, 6.0),
        ("query db", 2, 3.0, 2.0),
        ("execute stock.check", 1, 8.0, 1.0),
    ]
    assert answer["spans"][1]["parent_span_id"] == ROOT and answer["spans"][0]["service_name"] == "orders-worker"
    assert (answer["shown"], answer["total"]) == (4, 4)
    unknown = await module.console_query({"view": "trace", "trace_id": "e" * 32})
    assert (unknown["spans"], unknown["total"]) == ([], 0)


async def test_a_trace_answer_holds_at_most_max_spans(start_observability: StartObservability) -> None:
    module, host = await start_observability(spans_max_count=MAX_SPANS + 100)
    many = [span("call", ROOT, ms=100)] + [
        span(f"step {n}", f"{n + 1:016x}", parent=ROOT, start_ms=n % 90) for n in range(MAX_SPANS + 50)
    ]
    send(host, spans_message(*many))
    answer = await module.console_query({"view": "trace", "trace_id": TRACE})
    assert (answer["shown"], answer["total"]) == (MAX_SPANS, MAX_SPANS + 51)
    assert len(answer["spans"]) == MAX_SPANS and answer["spans"][0]["name"] == "call"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (None, "is an object"),
        ([1], "is an object"),
        ({}, "`view`"),
        ({"view": "metrics"}, "`view`"),
        ({"view": "logs", "after": -1}, "`after`"),
        ({"view": "logs", "after": "5"}, "`after`"),
        ({"view": "logs", "severity_min": "warn"}, "`severity_min`"),
        ({"view": "logs", "limit": True}, "`limit`"),
        ({"view": "logs", "text": 5}, "`text`"),
        ({"view": "logs", "service": ["a"]}, "`service`"),
        ({"view": "trace"}, "`trace_id`"),
        ({"view": "trace", "trace_id": 7}, "`trace_id`"),
    ],
)
async def test_a_malformed_query_is_refused_with_the_reason(
    start_observability: StartObservability, query: object, reason: str
) -> None:
    module, _ = await start_observability()
    with pytest.raises(ValueError, match=reason):
        await module.console_query(query)
