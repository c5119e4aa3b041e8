"""Every GMN example of the spec gets the verdict and rule codes it is documented to get."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from schemas.gmn import GMNDocument, GMNInvalidError, load_gmn, validate_gmn

#: A copy of the brief's gmn/ (SPEC.md, examples, prompts), so every clone runs these tests.
GMN_DATA = Path(__file__).resolve().parents[1] / "data" / "gmn"
EXAMPLES = GMN_DATA / "examples"
INVALID = EXAMPLES / "invalid"


def _valid_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def _invalid_files() -> list[Path]:
    return sorted(INVALID.glob("*.json"))


def _expected_codes(path: Path) -> set[str]:
    text = path.with_name(path.stem + ".expected.txt").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip()}


def test_examples_are_present() -> None:
    assert len(_valid_files()) >= 6, "valid examples missing"
    assert len(_invalid_files()) >= 6, "invalid examples missing"
    assert len(_spec_json_examples()) >= 1, "SPEC.md has no JSON example"
    for path in _invalid_files():
        assert path.with_name(path.stem + ".expected.txt").is_file(), path


@pytest.mark.parametrize("path", _valid_files(), ids=lambda p: p.stem)
def test_valid_example(path: Path) -> None:
    data = path.read_bytes()
    report = validate_gmn(data)
    assert report.valid, [e.model_dump() for e in report.errors]
    assert report.errors == []
    # The same document as text, as a dict and through the typed model gives the same verdict.
    assert validate_gmn(data.decode("utf-8")).valid
    as_dict = json.loads(data)
    assert validate_gmn(as_dict).valid
    model = GMNDocument.model_validate(as_dict)
    assert validate_gmn(model).valid
    assert model.to_json_dict()["nodes"][0]["id"] == as_dict["nodes"][0]["id"]
    assert load_gmn(data).nodes[0].id == as_dict["nodes"][0]["id"]


@pytest.mark.parametrize("path", _invalid_files(), ids=lambda p: p.stem)
def test_invalid_example(path: Path) -> None:
    """The expected file lists the distinct rule codes; we require exactly that set."""
    report = validate_gmn(path.read_bytes())
    assert not report.valid
    expected = _expected_codes(path)
    assert expected, f"{path.name}: empty expected file"
    assert set(report.codes) == expected, [e.model_dump() for e in report.errors]
    for error in report.errors:
        assert error.path.startswith("$")
        assert error.message
    with pytest.raises(GMNInvalidError) as info:
        load_gmn(path.read_bytes())
    assert info.value.report.codes == report.codes


def _spec_json_examples() -> list[str]:
    spec = GMN_DATA / "SPEC.md"
    return re.findall(r"```json\n(.*?)```", spec.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("text", _spec_json_examples())
def test_spec_section6_examples_are_valid(text: str) -> None:
    report = validate_gmn(text)
    assert report.valid, [e.model_dump() for e in report.errors]


def test_spec_section2_text_form_example_is_valid() -> None:
    spec = (GMN_DATA / "SPEC.md").read_text(encoding="utf-8")
    block = spec.split("## 2. The text form", 1)[1].split("```\n", 2)[1]
    assert "[nodes]" in block
    report = validate_gmn(block)
    assert report.valid, [e.model_dump() for e in report.errors]
    assert [n["id"] for n in report.document["nodes"]] == ["cell", "seen", "step", "move_model"]


def test_verdict_shape() -> None:
    report = validate_gmn((INVALID / "dangling_edge_target.json").read_bytes())
    verdict = report.verdict()
    assert set(verdict) == {"valid", "errors", "warnings"}
    assert verdict["valid"] is False
    for error in verdict["errors"]:
        assert set(error) == {"code", "path", "node", "message"}
    dangling = next(e for e in verdict["errors"] if e["code"] == "GMN050")
    assert dangling["path"] == "$.edges[1].target"
    isolated = next(e for e in verdict["errors"] if e["code"] == "GMN054")
    assert isolated["node"] == "seen_cell"
    json.dumps(verdict)
