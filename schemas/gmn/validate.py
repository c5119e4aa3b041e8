"""GMN validation procedure (SPEC §3): phase A decoding, then phases B-F with phase gating."""

from __future__ import annotations

from typing import Any

from ._common import err
from .model import GMNDocument, GMNError, ValidationReport
from .parse import decode_gmn, extract_document
from .rules_graph import check_dimensions, check_graph
from .rules_properties import check_properties
from .rules_structure import check_shape, check_structure


def _report(
    errors: list[GMNError], document: Any = None, warnings: list[str] | None = None
) -> ValidationReport:
    return ValidationReport(
        valid=not errors, errors=errors, warnings=warnings or [], document=document
    )


def _run_phases(doc: dict[str, Any]) -> list[GMNError]:
    errors = check_shape(doc)
    if errors:
        return errors
    errors = check_structure(doc)
    if errors:
        return errors
    errors = check_properties(doc) + check_graph(doc)
    if errors:
        return errors
    return check_dimensions(doc)


def validate_gmn(doc_or_text: Any) -> ValidationReport:
    """Validate bytes, text (JSON or text form), a dict or a GMNDocument, reporting every error."""
    try:
        decoded = decode_gmn(doc_or_text)
        if decoded.document is None:
            return _report(decoded.errors)
        return _report(_run_phases(decoded.document), decoded.document)
    except Exception as exc:  # the validator never raises (SPEC §5); this is a last resort
        message = f"validator could not process the input ({type(exc).__name__})"
        return _report([err("GMN001", "$", message)])


def validate_reply(reply_text: str) -> ValidationReport:
    """Extract a document from an LLM reply and validate it; extraction notes become warnings."""
    extraction = extract_document(reply_text)
    source: Any = extraction.document if extraction.document is not None else extraction.text
    report = validate_gmn(source)
    report.warnings.extend(extraction.problems)
    return report


class GMNInvalidError(ValueError):
    """Raised by `load_gmn` for an invalid document; `report` holds every error."""

    def __init__(self, report: ValidationReport) -> None:
        first = report.errors[0] if report.errors else None
        summary = f"{first.code} at {first.path}: {first.message}" if first else "invalid"
        super().__init__(f"invalid GMN document ({len(report.errors)} errors; {summary})")
        self.report = report


def load_gmn(doc_or_text: Any) -> GMNDocument:
    """Validate and return the typed document, so consumers never handle an invalid one."""
    report = validate_gmn(doc_or_text)
    if not report.valid:
        raise GMNInvalidError(report)
    return GMNDocument.model_validate(report.document)
