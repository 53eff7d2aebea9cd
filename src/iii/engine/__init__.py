"""The iii engine: an asyncio server that routes function calls between workers and relays data channels."""

from iii.engine.config import EngineConfig
from iii.engine.server import Engine

__all__ = ["Engine", "EngineConfig"]
