"""The contents manager of the kit's JupyterLab servers: notebooks open unmodified.

JupyterLab 4 marks a notebook modified (●) as soon as its kernel starts when the file's
``language_info`` differs from what the kernel reports (the name, version, lexer...). The
kit commits its notebooks with ``language_info`` reduced to ``{"name": "python"}``, the
same on every machine, so this manager fills in, when a notebook is opened, the full
``language_info`` of the kernel that will run it (ipykernel in this environment, the one
the ``tl-workshop`` kernel runs). Nothing is written: the file changes only when the user
saves it. The student's server (:mod:`helpers.lab_server`), the instructor's and a hub's
single-user servers use it (``ServerApp.contents_manager_class``).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

#: The value of ``ServerApp.contents_manager_class`` that selects this manager.
CLASS_NAME = "helpers.unmodified_notebooks.KitContentsManager"


def kernel_language_info() -> dict[str, Any]:
    """The ``language_info`` ipykernel reports in this environment (what JupyterLab writes on save)."""
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


def complete_language_info(notebook: Any) -> bool:
    """Give a Python notebook the kernel's full ``language_info`` when it only names the language.

    Returns:
        Whether the notebook was changed (only in memory).
    """
    metadata = notebook.get("metadata", {})
    info = metadata.get("language_info")
    if info != {"name": "python"} or metadata.get("kernelspec", {}).get("language", "python") != "python":
        return False
    metadata["language_info"] = kernel_language_info()
    return True


class KitContentsManager(AsyncLargeFileManager):
    """JupyterLab's default contents manager, with :func:`complete_language_info` on every notebook read."""

    async def get(self, path: str, content: bool = True, type: str | None = None, format: str | None = None, **kwargs: Any):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if content and model.get("type") == "notebook" and model.get("content") is not None:
            complete_language_info(model["content"])
        return model
