"""What the client commands share: connecting to an engine, and turning failures into short messages."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from iii.errors import EngineRefusedError, EngineUnavailableError, InvocationError, UsageError
from iii.sdk.client import III, register_worker
from iii.sdk.options import InitOptions, ReconnectionConfig, resolve_url

F = TypeVar("F", bound=Callable[..., Any])
CLI_WORKER_NAME = "iii-cli"


def engine_options(command: F) -> F:
    """``--url`` and ``--token``, from the environment too."""
    command = click.option(
        "--token", envvar="III_TOKEN", help="bearer token, if the engine asks for one [env III_TOKEN]"
    )(command)
    command = click.option(
        "--url", envvar="III_URL", help="engine address [env III_URL; default ws://127.0.0.1:49134]"
    )(command)
    return command


@functools.cache
def _quiet_sdk_logs() -> None:
    """The command reports failures itself, in one line; the SDK's own log records would repeat them.

    ``asyncio`` too: at exit, the SDK's loop stops with channel sockets still connecting to channels the
    failed call took away, and asyncio would log their refusals ("Task exception was never retrieved").
    """
    for name in ("iii", "picows", "asyncio"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False


@contextlib.contextmanager
def connected(url: str | None, token: str | None) -> Iterator[III]:
    """A worker connection for one command; a bad URL, a refused token or an unreachable engine is a short error."""
    try:
        address = resolve_url(url)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    _quiet_sdk_logs()
    options = InitOptions(
        worker_name=CLI_WORKER_NAME,
        token=token,
        connect_timeout_s=5.0,
        reconnection_config=ReconnectionConfig(max_retries=0),
    )
    try:
        client = register_worker(address, options)
    except EngineRefusedError:
        raise click.ClickException(f"the engine at {address} refused the token (set --token or III_TOKEN)") from None
    except EngineUnavailableError as exc:  # the message says why: connection refused, not an iii engine, ...
        raise click.ClickException(str(exc)) from None
    try:
        yield client
    finally:
        client.shutdown()


def failed(error: BaseException) -> click.ClickException:
    """A failed call as the command's error: its code and message (or what else went wrong)."""
    if isinstance(error, InvocationError):
        return click.ClickException(f"{error.code}: {error.message}")
    return click.ClickException(str(error))


def parse_data(data: str | None) -> Any:
    """``--data``: JSON text, or ``@file.json``; None when not given."""
    if data is None:
        return None
    text = data
    if data.startswith("@"):
        try:
            text = Path(data[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {data[1:]}: {exc.strerror}", param_hint="--data") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))
