"""The nbgrader steps the kit adds to grading: execution that survives a dying kernel, and feedback
without the hidden tests.

- :func:`guarded_execute` is nbgrader's ``Execute`` step with three changes. A kernel that
  dies (``os._exit``, a crash, the memory limit) or stops answering (its own machinery
  broken from an answer cell, interrupts ignored) costs only the cells that had not run:
  the cell it died or hung in and every later code cell get an error output saying why,
  grading goes on, so the tests that had passed keep their points, and the submission is
  flagged for a person. A kernel that never starts is the grader's problem: it raises
  :class:`instructor_tools.isolation.sandbox.KernelCannotStart` and nothing is scored. And each cell keeps
  at most :attr:`instructor_tools.isolation.sandbox.Limits.output_kb` of output, so a cell that prints
  megabytes cannot fill the grader's memory.
- Its kernels, like the validator's (:mod:`instructor_tools.course.validation`), import
  :mod:`instructor_tools.grading.comparisons` before their first cell (:data:`PRELOAD_COMPARISONS`),
  so the hidden tests compare with numpy as it was then.
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

from instructor_tools.isolation import sandbox

# sandbox id -> what happened while its kernel ran (read by instructor_tools.grading.grader after each submission).
EVENTS: dict[str, list[str]] = {}
# sandbox id -> what a person should look at (a kernel that died or stopped answering).
FLAGS: dict[str, list[str]] = {}
# sandbox id -> why its kernel never started (the grader's problem: nothing is scored).
NOT_STARTED: dict[str, str] = {}
KERNEL_DIED = "KernelDied"
KERNEL_HUNG = "KernelStoppedAnswering"
KERNEL_NOT_STARTED = "the kernel could not start (the grader's setup, not the submission)"
NOT_RUN = "NotRun"
HIDDEN_SOURCE = "# The test's code is not shown in the feedback; its result and message are below."
# IPython runs this line in every kernel the grader and the validator start, before the first cell: the
# hidden tests' numpy comparisons are captured then, whatever an answer cell rebinds later. It binds no name.
PRELOAD_COMPARISONS = "--IPKernelApp.exec_lines=__import__('instructor_tools.grading.comparisons') and None"


def with_comparisons(arguments: Any) -> list[str]:
    """A kernel's extra arguments with :data:`PRELOAD_COMPARISONS` added once.

    >>> with_comparisons(["--debug"]) == ["--debug", PRELOAD_COMPARISONS]
    True
    >>> with_comparisons([PRELOAD_COMPARISONS]) == [PRELOAD_COMPARISONS]
    True
    """
    arguments = [str(argument) for argument in arguments or []]
    return arguments if PRELOAD_COMPARISONS in arguments else [*arguments, PRELOAD_COMPARISONS]


class _StoppedAnswering(Exception):
    """The kernel stopped answering in cell ``cell`` (raised between cells, caught by the execute step)."""

    def __init__(self, cell: int, why: str) -> None:
        super().__init__(why)
        self.cell = cell


async def _kernel_answers(client: Any, seconds: float) -> bool:
    """Whether the kernel runs an empty cell and replies within ``seconds``."""
    import time

    msg_id = client.execute("", silent=True, store_history=False)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply = await client.get_shell_msg(timeout=left)
        except Exception:  # noqa: BLE001 - queue.Empty or a closed channel: no answer
            return False
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return True
    return False


def _cannot_start(sandbox_id: str, error: BaseException) -> sandbox.KernelCannotStart:
    """The grader's problem, never the student's: the kernel did not start for this submission."""
    box = sandbox.ACTIVE.get(sandbox_id)
    said = sandbox.reason_from_output(box.output.text(wait=2)) if box is not None else "nothing"
    message = f"{KERNEL_NOT_STARTED}: {str(error).splitlines()[0] if str(error) else type(error).__name__}; it said: {said}"
    NOT_STARTED[sandbox_id] = message
    return sandbox.KernelCannotStart(message)


def _why_dead(sandbox_id: str) -> str:
    """Why a kernel died: over its memory limit, or it ended."""
    box = sandbox.ACTIVE.get(sandbox_id)
    if box is not None and box.out_of_memory():
        return f"it used more than the memory limit of {box.limits.memory_mb} MB"
    return "the kernel process ended: os._exit, sys.exit in a thread, a crash or a signal"


def _fail_from_cell(nb: Any, current: int, why: str, died: bool, sandbox_id: str) -> Any:
    """Every code cell from ``current`` on fails with ``why`` (recorded and flagged); earlier cells keep their results."""
    from nbformat.notebooknode import NotebookNode

    what = "died" if died else "stopped answering"
    later = sum(1 for i, c in enumerate(nb.cells) if c.cell_type == "code" and i > current)
    message = f"the kernel {what} in cell {current} ({why}); that cell and the {later} code cell(s) after it score 0"
    EVENTS.setdefault(sandbox_id, []).append(message)
    FLAGS.setdefault(sandbox_id, []).append(message)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or index < current:
            continue
        error = NotebookNode(output_type="error")
        if index == current:
            error.ename = KERNEL_DIED if died else KERNEL_HUNG
            error.evalue = f"the kernel {what} while running this cell: {why}"
        else:
            error.ename, error.evalue = NOT_RUN, f"not run: the kernel {what} in an earlier cell"
        error.traceback = [f"{error.ename}: {error.evalue}"]
        cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"] + [error]
    return nb


def _within_cap(used_by_cell: dict[int, int], outs: list, msg: dict, cell_index: int, cap: int, sandbox_id: str) -> bool:
    """Count one output against its cell's cap; over it, note the cut once and drop the rest."""
    from nbformat.notebooknode import NotebookNode

    size = len(json.dumps(msg.get("content", {}), default=str))
    used = used_by_cell.get(cell_index, 0)
    used_by_cell[cell_index] = used + size
    if used + size <= cap:
        return True
    if used <= cap:  # first output over the cap: say so once
        EVENTS.setdefault(sandbox_id, []).append(f"cell {cell_index} printed more than {cap // 1024} KB; the rest was dropped")
        note = NotebookNode(output_type="stream", name="stderr")
        note.text = f"\n[output cut by the grader after {cap // 1024} KB]\n"
        outs.append(note)
    return False


@functools.cache
def guarded_execute() -> type:
    """nbgrader's ``Execute`` step that grades on when the kernel dies and caps each cell's output."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync
    from nbgrader.preprocessors import Execute
    from traitlets import Integer, Unicode

    class GuardedExecute(Execute):
        """Execute every cell; a dead kernel scores the cells that did not run as failed."""

        sandbox_id = Unicode("", config=True, help="Key of this submission's sandbox in instructor_tools.isolation.sandbox.ACTIVE.")
        max_output_bytes = Integer(1024 * 1024, config=True, help="Output kept per cell, in bytes.")

        answer_timeout = Integer(15, config=True, help="Seconds a kernel has to answer an empty cell after a timeout.")

        def preprocess(self, nb: Any, resources: Any = None, km: Any = None) -> Any:
            self._current = -1
            self._started = False
            self._timed_out: int | None = None
            self._output_bytes: dict[int, int] = {}
            try:
                return super().preprocess(nb, resources, km)
            except DeadKernelError:
                return self._score_from_here(nb, resources, _why_dead(self.sandbox_id), died=True)
            except _StoppedAnswering as stopped:
                self._current = stopped.cell
                return self._score_from_here(nb, resources, str(stopped), died=False)
            except (CellTimeoutError, TimeoutError) as error:
                if not self._started:
                    raise _cannot_start(self.sandbox_id, error) from error
                # The kernel is alive but answers nothing, even to the interrupt: its own
                # machinery was broken from inside (or it ignores interrupts). Graded as a
                # dead kernel from this cell on, and flagged for a person.
                why = f"no reply at the cell's time limit, and nothing in the {self.iopub_timeout} s after the interrupt"
                return self._score_from_here(nb, resources, why, died=False)
            except RuntimeError as error:
                if not self._started:
                    raise _cannot_start(self.sandbox_id, error) from error
                raise

        async def async_start_new_kernel(self, **kwargs: Any) -> None:
            # Here, not in preprocess: nbconvert re-reads extra_arguments from the config when a notebook starts.
            self.extra_arguments = with_comparisons(self.extra_arguments)  # see PRELOAD_COMPARISONS
            await super().async_start_new_kernel(**kwargs)

        start_new_kernel = run_sync(async_start_new_kernel)

        async def _async_handle_timeout(self, timeout: int, cell: Any = None) -> Any:
            self._timed_out = self._current
            return await super()._async_handle_timeout(timeout, cell)

        def _score_from_here(self, nb: Any, resources: Any, why: str, *, died: bool) -> Any:
            """Every code cell from the current one on fails with ``why``; the earlier ones keep their results."""
            return _fail_from_cell(nb, self._current, why, died, self.sandbox_id), resources

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> Any:
            if self._timed_out is not None and cell.cell_type == "code":
                # The last cell was interrupted at its time limit: before going on, the kernel
                # must answer an empty cell, else it stopped answering in that cell (its
                # handlers replaced, interrupts ignored...), and every cell from there scores 0.
                timed_out, self._timed_out = self._timed_out, None
                if not run_sync(_kernel_answers)(self.kc, self.answer_timeout):
                    run_sync(self._async_check_alive)()  # a kernel that died meanwhile is reported as dead
                    raise _StoppedAnswering(
                        timed_out,
                        f"interrupted at the cell's time limit, it then did not run an empty cell within "
                        f"{self.answer_timeout} s",
                    )
            self._current = index
            self._started = True  # cells run only once the kernel has answered kernel_info
            return super().preprocess_cell(cell, resources, index)

        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
            if _within_cap(self._output_bytes, outs, msg, cell_index, self.max_output_bytes, self.sandbox_id):
                return super().output(outs, msg, display_id, cell_index)
            return None


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
