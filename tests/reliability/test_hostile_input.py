"""Hostile input on every port: fuzzed control messages, abused channel endpoints, malformed HTTP.

The engine runs in its own process for the whole module. After each attack it must answer with a clear
error (or ignore what the protocol says to ignore), keep the attacker's connection usable where the
protocol allows, and keep serving everyone else; at the end it must be alive with no unexpected
exception in its log.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from iii.protocol.refs import channel_url
from iii.testing import EngineProcess

TIMEOUT_S = 10.0
KNOWN_TYPES = [
    "invokefunction",
    "invocationresult",
    "registerfunction",
    "unregisterfunction",
    "reattach",
    "ping",
    "registertriggertype",
    "unregistertriggertype",
    "registertrigger",
    "unregistertrigger",
    "triggerregistrationresult",
    "registerservice",
]
FIELDS = [
    "id",
    "invocation_id",
    "function_id",
    "data",
    "result",
    "error",
    "metadata",
    "timeout_ms",
    "action",
    "trigger_type",
    "config",
    "previous_worker_id",
    "reattach_token",
    "description",
    "namespace",
    "traceparent",
    "request_format",
]
CREATE = "engine::channels::create"
FUNCTIONS = ["engine::channels::create", "engine::functions::list", "engine::workers::register", "fuzz.none"]

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
    | st.sampled_from([*FUNCTIONS, "http", "void", "enqueue"])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
message = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(KNOWN_TYPES) | st.text(max_size=12),
    st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=6),
)


def _deep(depth: int) -> bytes:
    return b'{"type":"invokefunction","function_id":"x","data":' + b"[" * depth + b"]" * depth + b"}"


# A frame is (kind, payload): a text frame of JSON, other text, raw bytes sent as text (possibly invalid
# UTF-8), or a binary frame.
frame = st.one_of(
    message.map(lambda m: ("text", json.dumps(m).encode())),
    st.text(max_size=64).map(lambda t: ("text", t.encode())),
    st.binary(max_size=64).map(lambda b: ("text", b)),
    st.binary(max_size=64).map(lambda b: ("binary", b)),
    st.integers(min_value=10, max_value=200_000).map(lambda d: ("text", _deep(d))),
    st.sampled_from([b'{"type":"invokefunction","function_id":"x","timeout_ms":1e999}', b"[1e999]"]).map(
        lambda b: ("text", b)
    ),
    st.builds(
        lambda fid, data: ("text", json.dumps({"type": "invokefunction", "function_id": fid}).encode()[:-1] + data),
        st.sampled_from(FUNCTIONS),
        st.sampled_from([b',"data":{"n":1e999}}', b',"data":{"_caller_worker_id":1e999}}', b',"data":[1e999]}']),
    ),
)


@pytest.fixture(scope="module")
def target() -> Iterator[EngineProcess]:
    with EngineProcess(["--log-level", "DEBUG"]) as engine:
        yield engine


@contextlib.contextmanager
def _worker(engine: EngineProcess) -> Iterator[ClientConnection]:
    with connect(engine.url, max_size=None, compression=None, open_timeout=TIMEOUT_S) as ws:
        first = json.loads(ws.recv(TIMEOUT_S))
        assert first["type"] == "workerregistered"
        yield ws


def _pong_after(ws: ClientConnection) -> list[dict[str, Any]]:
    """Ping and read until the pong; returns what came before it (the answers to the attack)."""
    ws.send(json.dumps({"type": "ping"}))
    before = []
    while (answer := json.loads(ws.recv(TIMEOUT_S)))["type"] != "pong":
        before.append(answer)
    return before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(frame, min_size=1, max_size=6))
def test_fuzzed_control_messages_get_clear_answers_and_the_connection_stays(
    target: EngineProcess, frames: list[tuple[str, bytes]]
) -> None:
    with _worker(target) as ws:
        for kind, payload in frames:
            ws.send(payload, text=kind == "text")
        for answer in _pong_after(ws):
            # functionactivated: an id registered while the previous example's connection (same id) was still
            # closing stands by, and takes over once that close is processed
            assert answer["type"] in {
                "error",
                "invocationresult",
                "triggerregistrationresult",
                "invokefunction",
                "functionactivated",
            }
            if answer["type"] == "error":
                assert answer["error"]["code"] == "invalid_message" and answer["error"]["message"]


def test_channel_endpoint_abuse_is_refused_clearly(target: EngineProcess) -> None:
    with _worker(target) as creator:  # stays connected: a departed creator's unused channels go with it
        creator.send(json.dumps({"type": "invokefunction", "invocation_id": "c", "function_id": CREATE}))
        refs = json.loads(creator.recv(TIMEOUT_S))["result"]
        writer, reader = refs["writer"], refs["reader"]
        cases = [
            (channel_url(target.url, str(uuid.uuid4()), writer["access_key"], "write"), 404),  # unknown id
            (channel_url(target.url, writer["channel_id"], "wrong-key", "write"), 404),  # wrong key
            (channel_url(target.url, reader["channel_id"], reader["access_key"], "write"), 403),  # reader key
            (target.url + "/ws/channels/" + writer["channel_id"] + "?key=a&key=b&dir=write", 400),
            (target.url + "/ws/channels/" + writer["channel_id"] + "?dir=sideways&key=x", 400),
            (target.url + "/no/such/route", 404),
        ]
        for url, status in cases:
            with pytest.raises(InvalidStatus) as refused:
                connect(url, open_timeout=TIMEOUT_S).close()
            assert refused.value.response.status_code == status, url
        # A finished channel's keys open nothing (no replay).
        with (
            connect(channel_url(target.url, **writer), open_timeout=TIMEOUT_S) as w,
            connect(channel_url(target.url, **reader), open_timeout=TIMEOUT_S, max_size=None) as r,
        ):
            w.send(b"x")
            w.close()
            assert r.recv(TIMEOUT_S) == b"x"
            with pytest.raises(ConnectionClosed):
                r.recv(TIMEOUT_S)
        for ref in (writer, reader):
            with pytest.raises(InvalidStatus) as replay:
                connect(channel_url(target.url, **ref), open_timeout=TIMEOUT_S).close()
            assert replay.value.response.status_code == 404


def test_an_oversized_channel_frame_is_refused(target: EngineProcess) -> None:
    with _worker(target) as creator:
        creator.send(json.dumps({"type": "invokefunction", "invocation_id": "c", "function_id": CREATE}))
        refs = json.loads(creator.recv(TIMEOUT_S))["result"]
        with (
            pytest.raises(ConnectionClosed) as closed,
            connect(channel_url(target.url, **refs["writer"]), open_timeout=TIMEOUT_S) as w,
        ):
            w.send(b"x" * (64 * 1024 * 1024 + 1))
            w.recv(TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert "over the engine's limit" in closed.value.rcvd.reason
    assert "stream aborted" in target.log_text()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # a huge header
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a huge request line
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"\x00\xff\xfe binary garbage\r\n\r\n",
    ],
)
def test_malformed_http_requests_get_a_4xx_answer(target: EngineProcess, request_bytes: bytes) -> None:
    host, port = target.http_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(request_bytes)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.") and answer.split()[1].startswith(b"4"), answer[:100]


def test_a_slow_loris_does_not_stop_others(target: EngineProcess) -> None:
    host, port = target.http_url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=TIMEOUT_S) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never finish the headers
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 404")
        with _worker(target) as ws:
            assert _pong_after(ws) == []
    finally:
        for sock in slow:
            sock.close()


def test_after_everything_the_engine_is_alive_serves_and_logged_no_crash(target: EngineProcess) -> None:
    assert target.process is not None and target.process.poll() is None
    with _worker(target) as host, _worker(target) as caller:
        host.send(json.dumps({"type": "registerfunction", "id": "after.fuzz"}))
        _pong_after(host)
        caller.send(json.dumps({"type": "invokefunction", "invocation_id": "q", "function_id": "after.fuzz"}))
        delivery = json.loads(host.recv(TIMEOUT_S))
        host.send(json.dumps({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": 1}))
        assert json.loads(caller.recv(TIMEOUT_S))["result"] == 1
    log = target.log_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 : log.find("Traceback") + 3000]
