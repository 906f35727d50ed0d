"""The GPU check: what the kit's device settings really do on a machine with a GPU.

Run it on a GPU machine (a lent one, a course server) before a class::

    python -m benchmarks.gpu_check                 # every check, notebook 02 in the full profile
    python -m benchmarks.gpu_check --skip-notebook # the device checks only (a minute)

Each check runs in a fresh Python process, because TensorFlow accepts device settings
only before it first touches a device:

- **selection**: ``KIT_GPUS=0`` makes TensorFlow use GPU 0 only, and every model is
  built under the default strategy (``KIT_GPUS=all`` on several GPUs: ``MirroredStrategy``);
- **memory growth**: ``KIT_GPU_MEMORY=growth`` (the default) is set on the GPU, and a
  small model takes far less than the card;
- **memory limit**: ``KIT_GPU_MEMORY=1024`` caps the GPU at 1 GiB: a 2 GiB tensor fails to
  allocate, a small one succeeds;
- **mixed precision**: ``KIT_MIXED_PRECISION=true`` computes the head in float16, keeps its
  softmax in float32, and one training step gives a finite loss;
- **notebook 02, full profile**: the whole notebook's wall time on the GPU.

On a machine without a GPU every GPU check is reported as skipped (and the script says
so) and the exit status is 0; a check that runs and fails gives exit status 1. The
results go to ``benchmarks/gpu_check.json`` and ``benchmarks/GPU_CHECK.md``, dated, to be
committed with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import hardware, now

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = "no GPU on this machine"

# Each check: the environment it runs under and the code that prints one JSON line
# {"status": "passed" | "failed" | "skipped", "detail": ...}.
_PRELUDE = """
import json
from helpers import compiling, device, heads
from helpers.settings import load_settings

tf = device.import_tensorflow()
if not tf.config.list_physical_devices("GPU"):  # before setup, which refuses a GPU index that does not exist
    print(json.dumps({"status": "skipped", "detail": %r}))
    raise SystemExit(0)
report = device.setup(load_settings())
""" % NO_GPU

CHECKS: dict[str, tuple[dict[str, str], str]] = {
    "selection": ({"KIT_GPUS": "0"}, """
logical = tf.config.list_logical_devices("GPU")
ok = len(report.gpus) == 1 and len(logical) == 1 and device.strategy().num_replicas_in_sync == 1
print(json.dumps({"status": "passed" if ok else "failed",
                  "detail": f"found {report.all_gpus}, used {report.gpus}, logical {[d.name for d in logical]}, "
                            f"strategy {report.strategy}"}))
"""),
    "all GPUs": ({"KIT_GPUS": "all"}, """
count = len(tf.config.list_physical_devices("GPU"))
replicas = device.strategy().num_replicas_in_sync
print(json.dumps({"status": "passed" if replicas == count else "failed",
                  "detail": f"{count} GPU(s), strategy {report.strategy}, {replicas} replica(s)"}))
"""),
    "memory growth": ({"KIT_GPUS": "0", "KIT_GPU_MEMORY": "growth"}, """
gpu = tf.config.list_physical_devices("GPU")[0]
head = heads.build_head((7, 7, 768), 6, seed=0)
head.predict(tf.zeros((8, 7, 7, 768)), verbose=0)
used = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
ok = tf.config.experimental.get_memory_growth(gpu) and used < 2048
print(json.dumps({"status": "passed" if ok else "failed",
                  "detail": f"memory growth {tf.config.experimental.get_memory_growth(gpu)}, "
                            f"peak {used:.0f} MiB for a head's prediction"}))
"""),
    "memory limit": ({"KIT_GPUS": "0", "KIT_GPU_MEMORY": "1024"}, """
small = tf.ones((256, 256, 256))  # 64 MiB: fits
try:
    big = tf.ones((512, 1024, 1024))  # 2 GiB: must not fit in 1 GiB
    refused = False
    float(tf.reduce_sum(big[0, 0, :8]))  # use it, so that it is really allocated
except (tf.errors.ResourceExhaustedError, tf.errors.InternalError) as error:
    refused = True
print(json.dumps({"status": "passed" if refused else "failed",
                  "detail": f"memory mode {report.memory_mode}; a 2 GiB tensor "
                            + ("was refused" if refused else "was allocated: the limit is not applied")}))
"""),
    "mixed precision": ({"KIT_GPUS": "0", "KIT_MIXED_PRECISION": "true"}, """
import keras
import numpy as np
head = heads.build_head((7, 7, 768), 6, seed=0)
compiling.compile_model(head, 1e-3)
x = np.random.default_rng(0).normal(size=(32, 7, 7, 768)).astype("float32")
y = np.arange(32) % 6
loss = head.fit(x, y, epochs=1, verbose=0, validation_data=(x, y)).history["loss"][-1]
dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)][-1]
ok = (report.mixed_precision and keras.mixed_precision.global_policy().name == "mixed_float16"
      and head.output.dtype == "float32" and np.isfinite(loss))
print(json.dumps({"status": "passed" if ok else "failed",
                  "detail": f"policy {keras.mixed_precision.global_policy().name}, last Dense computes in "
                            f"{dense.compute_dtype}, output {head.output.dtype}, loss {loss:.3f}"}))
"""),
}


def run_check(name: str, timeout: float = 600) -> dict[str, Any]:
    """Run one device check in a fresh Python process; its status, detail and seconds."""
    environment, code = CHECKS[name]
    env = dict(os.environ, **environment)
    began = time.perf_counter()
    try:
        process = subprocess.run(
            [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"check": name, "status": "failed", "detail": f"did not finish in {timeout:.0f} s", "seconds": timeout}
    seconds = round(time.perf_counter() - began, 1)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
        return {"check": name, "status": "failed", "detail": f"exit {process.returncode}: {' | '.join(tail)}",
                "seconds": seconds}
    return {"check": name, **json.loads(lines[-1]), "seconds": seconds}


def notebook_02_full(timeout: int = 3600) -> dict[str, Any]:
    """Notebook 02 top to bottom in the full profile (skipped without a GPU: it is sized for one)."""
    from benchmarks.notebooks import course_notebooks, execute
    from helpers import device

    if not device.import_tensorflow().config.list_physical_devices("GPU"):
        return {"check": "notebook 02, full profile", "status": "skipped", "detail": NO_GPU, "seconds": 0.0}
    path = next(p for p in course_notebooks() if p.parent.name.startswith("02_"))
    with tempfile.TemporaryDirectory(prefix="kit-gpu-check-") as scratch:
        row = execute(path, Path(scratch), {"KIT_PROFILE": "full"}, timeout)
    detail = f"{row['seconds']:.0f} s, peak {row['peak_mib']} MiB, slowest cells {row['slowest_cells']}"
    if row["status"] != "ok":
        detail += f"; {row['status']}: {row['error']}"
    accuracy = row["results"].get("test_accuracy")
    if accuracy is not None:
        detail += f"; test accuracy {accuracy}"
    return {"check": "notebook 02, full profile", "status": "passed" if row["status"] == "ok" else "failed",
            "detail": detail, "seconds": row["seconds"]}


def markdown(result: dict[str, Any]) -> str:
    """The dated report of one run."""
    machine = result["machine"]
    lines = [
        "# GPU check",
        "",
        f"_Run {result['date']} on {machine.get('cpu', '?')}, GPUs: {', '.join(result['gpus']) or 'none'}._",
        "",
        "| check | status | detail | seconds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['check']} | {r['status']} | {str(r['detail']).replace('|', '/')} | {r['seconds']} |" for r in result["checks"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--skip-notebook", action="store_true", help="only the device checks (about a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder for gpu_check.json and GPU_CHECK.md")
    parser.add_argument("--only", help="comma-separated checks: " + ", ".join(CHECKS))
    options = parser.parse_args(argv)
    names = [n.strip() for n in options.only.split(",")] if options.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    checks = []
    for name in names:
        checks.append(run_check(name))
        print(f"{name}: {checks[-1]['status']} ({checks[-1]['detail']})", flush=True)
    if not options.skip_notebook:
        checks.append(notebook_02_full())
        print(f"{checks[-1]['check']}: {checks[-1]['status']} ({checks[-1]['detail']})", flush=True)
    from helpers import device

    gpus = [gpu.name for gpu in device.import_tensorflow().config.list_physical_devices("GPU")]
    result = {"date": now(), "machine": hardware(), "gpus": gpus, "checks": checks}
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (options.out / "GPU_CHECK.md").write_text(markdown(result))
    if not gpus:
        print(f"{NO_GPU}: every GPU check was skipped; run this on a GPU machine.")
    return 1 if any(c["status"] == "failed" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
