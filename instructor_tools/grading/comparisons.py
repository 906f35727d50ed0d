"""Comparisons for the graded tests that a notebook's own code cannot redefine.

Every kernel the grader or the validator starts imports this module before its first cell
(:data:`instructor_tools.grading.preprocessors.PRELOAD_COMPARISONS`), and it keeps numpy's
comparison functions as they were then; the students' setup cell imports no grading code. A submission that rebinds
``np.allclose`` or ``np.array_equal`` to always answer True fools a test that calls
them through ``np``; the hidden tests call :func:`allclose` and :func:`array_equal`
here instead, so they still see the wrong answer. (Rebinding these functions too is
possible, and is what the grader's static tamper check flags: :mod:`instructor_tools.grading.tamper`.)

Taught nowhere: the hidden tests of notebooks 01-04 use it.

>>> allclose([1.0, 2.0], [1.0, 2.0 + 1e-9])
True
>>> array_equal([1, 2], [1, 3])
False
>>> allclose([float("nan"), 1.0], [float("nan"), 1.0], equal_nan=True)
True
"""

from __future__ import annotations

from typing import Any

import numpy

# Captured when the module is first imported (at kernel start, before any cell).
_ALLCLOSE = numpy.allclose
_ARRAY_EQUAL = numpy.array_equal
_ASARRAY = numpy.asarray


def allclose(actual: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """numpy's ``allclose`` as it was before the notebook ran (same arguments and defaults)."""
    return bool(_ALLCLOSE(_ASARRAY(actual), _ASARRAY(expected), rtol=rtol, atol=atol, equal_nan=equal_nan))


def array_equal(actual: Any, expected: Any, equal_nan: bool = False) -> bool:
    """numpy's ``array_equal`` as it was before the notebook ran."""
    return bool(_ARRAY_EQUAL(_ASARRAY(actual), _ASARRAY(expected), equal_nan=equal_nan))

