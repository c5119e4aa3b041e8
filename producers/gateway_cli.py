"""`batchyard gateway`: the HTTP gateway as a command (registered by `producers.cli`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.console import Console

from schemas.config import ConfigError
from schemas.settings import Settings
from workers.logs import setup_logging

_err = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def gateway(
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback unless you mean to expose it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Endpoints/routes file with a `gateway:` section."),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds in-progress batch ingestions get on SIGTERM.")
    ] = 30.0,
) -> None:
    """Serve the OpenAI-compatible Files/Batches API and native jobs over HTTP."""
    # Imported here: every other command (`run` above all) starts without the gateway (#22).
    from aiohttp import web

    from producers.gateway import create_app, load_gateway_config

    try:
        settings = Settings()
    except ValueError as exc:  # a wrong BATCHYARD_* value
        raise _fail(str(exc)) from None
    setup_logging(settings)
    if not settings.redis_url:
        raise _fail("REDIS_URL is not set: the gateway needs the Redis its workers use")
    try:
        app_config, gateway_config = load_gateway_config(config or settings.config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    probe = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        probe.ping()
    except (redis.RedisError, OSError) as exc:
        raise _fail(f"cannot reach Redis ({exc}); check REDIS_URL") from None
    finally:
        probe.close()
    app = create_app(settings, app_config, gateway_config, grace_s=grace)
    log = logging.getLogger("batchyard.gateway")
    log.info("gateway listening on http://%s:%d", host, port)
    access_log = logging.getLogger("aiohttp.access") if log.isEnabledFor(logging.DEBUG) else None
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            shutdown_timeout=grace,
            print=None,
            access_log=access_log,
        )
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
