"""``iii engine``: start an engine and serve until SIGINT or SIGTERM.

Every engine setting is a flag here, generated from :class:`~iii.engine.config.EngineConfig`, so flags,
environment variables, the TOML file and defaults cannot drift apart. A flag wins over the environment,
which wins over the file (``--config``), which wins over the default.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from dataclasses import MISSING, fields
from typing import Any

import click

from iii.cli.log_format import configure_logging
from iii.engine import Engine, EngineConfig
from iii.engine.config import ENV_PREFIX, field_type, load_toml

log = logging.getLogger("iii.cli")


def _config_options(command: Any) -> Any:
    """Add one ``--flag`` per EngineConfig field; values default to None so the environment can fill in."""
    for spec in reversed(fields(EngineConfig)):
        if spec.metadata.get("file_only"):
            continue
        default = None if spec.default is MISSING else spec.default
        shown = "none" if default is None else default
        help_text = f"{spec.metadata.get('help', '')} [env {ENV_PREFIX}{spec.name.upper()}; default {shown}]"
        command = click.option(
            "--" + spec.name.replace("_", "-"), spec.name, type=field_type(spec), default=None, help=help_text
        )(command)
    return command


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="III_ENGINE_CONFIG",
    help="a TOML file of settings (the flags' names, with _ or -) [env III_ENGINE_CONFIG]",
)
@_config_options
def engine(config_file: str | None, **options: Any) -> None:
    """Start an engine and serve until SIGINT or SIGTERM."""
    try:
        from_file = load_toml(config_file) if config_file else {}
        config = EngineConfig.from_sources(options, file_values=from_file)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(config.log_level, config.log_format)
    if config_file:
        log.info("config loaded from %s", config_file)
    log.info("settings: %s", config.changed_settings())
    try:
        _run(serve(config))
    except OSError as exc:
        click.echo(f"iii engine: {exc.strerror or exc}", err=True)
        sys.exit(1)


async def serve(config: EngineConfig) -> None:
    """Run an engine until a stop signal arrives, then shut it down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        server = Engine(config)
    except ValueError as exc:  # a module's settings (its table, --otlp-endpoint, ...) that it refuses
        raise click.UsageError(str(exc)) from None
    await server.start()
    _tune_garbage_collection()
    await stop.wait()
    log.info("stop signal received, shutting down")
    await server.stop()


GC_GEN0_THRESHOLD = 10_000
"""Allocations between two young-generation collections in an engine process (Python's default: 700)."""


def _tune_garbage_collection() -> None:
    """Make the cyclic garbage collector cheaper for a long-running engine: what exists once the engine has started
    (modules, the registry, the imported code) is frozen out of every later collection, and the young generation
    is collected every :data:`GC_GEN0_THRESHOLD` allocations instead of 700. The engine makes many short-lived
    objects per message and keeps thousands of telemetry records in its rings, each a small tree of dicts and
    lists that every full collection walks: with our SDK's telemetry on, this took the engine's CPU per call from
    22.5 to 19.1 µs (bench/sdk_telemetry.py --repeat 3); calls without telemetry were unchanged. Only the
    ``iii engine`` process does this: an engine embedded in another program leaves that program's settings alone."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
