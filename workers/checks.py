"""`batchyard providers check`: call every endpoint's health() once, with one shared session."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from providers.base import HealthStatus
from providers.errors import ProviderError
from providers.registry import endpoint_options, provider_class
from schemas.config import AppConfig


async def check_endpoints(config: AppConfig, timeout_s: float = 10.0) -> dict[str, HealthStatus]:
    """Health of every endpoint; a failing or slow check is reported, never raised."""
    async with aiohttp.ClientSession() as session:

        async def one(name: str) -> HealthStatus:
            cfg = config.endpoints[name]
            provider = provider_class(cfg.provider)(name, cfg, endpoint_options(name, cfg), session)
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    return await provider.health()
            except ProviderError as exc:
                return HealthStatus(
                    ok=False,
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    detail=f"{exc.code}: {exc.message}",
                )
            except TimeoutError:
                return HealthStatus(ok=False, latency_ms=timeout_s * 1000, detail="timed out")
            finally:
                await provider.aclose()

        names = list(config.endpoints)
        return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))
