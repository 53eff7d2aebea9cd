"""``iii worker MODULE``: run one of the engine's modules (state, pubsub, cron, queue, http) as its own worker process.

http_functions and observability cannot: they serve functions that other workers register, or receive the
telemetry other workers send, which only the engine can do.

The module is the same code the engine runs inside itself; here it serves its functions and trigger types
through a worker connection, next to any engine (ours or the reference). Its settings come from the same
sources as the engine's: ``--data-dir``, ``--redis-url``, and a TOML file (``--config``): the module's table,
or for http the engine's ``http_*`` settings (``http_port = 8080``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from iii.cli.connection import engine_options
from iii.cli.log_format import configure_logging
from iii.engine.config import EngineConfig, load_toml
from iii.engine.modules import CATALOG, build
from iii.errors import EngineRefusedError, EngineUnavailableError, UsageError
from iii.modules.worker_host import run_module_worker
from iii.sdk.client import register_worker
from iii.sdk.options import InitOptions, resolve_url

log = logging.getLogger("iii.cli")


@click.command()
@click.argument("module", type=click.Choice(sorted(CATALOG)))
@click.option(
    "--data-dir", envvar="III_ENGINE_DATA_DIR", help="where the module keeps its files [env III_ENGINE_DATA_DIR]"
)
@click.option(
    "--redis-url", envvar="III_ENGINE_REDIS_URL", help="keep the module's data in Redis [env III_ENGINE_REDIS_URL]"
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="a TOML file with the module's table ([state], [pubsub], [cron]; http_* settings for http)",
)
@engine_options
def worker(
    module: str,
    data_dir: str | None,
    redis_url: str | None,
    config_file: str | None,
    url: str | None,
    token: str | None,
) -> None:
    """Run MODULE (state, pubsub, cron or http) as a worker of the engine at --url, until SIGINT or SIGTERM."""
    try:
        from_file = load_toml(config_file) if config_file else {}
        overrides: dict[str, Any] = {"data_dir": data_dir, "redis_url": redis_url}
        config = EngineConfig.from_sources(overrides, file_values=from_file)
        instance = build(module, config)
        address = resolve_url(url)
    except (ValueError, TypeError, UsageError) as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(config.log_level, config.log_format)
    try:
        client = register_worker(address, InitOptions(worker_name=f"iii-{module}", token=token))
    except EngineRefusedError:
        raise click.ClickException(f"the engine at {address} refused the token (set --token or III_TOKEN)") from None
    except EngineUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(run_module_worker(instance, client))
    except NotImplementedError as exc:  # a module that runs inside the engine only (http_functions, observability)
        raise click.ClickException(str(exc)) from None
    finally:
        client.shutdown()
