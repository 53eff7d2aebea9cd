"""The ``iii`` command.

* ``iii engine``: run an engine (flags, ``III_ENGINE_*`` variables, a TOML file);
* ``iii call``, ``iii functions``, ``iii workers``, ``iii triggers``, ``iii observers``, ``iii queues``,
  ``iii channels``: use and inspect a running engine;
* ``iii logs``, ``iii trace``: the workers' logs and traces the engine keeps;
* ``iii send``, ``iii pipe``: stream files and pipes through channels to functions;
* ``iii worker MODULE``: run one of the engine's modules (state, pubsub, cron, queue, ...) as its own worker process.

click parses the command line; rich draws tables and progress bars (see docs/DESIGN.md).
"""

from __future__ import annotations

import click

from iii._version import __version__
from iii.cli.client_commands import call, channels, functions, observers, queues, triggers, workers
from iii.cli.engine_command import engine
from iii.cli.stream_commands import pipe, send
from iii.cli.telemetry_commands import logs, trace
from iii.cli.worker_command import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="iii")
def main() -> None:
    """iii: functions that call each other across processes, and data channels between them."""


for command in (
    engine,
    call,
    functions,
    workers,
    triggers,
    observers,
    queues,
    channels,
    logs,
    trace,
    send,
    pipe,
    worker,
):
    main.add_command(command)

__all__ = ["main"]
