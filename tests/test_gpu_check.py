"""The prepared GPU check (``python -m benchmarks.gpu_check``) runs anywhere and says what it could check.

On these CPU machines every GPU check must come back "skipped" with the reason, the exit
status must be 0 and the dated report must be written; on a GPU machine the same script
checks selection, memory growth, a memory limit, mixed precision and notebook 02's time.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from benchmarks import gpu_check
from helpers import device

pytestmark = pytest.mark.slow


def test_every_check_is_valid_python():
    for name, (environment, code) in gpu_check.CHECKS.items():
        compile(gpu_check._PRELUDE + textwrap.dedent(code), name, "exec")
        assert all(key.startswith("KIT_") for key in environment), f"{name}: settings go through KIT_* variables"


@pytest.mark.timeout(300)
def test_without_a_gpu_every_check_is_skipped_and_reported(tmp_path, capsys):
    if device.import_tensorflow().config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: run `python -m benchmarks.gpu_check` itself")
    assert gpu_check.main(["--skip-notebook", "--only", "selection,mixed precision", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["check"] for c in result["checks"]] == ["selection", "mixed precision"]
    assert {c["status"] for c in result["checks"]} == {"skipped"}
    assert all(c["detail"] == gpu_check.NO_GPU for c in result["checks"])
    report = (tmp_path / "GPU_CHECK.md").read_text()
    assert result["date"][:10] in report and "| selection | skipped |" in report
    assert "run this on a GPU machine" in capsys.readouterr().out
