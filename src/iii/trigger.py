"""Trigger types and bindings (``from iii.trigger import TriggerConfig, TriggerHandler``)."""

from iii.sdk.triggers import Trigger, TriggerConfig, TriggerHandler, TriggerTypeRef

__all__ = ["Trigger", "TriggerConfig", "TriggerHandler", "TriggerTypeRef"]
