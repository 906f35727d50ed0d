"""What counts as noise in a notebook's outputs: text a student should never meet.

A notebook's outputs should hold what its cells print and show, and a student's own errors;
never library chatter: anything written to stderr (TensorFlow's C++ start-up lines, Python
warnings), and log lines that TensorFlow, absl or Keras print on stdout
(``WARNING:tensorflow:...``, ``W0000 00:00...``). :func:`noise` lists them, so that the
tests executing every notebook fail on the first warning that creeps in, and
:func:`quiet_tensorflow_retracing` drops the one TensorFlow warning the kit's workflow
triggers by design.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# Log lines printed on stdout: Python's logging default format (WARNING:tensorflow:...),
# absl's C++ format (W1128 18:03:45.123 ... or W0000 00:00:...), a formatted Python warning.
_NOISE_LINE = re.compile(
    r"^(WARNING|ERROR|CRITICAL):[\w.]+:"
    r"|^[WEF]\d{4} \d\d:\d\d:\d\d"
    r"|^\S+:\d+: \w*Warning: "
    r"|^WARNING: All log messages before absl"
)


def noise(notebook: Any) -> list[str]:
    """Outputs of an executed notebook that are noise, as ``"cell N: text"`` (empty: clean).

    Errors (``error`` outputs) are not listed: they are the cells' own failures, which the
    tests report apart.

    >>> import nbformat
    >>> cell = nbformat.v4.new_code_cell("x")
    >>> cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="accuracy 0.9\\n"),
    ...                 nbformat.v4.new_output("stream", name="stdout", text="WARNING:tensorflow:5 out of the last 5 calls\\n")]
    >>> noise(nbformat.v4.new_notebook(cells=[cell]))
    ['cell 0: WARNING:tensorflow:5 out of the last 5 calls']
    """
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") != "stream":
                continue
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else str(text)
            if output.get("name") == "stderr":
                if text.strip():
                    found.append(f"cell {index}: (stderr) {text.strip()[:300]}")
                continue
            found += [f"cell {index}: {line[:300]}" for line in text.splitlines() if _NOISE_LINE.search(line)]
    return found


class _DropRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_FILTER = _DropRetracing()


def quiet_tensorflow_retracing() -> None:
    """Drop TensorFlow's "N out of the last N calls ... triggered tf.function retracing" warning.

    The kit builds small models one after the other in one kernel (feature extractors,
    heads, the models compared in notebook 04); each traces its own functions once, which
    TensorFlow counts as retracing and warns about, although nothing is wrong. Only that
    message is dropped; every other warning and error still shows. Idempotent.
    """
    logger = logging.getLogger("tensorflow")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
