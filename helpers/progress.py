"""Progress bars that read complete wherever a saved notebook is read.

In a notebook, tqdm draws a widget, and the output it saves carries, as the plain-text
fallback of that widget, the text the bar had when it was first shown: ``0%| 0/1628``.
GitHub, nbviewer and nbgrader's feedback HTML have no widget state, so they show that
forever. The kit's bars are displayed with a display id and their output is replaced when
they close, so the saved text is the bar's last state
(``features conv_pw_10_relu: 100%|██████████| 1628/1628 [00:12<00:00, 130img/s]``); a bar
that disappears when done (``leave=False``) leaves that line as plain text. Outside a
notebook (a terminal, the kit's command lines) it is tqdm's usual text bar on stderr.

Used by the kit's own long steps: feature extraction (:mod:`helpers.features`), scoring
(:mod:`helpers.scoring`), the sample-efficiency runs (:mod:`helpers.sample_efficiency`) and
downloads (:mod:`helpers.download`).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Iterable


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    **options: Any,
) -> Any:
    """A tqdm progress bar whose saved notebook output shows how it ended.

    Takes tqdm's arguments and is used like tqdm: iterate over it, or call ``update`` in
    a ``with`` block. In a Jupyter kernel with ipywidgets it is tqdm's widget, re-displayed
    when it closes so that the notebook's plain-text fallback reads the final state; anywhere
    else it is tqdm's text bar on stderr.

    Args:
        iterable: What to iterate over (``None`` for a bar updated by hand).
        total: Expected number of steps (``len(iterable)`` when omitted and available).
        desc: Text in front of the bar.
        unit: What one step is (``img``, ``batch``, ``B``...).
        disable: No bar at all (the kit's ``progress=False`` and ``-q``).
        leave: Keep the bar when done; ``False`` replaces it with one line of text in a
            notebook, and removes it in a terminal.
        **options: Any other tqdm argument (``unit_scale``, ``unit_divisor``...).

    Returns:
        A ``tqdm`` instance.

    Raises:
        TypeError: ``desc`` or ``unit`` is not a string.

    >>> with bar(total=3, desc="steps", disable=True) as steps:
    ...     steps.update(3)
    >>> list(bar([1, 2], disable=True))
    [1, 2]
    """
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"desc must be a string (the text in front of the bar), not {type(desc).__name__}.")
    if not isinstance(unit, str):
        raise TypeError(f"unit must be a string such as 'img' or 'batch', not {type(unit).__name__}.")
    from tqdm.std import tqdm as text_tqdm

    kind = _notebook_bar_class() if _in_notebook() else text_tqdm
    return kind(iterable, total=total, desc=desc, unit=unit, disable=bool(disable), leave=leave, **options)


def _in_notebook() -> bool:
    from tqdm.auto import tqdm as auto_tqdm

    # tqdm.auto picks its widget bar where ipykernel and ipywidgets are imported (tqdm.notebook then is);
    # a process that merely imported ipykernel (a Jupyter server, a test) has no kernel to draw it in.
    notebook = sys.modules.get("tqdm.notebook")
    if notebook is None or not issubclass(auto_tqdm, notebook.tqdm_notebook):
        return False
    ipython = sys.modules.get("IPython")
    return getattr(ipython.get_ipython() if ipython else None, "kernel", None) is not None


@functools.cache
def _notebook_bar_class() -> type:
    from IPython.display import display
    from tqdm.notebook import tqdm_notebook

    class NotebookBar(tqdm_notebook):
        """tqdm's widget, shown with a display id and shown again, as it ended, when it closes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            show = kwargs.pop("display", True)
            self._handle = None
            super().__init__(*args, display=False, **kwargs)
            if show and not self.disable and self.delay <= 0:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            if self.disable:  # already closed (tqdm sets it on close) or never shown
                return
            super().close()
            handle, self._handle = self._handle, None
            if handle is None:
                return
            unfinished = bool(self.total) and self.n < self.total
            if self.leave or unfinished:  # the widget stays: its text/plain now says how far it got
                handle.update(self.container)
            else:  # tqdm hid the widget: one line of text says it finished
                handle.update({"text/plain": repr(self.container)}, raw=True)

    return NotebookBar
