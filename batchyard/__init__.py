"""batchyard: batch LLM jobs on Redis queues. Re-exports the public API."""

from producers.client import AsyncClient, Client, SubmitReport
from schemas import Batch, BatchStatus, LLMRequest, LLMResult, Message, RouteHop, Usage

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchStatus",
    "Client",
    "LLMRequest",
    "LLMResult",
    "Message",
    "RouteHop",
    "SubmitReport",
    "Usage",
]
__version__ = "0.1.0"
