"""The static tamper check: code in a submission that a person should look at before trusting its score.

The sandbox (:mod:`instructor_tools.isolation.sandbox`) stops a submission from reaching other files,
the network or other processes; it cannot stop code from fooling the tests it runs
beside. This check reads each cell the student could edit (answers and cells they
added; locked cells are restored from the source before grading) and lists:

- ``patches``: rebinding a name or attribute of a module or of the builtins the tests
  rely on (``np.allclose = ...``, ``builtins.len = ...``, ``setattr(np, ...)``,
  ``sys.modules[...] = ...``, ``get_ipython().showtraceback = ...``,
  ``sys.excepthook = ...``);
- ``exits``: ending or killing the kernel (``os._exit``, ``sys.exit``, ``os.kill``,
  ``signal.signal``, ``ctypes``...);
- ``outside``: reaching for files outside the notebook's folder (absolute paths, ``..``,
  the gradebook or the course's grading folders), running shell commands, opening
  sockets;
- ``reference``: answering an exercise by calling a kit function of the same name
  (``heads.build_head`` inside ``def build_head``) or one that does the same in another form
  (:data:`KIT_LOOKALIKES`: ``scoring.top_labels`` inside ``def top_k_with_threshold``);
- ``instructor``: importing the instructor's package, :mod:`instructor_tools` (``import``,
  ``from ... import``, ``importlib.import_module`` or ``__import__`` with its name, or any
  string naming it): a submission never needs grading code, and the hidden tests' own
  comparisons live there.

Scores are never changed automatically; the grading report and the grade export list
each finding with its cell and line, and the instructor decides.

>>> [f.kind for f in scan_source("import numpy as np\\nnp.allclose = lambda *a, **k: True")]
['patches']
>>> scan_source("def f(x):\\n    return x + 1")
[]
>>> [f.why for f in scan_source("open('../../../gradebook.db')")][0]
"open('../../../gradebook.db') reaches outside the notebook's folder"
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any, Iterable

# Modules whose attributes the tests use (rebinding them can make a wrong answer pass).
GUARDED_MODULES = {
    "numpy", "np", "builtins", "sys", "math", "pandas", "pd", "tensorflow", "tf", "keras", "sklearn",
    "helpers", "IPython", "unittest", "pytest", "operator", "functools", "inspect", "importlib", "instructor_tools",
}
INSTRUCTOR_PACKAGE = "instructor_tools"
# The kit's functions that do what an exercise asks in another form (a batch, the course settings, blocks
# instead of phases): called inside the exercise's own def, they answer it with the kit's code.
KIT_LOOKALIKES = {
    "top_k_with_threshold": {"top_labels"},
    "results_table": {"Scores", "table", "top_labels"},
    "freeze_for_phase": {"freeze_all_but_last_blocks"},
    "compile_with_label_smoothing": {"compile_model"},
    "build_small_cnn": {"small_cnn"},
    "raw_pixels": {"raw_pixel_features"},
    "label_from_name": {"label_rule"},
}
IMPORT_CALLS = {"__import__", "importlib.import_module", "importlib.__import__", "importlib.util.find_spec"}
EXIT_CALLS = {
    "os._exit", "os.abort", "os.kill", "os.killpg", "sys.exit", "exit", "quit", "signal.signal", "signal.alarm",
    "signal.setitimer", "signal.pthread_kill", "faulthandler._sigsegv", "os.fork", "os.forkpty",
}
SHELL_CALLS = {
    "os.system", "os.popen", "os.execv", "os.execve", "os.execvp", "os.spawnl", "os.spawnv", "subprocess.run",
    "subprocess.Popen", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
    "get_ipython.system", "get_ipython.getoutput", "pty.spawn",
}
RISKY_MODULES = {"ctypes", "socket", "urllib", "http", "requests", "ssl", "multiprocessing", "gc", "resource", "pty"}
GRADING_NAMES = ("gradebook", "solutions", "submitted", "autograded", "feedback", "nbgrader", "release", "exchange")
# String constants that name places outside a notebook's folder: the grader's or another user's files.
OUTSIDE_PATH = re.compile(
    r"^(~|/(home|root|etc|tmp|work|srv|var|usr|proc|sys|dev|mnt|opt|media|Users|data|private)(/|$))"
    r"|(^|/)\.\./|/\.\.$|gradebook\.db"
)
IPYTHON_HOOKS = {"showtraceback", "showsyntaxerror", "set_custom_exc", "run_cell", "events", "excepthook"}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing a person should look at.

    Attributes:
        kind: ``patches``, ``exits``, ``outside``, ``reference`` or ``instructor``.
        line: Line number within the cell (1-based).
        code: The line of code, stripped.
        why: What it does, in words.
        cell: Index of the cell in the notebook (-1 when scanning bare source).
        grade_id: The cell's nbgrader grade_id, if any.
    """

    kind: str
    line: int
    code: str
    why: str
    cell: int = -1
    grade_id: str = ""

    def describe(self) -> str:
        where = f"cell {self.cell}" + (f" ({self.grade_id})" if self.grade_id else "") if self.cell >= 0 else "source"
        return f"[{self.kind}] {where}, line {self.line}: {self.why}: {self.code}"


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of names and attributes (calls read as their function), else ""."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        else:
            return ""


class _Visitor(ast.NodeVisitor):
    def __init__(self, lines: list[str], reference: dict[str, str]) -> None:
        self.lines = lines
        self.reference = reference  # name -> module, for names of the kit's functions
        self.aliases: dict[str, str] = {}  # local name -> module it stands for
        self.kit_names: dict[str, str] = {}  # local name -> helpers.<module>.<name>
        self.defining: list[str] = []
        self.found: list[Finding] = []

    def add(self, kind: str, node: ast.AST, why: str) -> None:
        line = getattr(node, "lineno", 1)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        self.found.append(Finding(kind, line, code[:160], why))

    def module_of(self, name: str) -> str:
        root = name.split(".")[0]
        return self.aliases.get(root, root)

    # imports ------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            if alias.asname:
                self.aliases[alias.asname] = alias.name  # import numpy as np
            else:
                self.aliases[top] = top  # import os.path binds os
            if top in RISKY_MODULES:
                kind = "outside" if top in {"socket", "urllib", "http", "requests", "ssl"} else "exits"
                self.add(kind, node, f"imports {alias.name}")
            if top == INSTRUCTOR_PACKAGE:
                self.add("instructor", node, f"imports {alias.name}, the instructor's package")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            local = alias.asname or alias.name
            if module.split(".")[0] == "helpers":
                self.kit_names[local] = f"{module}.{alias.name}"
                self.aliases[local] = f"{module}.{alias.name}"
            else:
                self.aliases[local] = f"{module}.{alias.name}"
            if module.split(".")[0] in RISKY_MODULES:
                self.add("exits", node, f"imports {alias.name} from {module}")
            if module.split(".")[0] == INSTRUCTOR_PACKAGE:
                self.add("instructor", node, f"imports {alias.name} from {module}, the instructor's package")

    # rebinding ----------------------------------------------------------------
    def _check_target(self, target: ast.AST, node: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._check_target(element, node)
            return
        if isinstance(target, ast.Name):
            if target.id in {"__builtins__", "__import__", "get_ipython"}:
                self.add("patches", node, f"rebinds {target.id}")
            return
        name = _dotted(target)
        if not name:
            return
        module = self.module_of(name)
        if name.startswith(("sys.modules", "sys.excepthook", "sys.settrace", "sys.setprofile", "sys.displayhook")):
            self.add("patches", node, f"rebinds {name}")
        elif name.startswith("get_ipython") and name.split(".")[-1] in IPYTHON_HOOKS:
            self.add("patches", node, f"changes IPython's {name.split('.')[-1]}")
        elif isinstance(target, (ast.Attribute, ast.Subscript)) and (
            module.split(".")[0] in GUARDED_MODULES | {"helpers"} or name.split(".")[0] in self.reference
        ):
            self.add("patches", node, f"rebinds {name} (the tests use {module.split('.')[0]})")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_target(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if not isinstance(target, ast.Name):
                self._check_target(target, node)
        self.generic_visit(node)

    # definitions ----------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.defining.append(node.name)
        self.generic_visit(node)
        self.defining.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and OUTSIDE_PATH.search(node.value):
            self.add("outside", node, f"names a path outside the notebook's folder ({node.value[:60]!r})")
        if isinstance(node.value, str) and node.value.split(".")[0] == INSTRUCTOR_PACKAGE:
            self.add("instructor", node, f"names the instructor's package ({node.value[:60]!r})")

    # calls ------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        resolved = self._resolve(name)
        if resolved in EXIT_CALLS or name in {"exit", "quit"}:
            self.add("exits", node, f"calls {resolved or name}")
        elif resolved in SHELL_CALLS or name.startswith("get_ipython") and name.split(".")[-1] in {"system", "getoutput"}:
            self.add("outside", node, f"runs a shell command ({resolved or name})")
        elif name.startswith("get_ipython") and name.split(".")[-1] in {"set_custom_exc", "register"}:
            self.add("patches", node, f"changes IPython's error handling ({name})")
        elif name in {"setattr", "delattr"} and node.args:
            owner = self.module_of(_dotted(node.args[0]))
            if owner.split(".")[0] in GUARDED_MODULES | {"helpers"}:
                self.add("patches", node, f"{name} on {_dotted(node.args[0])} (the tests use it)")
        elif name in {"__import__", "importlib.reload", "exec", "eval", "compile"} and resolved != "":
            if name != "eval" or not (node.args and isinstance(node.args[0], ast.Constant)):
                self.add("patches", node, f"calls {name} (code the check cannot read)")
        if (resolved in IMPORT_CALLS or name in IMPORT_CALLS) and node.args and isinstance(node.args[0], ast.Constant):
            target = str(node.args[0].value)
            if target.split(".")[0] == INSTRUCTOR_PACKAGE:
                self.add("instructor", node, f"imports {target}, the instructor's package, through {resolved or name}")
        self._check_reference(node, name)
        self._check_paths(node, name)
        self.generic_visit(node)

    def _resolve(self, name: str) -> str:
        if not name:
            return ""
        root, _, rest = name.partition(".")
        base = self.aliases.get(root, root)
        return f"{base}.{rest}" if rest else base

    def _check_reference(self, node: ast.Call, name: str) -> None:
        if not self.defining or not name:
            return
        resolved = self._resolve(name)
        function = (resolved or name).split(".")[-1]
        is_kit = resolved.startswith("helpers.") or name in self.kit_names or (
            "." in name and self.module_of(name).startswith("helpers")
        )
        if not is_kit and "." in name and name.split(".")[0] in self.reference.values():
            is_kit = True  # e.g. `heads.build_head` after `from helpers import heads`
        if is_kit and function in self.defining:
            self.add("reference", node, f"answers {function} by calling the kit's {resolved or name}")
            return
        answered = [exercise for exercise in self.defining if function in KIT_LOOKALIKES.get(exercise, ())]
        if is_kit and answered:
            self.add("reference", node, f"answers {answered[-1]} with the kit's {resolved or name}, which does the same")

    def _check_paths(self, node: ast.Call, name: str) -> None:
        function = name.split(".")[-1]
        if function not in {"open", "Path", "listdir", "scandir", "glob", "rglob", "iglob", "read_text", "read_bytes",
                            "write_text", "write_bytes", "copy", "copyfile", "copytree", "rmtree", "remove", "unlink",
                            "rename", "replace", "connect", "read_csv", "load", "read", "walk", "chdir", "symlink"}:
            return
        for argument in list(node.args) + [k.value for k in node.keywords]:
            for constant in ast.walk(argument):
                if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                    text = constant.value
                    lowered = text.lower()
                    if text.startswith(("/", "~")) or ".." in text.replace("\\", "/").split("/") or any(
                        word in lowered for word in GRADING_NAMES
                    ):
                        self.add("outside", node, f"{function}({text!r}) reaches outside the notebook's folder")
                        return


def _python_source(source: str) -> str:
    """IPython cell source as Python (magics and ``!shell`` lines become calls)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - an odd cell is read as it is
        return source


def scan_source(source: str, *, reference: dict[str, str] | None = None) -> list[Finding]:
    """Findings in one cell's source (IPython syntax allowed). Unparsable code finds nothing.

    Args:
        source: The cell's code.
        reference: Names of the kit's modules imported as modules (``{"heads": "heads"}``),
            to catch calls such as ``heads.build_head``; every ``helpers.*``
            import is recognised without it.
    """
    python = _python_source(source)
    try:
        tree = ast.parse(python)
    except (SyntaxError, ValueError):
        return []
    visitor = _Visitor(python.splitlines(), dict(reference or {}))
    visitor.visit(tree)
    unique: dict[tuple[str, int], Finding] = {}
    for finding in visitor.found:  # one finding of a kind per line is enough for a person to look
        unique.setdefault((finding.kind, finding.line), finding)
    return sorted(unique.values(), key=lambda f: (f.line, f.kind))


def _kit_modules(cells: Iterable[str]) -> dict[str, str]:
    """Local names bound to the kit's modules anywhere in the notebook (``from helpers import scoring``)."""
    names: dict[str, str] = {}
    for source in cells:
        try:
            tree = ast.parse(_python_source(source))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "helpers":
                for alias in node.names:
                    names[alias.asname or alias.name] = alias.asname or alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("helpers.") and alias.asname:
                        names[alias.asname] = alias.asname
    return names


def scan_notebook(notebook: Any) -> list[Finding]:
    """Findings in every cell a student could edit (answer cells and cells without nbgrader metadata).

    Args:
        notebook: An ``nbformat`` notebook (a submission).
    """
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    reference = _kit_modules(sources)
    findings: list[Finding] = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("locked") and not meta.get("solution"):
            continue  # restored from the source before grading
        for finding in scan_source(cell.source, reference=reference):
            findings.append(dataclasses.replace(finding, cell=index, grade_id=str(meta.get("grade_id", ""))))
    return findings
