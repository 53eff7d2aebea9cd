"""The state module: durable key-value state by scope and key, with triggers on change (``state::*``).

``StateModule(StateSettings(data_dir=...))`` keeps state in SQLite under ``data_dir``, or in Redis with
``redis_url``. The package's parts: ``module`` (the functions and the Module interface), ``requests`` (payloads
checked), ``ops`` (update ops), ``triggers`` (the ``state`` trigger type), ``store`` (the backend interface),
``sqlite_store`` and ``redis_store`` (the backends), ``settings``, ``errors`` (the error codes).
"""

from iii.modules.state.module import StateModule
from iii.modules.state.settings import StateSettings

__all__ = ["StateModule", "StateSettings"]
