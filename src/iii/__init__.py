"""iii: functions that call each other across processes, and data channels that stream between them."""

from iii._version import __version__

__all__ = ["__version__"]
