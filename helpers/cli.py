"""The students' command line: ``python -m helpers <command>`` (also installed as ``tlkit``).

The setup check, the caches, the student's JupyterLab and the lab's recipes on your own
images. The instructor's commands (course pipeline, grading, hub, bundle) are
``python -m instructor_tools <command>``, which reuses :func:`run_command`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from helpers import session
from helpers.settings import load_settings

# command -> (module:function, one-line help). Each function takes the parsed
# arguments' leftover list and returns an exit code; modules are imported only
# when their command runs, so `--help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("helpers.cli:check", "Print settings, device summary and weights-cache status (the setup check)."),
    "settings": ("helpers.cli:show_settings", "Print every setting, its value and where it came from."),
    "prepare": ("helpers.prepare:main", "Seed the weights cache and make every course dataset available."),
    "kernel": ("helpers.kernel:main", "Install the Jupyter kernel 'tl-workshop' (this environment) that every notebook uses."),
    "workshop": ("helpers.workshop:main", "Prepare, check, then launch the student's JupyterLab on notebooks/."),
    "score": ("helpers.recipe_commands:score_main", "Label every image of a folder (ImageNet or a retrained model) into a CSV."),
    "extract": ("helpers.recipe_commands:extract_main", "Extract one layer's features for every image of a folder (CSV or Parquet)."),
    "retrain": ("helpers.recipe_commands:retrain_main", "Retrain the backbone on your own labelled images; save the model."),
    "export-model": ("helpers.recipe_commands:export_model_main", "Export a retrained model as SavedModel, TFLite and ONNX, each checked."),
    "demo": ("helpers.demo:main", "Serve a demo page on 127.0.0.1 for a saved model: upload an image, see its labels and Grad-CAM."),
}


def _resolve(target: str) -> Callable[[Sequence[str]], int]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def check(argv: Sequence[str]) -> int:
    """The setup check: settings, device summary and advice, weights cache."""
    parser = argparse.ArgumentParser(prog="python -m helpers check", description=COMMANDS["check"][1])
    parser.parse_args(argv)

    result = session.start(verbose=True)
    return 0 if all(r.status == "present" for r in result.weights) else 1


def show_settings(argv: Sequence[str]) -> int:
    """Print the resolved settings and their sources."""
    argparse.ArgumentParser(prog="python -m helpers settings").parse_args(argv)

    print(load_settings().describe())
    return 0


def run_command(commands: dict[str, tuple[str, str]], argv: Sequence[str], program: str) -> int:
    """Run ``argv[0]`` of ``commands`` with the rest of ``argv``; list the commands on ``--help`` or none.

    Args:
        commands: Command name -> (``module:function``, one-line help). The function takes
            the leftover arguments and returns an exit code; its module is imported only
            when its command runs, so ``--help`` stays fast.
        argv: The command line after the program's name.
        program: How the user runs it (``python -m helpers``), for the usage line.

    Returns:
        The command's exit code; 2 for an unknown command.
    """
    argv = list(argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in commands:
        width = max(map(len, commands))
        print(f"usage: {program} <command> [options]\n\ncommands:")
        for name, (_, text) in commands.items():
            print(f"  {name:<{width}}  {text}")
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return int(_resolve(commands[argv[0]][0])(argv[1:]) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_command(COMMANDS, sys.argv[1:] if argv is None else argv, "python -m helpers")
