"""What ``/proc`` tells about a process (an engine under test): memory by ``/proc/<pid>/status`` field,
open file descriptors."""

from __future__ import annotations

import os


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` size field (``VmRSS``, ``VmHWM``, …) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
