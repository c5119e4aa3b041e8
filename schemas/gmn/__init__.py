"""GMN (Generative Model Notation): document model, parsers and validator (see SPEC.md)."""

from .bench import validator_benchmark_document
from .jsonstrict import StrictJSONError, loads_strict
from .model import (
    Edge,
    EdgeType,
    GMNDocument,
    GMNError,
    Node,
    NodeType,
    ValidationReport,
)
from .parse import Decoded, Extraction, decode_gmn, extract_document
from .rules_graph import edge_allowed
from .textform import TextFormError, parse_text_form
from .validate import GMNInvalidError, load_gmn, validate_gmn, validate_reply

__all__ = [
    "Decoded",
    "Edge",
    "EdgeType",
    "Extraction",
    "GMNDocument",
    "GMNError",
    "GMNInvalidError",
    "Node",
    "NodeType",
    "StrictJSONError",
    "TextFormError",
    "ValidationReport",
    "decode_gmn",
    "edge_allowed",
    "extract_document",
    "load_gmn",
    "loads_strict",
    "parse_text_form",
    "validate_gmn",
    "validate_reply",
    "validator_benchmark_document",
]
