"""The nbgrader steps the kit adds to grading: execution that survives a dying kernel, and feedback
without the hidden tests.

- :func:`guarded_execute` is nbgrader's ``Execute`` step with two changes. A kernel that
  dies (``os._exit``, a crash, the memory limit) costs only the cells that had not run:
  the cell it died in and every later code cell get an error output saying why, and
  grading goes on, so the tests that had passed keep their points. And each cell keeps
  at most :attr:`helpers.sandbox.Limits.output_kb` of output, so a cell that prints
  megabytes cannot fill the grader's memory.
- :func:`hide_tests` is a feedback step: every autograded test cell shows its first
  docstring line instead of its code, and its error as one line (the exception and the
  assertion message) instead of a traceback that would quote the hidden tests.

The classes are built on first use, so importing this module does not import nbgrader.
Taught nowhere (instructor tooling).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from helpers import sandbox

# sandbox id -> what happened while its kernel ran (read by helpers.grading after each submission).
EVENTS: dict[str, list[str]] = {}
KERNEL_DIED = "KernelDied"
NOT_RUN = "NotRun"
HIDDEN_SOURCE = "# The test's code is not shown in the feedback; its result and message are below."


@functools.cache
def guarded_execute() -> type:
    """nbgrader's ``Execute`` step that grades on when the kernel dies and caps each cell's output."""
    from nbclient.exceptions import DeadKernelError
    from nbformat.notebooknode import NotebookNode
    from nbgrader.preprocessors import Execute
    from traitlets import Integer, Unicode

    class GuardedExecute(Execute):
        """Execute every cell; a dead kernel scores the cells that did not run as failed."""

        sandbox_id = Unicode("", config=True, help="Key of this submission's sandbox in helpers.sandbox.ACTIVE.")
        max_output_bytes = Integer(1024 * 1024, config=True, help="Output kept per cell, in bytes.")

        def preprocess(self, nb: Any, resources: Any = None, km: Any = None) -> Any:
            self._current = -1
            self._output_bytes: dict[int, int] = {}
            try:
                return super().preprocess(nb, resources, km)
            except DeadKernelError:
                why = self._why_dead()
                EVENTS.setdefault(self.sandbox_id, []).append(
                    f"the kernel died in cell {self._current} ({why}); that cell and the {self._later(nb)} code "
                    "cell(s) after it score 0"
                )
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code" or index < self._current:
                        continue
                    error = NotebookNode(output_type="error")
                    if index == self._current:
                        error.ename, error.evalue = KERNEL_DIED, f"the kernel died while running this cell: {why}"
                    else:
                        error.ename, error.evalue = NOT_RUN, "not run: the kernel died in an earlier cell"
                    error.traceback = [f"{error.ename}: {error.evalue}"]
                    cell.outputs.append(error)
                return nb, resources

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> Any:
            self._current = index
            return super().preprocess_cell(cell, resources, index)

        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
            size = len(json.dumps(msg.get("content", {}), default=str))
            used = self._output_bytes.get(cell_index, 0)
            self._output_bytes[cell_index] = used + size
            if used + size <= self.max_output_bytes:
                return super().output(outs, msg, display_id, cell_index)
            if used <= self.max_output_bytes:  # first output over the cap: say so once
                EVENTS.setdefault(self.sandbox_id, []).append(
                    f"cell {cell_index} printed more than {self.max_output_bytes // 1024} KB; the rest was dropped"
                )
                note = NotebookNode(output_type="stream", name="stderr")
                note.text = f"\n[output cut by the grader after {self.max_output_bytes // 1024} KB]\n"
                outs.append(note)
            return None

        def _later(self, nb: Any) -> int:
            return sum(1 for i, c in enumerate(nb.cells) if c.cell_type == "code" and i > self._current)

        def _why_dead(self) -> str:
            box = sandbox.ACTIVE.get(self.sandbox_id)
            if box is not None and box.out_of_memory():
                return f"it used more than the memory limit of {box.limits.memory_mb} MB"
            return "the kernel process ended: os._exit, sys.exit in a thread, a crash or a signal"

    return GuardedExecute


def autograde_steps() -> list[Any]:
    """nbgrader's autograde steps with :func:`guarded_execute` in place of ``Execute``."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    return [
        guarded_execute(), IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata,
    ]


def hidden_summary(source: str) -> str:
    """What feedback shows of a test cell: its docstring's first line (what it checks), never its code.

    >>> print(hidden_summary('\"\"\"Checks add.\"\"\"\\nassert add(1, 2) == 3'))
    # Checks add.
    # The test's code is not shown in the feedback; its result and message are below.
    >>> hidden_summary("assert x == 1")
    "# The test's code is not shown in the feedback; its result and message are below."
    """
    import ast

    try:
        tree = ast.parse(source)
        doc = ast.get_docstring(tree) if tree.body else None
    except SyntaxError:
        doc = None
    first = doc.strip().splitlines()[0] if doc and doc.strip() else ""
    return (f"# {first}\n" if first else "") + HIDDEN_SOURCE


@functools.cache
def hide_tests() -> type:
    """A feedback step that replaces each autograded test cell's code and traceback with a summary."""
    from nbgrader import utils
    from nbgrader.preprocessors import NbGraderPreprocessor

    class HideTests(NbGraderPreprocessor):
        """Show a test's docstring, pass/fail, points and assertion message; never its code."""

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
                cell.source = hidden_summary(cell.source)
                for output in cell.get("outputs", []):
                    if output.get("output_type") == "error":
                        message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ")
                        output["traceback"] = [message]
            return cell, resources

    return HideTests


def feedback_steps(show_tests: bool = False) -> list[Any]:
    """nbgrader's feedback steps; unless ``show_tests``, with :func:`hide_tests` last."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades

    return [GetGrades, CSSHTMLHeaderPreprocessor] + ([] if show_tests else [hide_tests()])
