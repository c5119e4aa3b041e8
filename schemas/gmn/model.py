"""Pydantic v2 model of a GMN document and of a validation verdict (SPEC §1, §5)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NodeType(StrEnum):
    """The nine GMN node types (SPEC §1.1)."""

    STATE = "state"
    OBSERVATION = "observation"
    ACTION = "action"
    LIKELIHOOD = "likelihood"
    TRANSITION = "transition"
    BELIEF = "belief"
    PREFERENCE = "preference"
    POLICY = "policy"
    LLM_QUERY = "llm_query"


class EdgeType(StrEnum):
    """The five GMN edge types (SPEC §1.2)."""

    DEPENDS_ON = "depends_on"
    GENERATES = "generates"
    INFLUENCES = "influences"
    QUERIES = "queries"
    UPDATES = "updates"


_STRICT = ConfigDict(extra="forbid", strict=True)


class Node(BaseModel):
    """One node; `properties` stays free-form because its keys depend on `type`."""

    model_config = _STRICT

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    type: NodeType = Field(strict=False)
    properties: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] | None = None


class Edge(BaseModel):
    """One directed edge between two node ids."""

    model_config = _STRICT

    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    type: EdgeType = Field(strict=False)
    properties: dict[str, Any] | None = None


class GMNDocument(BaseModel):
    """Typed view of a GMN document; build it from a dict that `validate_gmn` accepted."""

    model_config = _STRICT

    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge]
    name: str | None = Field(default=None, max_length=100)
    id: str | None = None
    description: str | None = None
    version: str | None = None
    metadata: dict[str, Any] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Dump to the canonical JSON form, omitting absent optional fields."""
        out: dict[str, Any] = {
            "nodes": [_drop_none(n.model_dump(mode="json")) for n in self.nodes],
            "edges": [_drop_none(e.model_dump(mode="json")) for e in self.edges],
        }
        for key in ("name", "id", "description", "version", "metadata"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def node(self, node_id: str) -> Node | None:
        """Look a node up by id."""
        return next((n for n in self.nodes if n.id == node_id), None)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


class GMNError(BaseModel):
    """One rule violation: code, JSON path (or `line N`), node id if any, one-sentence message."""

    model_config = ConfigDict(frozen=True)

    code: str
    path: str
    node: str | None = None
    message: str


class ValidationReport(BaseModel):
    """The verdict of `validate_gmn`; `document` is the decoded input (not part of the verdict)."""

    valid: bool
    errors: list[GMNError] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    document: Any = Field(default=None, exclude=True, repr=False)

    @property
    def codes(self) -> list[str]:
        """Distinct error codes in first-seen order, for quick assertions and summaries."""
        return list(dict.fromkeys(e.code for e in self.errors))

    def verdict(self) -> dict[str, Any]:
        """The SPEC §5 verdict object: valid, errors and warnings."""
        return {
            "valid": self.valid,
            "errors": [e.model_dump() for e in self.errors],
            "warnings": list(self.warnings),
        }
