"""Producers: client API, bulk submit, collectors and the CLI. Never imports adapters."""

from producers.client import AsyncClient, Client, SubmitReport

__all__ = ["AsyncClient", "Client", "SubmitReport"]
