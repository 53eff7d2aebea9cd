"""Cron: the ``cron`` trigger type, firing bound functions on a schedule, once per tick across engines on Redis."""

from .clock import Clock, SystemClock
from .module import CronModule, CronSettings

__all__ = ["Clock", "CronModule", "CronSettings", "SystemClock"]
