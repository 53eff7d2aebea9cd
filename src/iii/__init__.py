"""iii: functions that call each other across processes, and data channels that stream between them.

::

    from iii import register_worker

    iii_client = register_worker("ws://127.0.0.1:49134")
    iii_client.register_function({"id": "math.double"}, lambda data: data["n"] * 2)
    iii_client.trigger({"function_id": "math.double", "payload": {"n": 21}})  # 42
"""

from iii._version import __version__
from iii.errors import (
    ChannelBrokenError,
    ChannelError,
    ChannelRefusedError,
    EngineError,
    EngineRefusedError,
    EngineUnavailableError,
    FunctionError,
    IIIError,
    InvocationError,
    UsageError,
)
from iii.sdk.actions import TriggerAction, TriggerActionEnqueue, TriggerActionVoid
from iii.sdk.channels import Channel, ChannelReader, ChannelWriter, StreamChannelRef
from iii.sdk.client import III, register_worker
from iii.sdk.connection import ConnectionState
from iii.sdk.context import InvocationContext, current_invocation
from iii.sdk.functions import FunctionRef, FunctionStatus
from iii.sdk.http import HttpRequest, StreamResponse, http_response
from iii.sdk.options import DEFAULT_ENGINE_URL, InitOptions, ReconnectionConfig
from iii.sdk.telemetry.logs import Logger

__all__ = [
    "DEFAULT_ENGINE_URL",
    "III",
    "Channel",
    "ChannelBrokenError",
    "ChannelError",
    "ChannelReader",
    "ChannelRefusedError",
    "ChannelWriter",
    "ConnectionState",
    "EngineError",
    "EngineRefusedError",
    "EngineUnavailableError",
    "FunctionError",
    "FunctionRef",
    "FunctionStatus",
    "HttpRequest",
    "IIIError",
    "InitOptions",
    "InvocationContext",
    "InvocationError",
    "Logger",
    "ReconnectionConfig",
    "StreamChannelRef",
    "StreamResponse",
    "TriggerAction",
    "TriggerActionEnqueue",
    "TriggerActionVoid",
    "UsageError",
    "__version__",
    "current_invocation",
    "http_response",
    "register_worker",
]
