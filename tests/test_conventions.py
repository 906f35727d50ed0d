"""Project conventions a Python user expects: the kit speaks of its own files only, a licence, declared dependencies."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "helpers").rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def test_no_source_points_at_the_documents_the_kit_was_modelled_on():
    """Docstrings and tests describe a source ("the Dataiku lab's recipe") instead of a path outside the repository."""
    marker = "shared/" + "reference"  # split, so this file does not match itself
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if marker in line
    ]
    assert not offenders, f"references outside the repository: {offenders}; describe the source instead of its path."
