"""Look-alike submissions: pairs whose answer cells are more alike than the class makes likely.

Each submission's answer cells (nbgrader's code cells marked ``solution``) are read as
Python tokens and normalised: comments, blank lines and layout are dropped, every name a
student chooses becomes ``V`` (keywords, builtins and attribute names stay) and every
string ``S``, so renaming variables or rewording comments changes nothing. The lines of
the release's own answer cells (the template every student starts from: the ``def``
line, the docstring, ``raise NotImplementedError()``) are removed from each answer.

What is left is cut into runs of a few tokens; a run is worth less the more students
have it (``log((n + 1) / students with it)``), so the code everyone writes counts for
almost nothing and a pair is close only when it shares what the rest of the class does
not. In each answer cell, a pair's similarity is the worth of the runs both have over
the worth of the runs either has (0 to 1); the pair's similarity is the mean over the
cells where either wrote something of their own, so one exercise solved the same way
by chance does not make a copy (the most alike cell is reported too). Pairs at or
above ``min_similarity`` that share at least ``min_shared_lines`` lines are flagged
for a person to look at. Nothing is decided
automatically: the report shows the shared lines side by side. Taught nowhere
(instructor tooling).
"""

from __future__ import annotations

import builtins
import csv
import dataclasses
import difflib
import html
import io
import itertools
import keyword
import math
import re
import tokenize
from pathlib import Path
from typing import Any, Mapping

from helpers.files import atomic_path, atomic_write
from instructor_tools.course.course_folder import load_config, release_notebook, resolve_root

KEPT_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
RUN = 4  # tokens per run: long enough to mean something, short enough to survive a reordering
CSV_COLUMNS = ("student_a", "student_b", "similarity", "most_alike_cell", "cell_similarity", "flagged", "shared_lines", "cells")
_WORD = re.compile(r"[A-Za-z_]\w*")


@dataclasses.dataclass(frozen=True)
class Line:
    """One logical line of an answer: its normalised tokens and its text as the student wrote it."""

    tokens: tuple[str, ...]
    text: str

    @property
    def key(self) -> str:
        return " ".join(self.tokens)


def _token_text(token: tokenize.TokenInfo, previous: str) -> str:
    if token.type == tokenize.NAME:
        return token.string if token.string in KEPT_NAMES or previous == "." else "V"
    if token.type == tokenize.STRING or token.type in _FSTRING_TYPES:
        return "S"
    return token.string


_FSTRING_TYPES = {getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, name)}


def normalise(source: str) -> list[Line]:
    """An answer's logical lines, normalised (names ``V``, strings ``S``, no comments or layout).

    >>> [line.key for line in normalise("total = 0  # start\\nfor x in values:\\n    total += x\\n")]
    ['V = 0', 'for V in V :', 'V += V']
    >>> [line.key for line in normalise("s=0\\nfor item in data :   total_of(item.size)")]
    ['V = 0', 'for V in V : V ( V . size )']
    """
    lines: list[Line] = []
    source_lines = source.splitlines()
    tokens: list[str] = []
    first_row = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NEWLINE:
                if tokens:
                    text = "\n".join(source_lines[first_row - 1 : token.start[0]]).strip()
                    lines.append(Line(tuple(tokens), text))
                tokens, first_row = [], None
                continue
            if token.type in SKIPPED_TOKENS:
                continue
            first_row = token.start[0] if first_row is None else first_row
            tokens.append(_token_text(token, tokens[-1] if tokens else ""))
        if tokens:
            lines.append(Line(tuple(tokens), "\n".join(source_lines[first_row - 1 :]).strip()))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _normalise_roughly(source)
    return lines


def _normalise_roughly(source: str) -> list[Line]:
    """Line by line, for code Python cannot tokenise (an unclosed bracket...)."""
    lines = []
    for raw in source.splitlines():
        code = raw.split("#", 1)[0].strip()
        if code:
            words = _WORD.sub(lambda m: m.group(0) if m.group(0) in KEPT_NAMES else "V", code)
            lines.append(Line(tuple(re.findall(r"\w+|[^\w\s]", words)), raw.strip()))
    return lines


def answer_cells(notebook: Any) -> dict[str, str]:
    """grade_id -> source of every code answer cell (a duplicated cell's copies joined).

    >>> import nbformat
    >>> cell = nbformat.v4.new_code_cell("x = 1")
    >>> cell.metadata["nbgrader"] = {"solution": True, "grade_id": "ex1"}
    >>> answer_cells(nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell("y = 2")]))
    {'ex1': 'x = 1'}
    """
    found: dict[str, str] = {}
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") == "code" and meta.get("solution") and meta.get("grade_id"):
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            found[meta["grade_id"]] = found[meta["grade_id"]] + "\n" + source if meta["grade_id"] in found else source
    return found


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two submissions compared.

    Attributes:
        similarity: 0 (nothing rare in common) to 1 (the same code once normalised), the
            mean over the cells either answered.
        cell_similarity: grade_id -> that cell's similarity.
        shared: ``(grade_id, a's line, b's line)`` for each line both have (template excluded).
        flagged: Above the threshold, with enough shared lines: for a person to look at.
    """

    student_a: str
    student_b: str
    similarity: float
    cell_similarity: dict[str, float]
    shared: tuple[tuple[str, str, str], ...]
    flagged: bool

    @property
    def most_alike_cell(self) -> str:
        return max(self.cell_similarity, key=lambda g: (self.cell_similarity[g], g), default="")

    @property
    def cells(self) -> list[str]:
        return sorted({grade_id for grade_id, _, _ in self.shared})


@dataclasses.dataclass
class Report:
    """Every pair of a class, most alike first, and the submissions that could not be read."""

    assignment: str
    students: list[str]
    pairs: list[Pair]
    skipped: dict[str, str]
    min_similarity: float

    @property
    def flagged(self) -> list[Pair]:
        return [pair for pair in self.pairs if pair.flagged]


def _answers_without_template(notebook: Any, template: Mapping[str, set[str]]) -> dict[str, list[Line]]:
    return {
        grade_id: [line for line in normalise(source) if line.key not in template.get(grade_id, set())]
        for grade_id, source in answer_cells(notebook).items()
    }


def _runs(answers: Mapping[str, list[Line]]) -> set[tuple[str, tuple[str, ...]]]:
    runs: set[tuple[str, tuple[str, ...]]] = set()
    for grade_id, lines in answers.items():
        tokens = [token for line in lines for token in (*line.tokens, "\n")]
        if 0 < len(tokens) < RUN:
            runs.add((grade_id, tuple(tokens)))
        runs.update((grade_id, tuple(tokens[i : i + RUN])) for i in range(len(tokens) - RUN + 1))
    return runs


def _shared_lines(a: Mapping[str, list[Line]], b: Mapping[str, list[Line]]) -> list[tuple[str, str, str]]:
    shared = []
    for grade_id in sorted(set(a) & set(b)):
        left, right = a[grade_id], b[grade_id]
        matcher = difflib.SequenceMatcher(None, [x.key for x in left], [x.key for x in right], autojunk=False)
        for block in matcher.get_matching_blocks():
            shared += [(grade_id, left[block.a + i].text, right[block.b + i].text) for i in range(block.size)]
    return shared


def compare(
    notebooks: Mapping[str, Any],
    template: Any | None = None,
    *,
    assignment: str = "",
    min_similarity: float = 0.7,
    min_shared_lines: int = 2,
) -> Report:
    """Compare every pair of submissions of one assignment.

    Args:
        notebooks: student -> ``nbformat`` notebook as submitted.
        template: The release notebook (its answer cells' lines are excluded).
        assignment: Its name, for the report.
        min_similarity: Similarity (0-1) from which a pair is flagged.
        min_shared_lines: Lines (template excluded) a flagged pair must share.

    Returns:
        A :class:`Report`, pairs most alike first.
    """
    if not 0 < min_similarity <= 1:
        raise ValueError(f"min_similarity must be above 0 and at most 1, not {min_similarity}.")
    if min_shared_lines < 1:
        raise ValueError(f"min_shared_lines must be at least 1, not {min_shared_lines}.")
    template_keys = {g: {line.key for line in normalise(s)} for g, s in answer_cells(template).items()} if template else {}
    answers = {student: _answers_without_template(nb, template_keys) for student, nb in sorted(notebooks.items())}
    runs = {student: _runs(found) for student, found in answers.items()}
    count = len(runs)
    holders: dict[tuple[str, tuple[str, ...]], int] = {}
    for found in runs.values():
        for run in found:
            holders[run] = holders.get(run, 0) + 1
    worth = {run: math.log((count + 1) / n) for run, n in holders.items()}
    pairs = []
    for a, b in itertools.combinations(sorted(runs), 2):
        cells: dict[str, float] = {}
        for grade_id in sorted({g for g, _ in runs[a] | runs[b]}):
            union = sum(worth[r] for r in runs[a] | runs[b] if r[0] == grade_id)
            if union > 0:
                cells[grade_id] = round(sum(worth[r] for r in runs[a] & runs[b] if r[0] == grade_id) / union, 4)
        similarity = sum(cells.values()) / len(cells) if cells else 0.0
        shared = _shared_lines(answers[a], answers[b]) if similarity > 0 else []
        flagged = similarity >= min_similarity and len(shared) >= min_shared_lines
        pairs.append(Pair(a, b, round(similarity, 4), cells, tuple(shared), flagged))
    pairs.sort(key=lambda p: (-p.similarity, p.student_a, p.student_b))
    return Report(assignment, sorted(runs), pairs, {}, min_similarity)


def class_report(
    assignment: str,
    *,
    root: Path | str | None = None,
    min_similarity: float = 0.7,
    min_shared_lines: int = 2,
) -> Report:
    """Compare the submissions in ``submitted/<student>/<assignment>/`` (as handed in), the release's
    answer cells (``notebooks/<assignment>/``) excluded. An unreadable submission is listed in
    :attr:`Report.skipped`, never guessed."""
    import nbformat

    root = resolve_root(root)
    submitted = root / str(load_config(root).CourseDirectory.submitted_directory)
    release = release_notebook(assignment, root)
    if not release.is_file():
        raise FileNotFoundError(f"{release} is missing (the template to exclude); run: python -m instructor_tools generate {assignment}")
    template = nbformat.read(release, as_version=4)
    notebooks: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for path in sorted(submitted.glob(f"*/{assignment}/{assignment}.ipynb")):
        student = path.parent.parent.name
        try:
            notebooks[student] = nbformat.read(path, as_version=4)
        except Exception as error:  # noqa: BLE001 - any unreadable file is listed, the class goes on
            skipped[student] = f"not a readable notebook ({type(error).__name__})"
    if not notebooks and not skipped:
        raise FileNotFoundError(f"no submissions of {assignment} in {submitted}.")
    report = compare(
        notebooks, template, assignment=assignment, min_similarity=min_similarity, min_shared_lines=min_shared_lines
    )
    report.skipped = skipped
    return report


def _rows(report: Report) -> list[list[str]]:
    return [list(CSV_COLUMNS)] + [
        [
            p.student_a, p.student_b, f"{p.similarity:.3f}", p.most_alike_cell,
            f"{p.cell_similarity.get(p.most_alike_cell, 0.0):.3f}", "yes" if p.flagged else "", str(len(p.shared)),
            " ".join(p.cells),
        ]
        for p in report.pairs
    ]


def to_html(report: Report, *, others: int = 10) -> str:
    """The report as a self-contained HTML page: each flagged pair's shared lines side by side,
    then the ``others`` most alike pairs that were not flagged."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Look-alike submissions: {escape(report.assignment)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;vertical-align:top}pre{margin:0;white-space:pre-wrap}.flag{color:#a00}</style></head><body>",
        f"<h1>Look-alike submissions: {escape(report.assignment)}</h1>",
        f"<p>{len(report.students)} submissions, {len(report.pairs)} pairs; {len(report.flagged)} flagged at a "
        f"similarity of {report.min_similarity:g} or more. Names, comments, strings and layout are ignored and the "
        "release's template is left out; code that many students share counts for little. A flag asks a person to "
        "look: it decides nothing.</p>",
    ]
    for student, why in sorted(report.skipped.items()):
        parts.append(f"<p class='flag'>Not compared: {escape(student)}: {escape(why)}</p>")
    for pair in report.flagged:
        parts.append(
            f"<h2 class='flag'>{escape(pair.student_a)} and {escape(pair.student_b)}: similarity {pair.similarity:.2f}</h2>"
            f"<table><tr><th>cell</th><th>{escape(pair.student_a)}</th><th>{escape(pair.student_b)}</th></tr>"
        )
        parts += [
            f"<tr><td>{escape(cell)}</td><td><pre>{escape(left)}</pre></td><td><pre>{escape(right)}</pre></td></tr>"
            for cell, left, right in pair.shared
        ]
        parts.append("</table>")
    rest = [pair for pair in report.pairs if not pair.flagged][:others]
    if rest:
        parts.append("<h2>The most alike pairs not flagged</h2><table><tr><th>pair</th><th>similarity</th>"
                     "<th>most alike cell</th><th>shared lines</th></tr>")
        parts += [
            f"<tr><td>{escape(p.student_a)} / {escape(p.student_b)}</td><td>{p.similarity:.2f}</td>"
            f"<td>{escape(p.most_alike_cell)} ({p.cell_similarity.get(p.most_alike_cell, 0.0):.2f})</td>"
            f"<td>{len(p.shared)}</td></tr>"
            for p in rest
        ]
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(report: Report, output: Path | str) -> dict[str, Path]:
    """Write ``<output>.html`` and ``<output>.csv`` (every pair, most alike first), each atomically.

    Returns:
        ``{"html": path, "csv": path}``.
    """
    base = Path(output).resolve()
    base = base.with_suffix("") if base.suffix in {".html", ".csv"} else base
    paths = {"html": base.with_name(base.name + ".html"), "csv": base.with_name(base.name + ".csv")}
    with atomic_path(paths["csv"]) as temporary:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(_rows(report))
    atomic_write(paths["html"], to_html(report))
    return paths
