"""The streams module: items under ``stream_name > group_id > item_id``, with triggers on change (``stream::*``).

``StreamsModule(StreamsSettings(data_dir=...))`` keeps items in SQLite under ``data_dir``, or in Redis with
``redis_url``, through the state module's backends. The package's parts: ``module`` (the functions and the
Module interface), ``requests`` (payloads checked), ``triggers`` (the ``stream`` trigger type), ``store``
(items on a state backend), ``console`` (what the console's Streams view shows), ``settings``, ``errors``
(the error codes). Update ops are state's (:mod:`iii.modules.state.ops`).
"""

from iii.modules.streams.module import StreamsModule
from iii.modules.streams.settings import StreamsSettings

__all__ = ["StreamsModule", "StreamsSettings"]
