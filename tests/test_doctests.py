"""The ``>>>`` examples in the helpers' docstrings run, and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import helpers

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(helpers.__path__, prefix="helpers.") if not name.endswith("__main__")
)
# The pure helpers every notebook leans on: each must show at least one runnable example.
WITH_EXAMPLES = ("helpers.splits", "helpers.evaluation", "helpers.sources", "helpers.settings", "helpers.files")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} fail; run python -m doctest -v on it."


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_pure_helpers_have_examples(name):
    finder = doctest.DocTestFinder()
    examples = sum(len(test.examples) for test in finder.find(importlib.import_module(name)))
    assert examples, f"{name} has no >>> example; add one to the docstring of its main functions."
