"""The log messages the official Python SDK (PyPI ``iii-sdk`` 0.25.0) sends to ``/otel``, made by that SDK itself;
run by ``bench/log_flood.py`` in the official SDK's venv (standard library and the official packages only).

It initialises the SDK's telemetry as ``register_worker`` does (``init_otel``: its resource, its
``BatchLogRecordProcessor`` with its default batch size, its ``EngineLogExporter``), without connecting: the
SDK's connection buffers the frames it is given before it starts (up to its queue's 1,000). Then its ``Logger``
logs ``--count`` lines with structured data, the log provider is flushed, and each buffered ``LOGS`` message
(tag and OTLP/JSON body, byte for byte what the SDK would send) is written to ``--out``, each preceded by its
length (4 bytes, big-endian).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iii_helpers.observability import telemetry
from iii_helpers.observability.logger import Logger
from iii_helpers.observability.telemetry_types import OtelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1000, help="log lines (at most 1,000: the SDK's queue)")
    args = parser.parse_args()
    telemetry.init_otel(OtelConfig(service_name="flood-worker", metrics_enabled=False))
    logger = Logger()
    for n in range(args.count):
        logger.info(f"order {n} processed", {"order_id": f"ord_{n:06d}", "amount": 49.99, "currency": "USD"})
    provider = telemetry._log_provider
    connection = telemetry._connection
    assert provider is not None and connection is not None, "the SDK's telemetry did not start"
    provider.force_flush()
    with args.out.open("wb") as out:
        for tag, body in connection._pre_start_buffer:
            if tag == b"LOGS":
                out.write((len(tag) + len(body)).to_bytes(4, "big") + tag + body)


if __name__ == "__main__":
    main()
