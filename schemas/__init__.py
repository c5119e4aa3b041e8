"""Pydantic models shared by producers, workers and providers: the wire contract of batchyard."""

from schemas.batch import Batch, BatchCounts, BatchStatus
from schemas.request import LLMRequest, Message, RouteHop
from schemas.result import Attempt, ErrorInfo, LLMResult, ResultStatus, Timings, Usage

__all__ = [
    "Attempt",
    "Batch",
    "BatchCounts",
    "BatchStatus",
    "ErrorInfo",
    "LLMRequest",
    "LLMResult",
    "Message",
    "ResultStatus",
    "RouteHop",
    "Timings",
    "Usage",
]
