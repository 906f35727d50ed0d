"""Notebook 05 (your own images) executed top to bottom on images this test generates.

The course-data run (the PACS photographs standing in for a user's own) is the
solutions-notebook run of ``tests/test_course.py``; this one gives the notebook what a
user would: a zip of class folders with a broken file and a duplicated photo, an
unlabelled folder with copies in it, and a folder of new pictures to label.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from helpers import clean_outputs, sources
from instructor_tools.course import course_folder

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "05_your_own_images" / "05_your_own_images.ipynb"
SHAPES = ("disc", "square", "stripes")


def _picture(shape: str, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A shape in a random colour, place and size on a random two-colour gradient."""
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0, 1, size)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((size, size, 3))
    colour = rng.integers(0, 256, size=3)
    radius = int(rng.integers(size // 6, size // 3))
    cy, cx = rng.integers(radius, size - radius, size=2)
    yy, xx = np.mgrid[:size, :size]
    if shape == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif shape == "square":
        mask = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
    else:
        mask = (xx // max(2, radius // 3)) % 2 == 0
    pixels[mask] = colour
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _write(folder: Path, name: str, pixels: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name, quality=92)
    return folder / name


@pytest.fixture
def own_images(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    classes = tmp_path / "my_shapes"
    for shape in SHAPES:
        for index in range(10):
            _write(classes / shape, f"IMG_{index:04d}.jpg", _picture(shape, rng))  # the same names in every class
    shutil.copy(classes / "disc" / "IMG_0000.jpg", classes / "disc" / "IMG_0000 (copy).jpg")
    (classes / "square" / "IMG_9999.jpg").write_bytes(b"\xff\xd8\xff\xe0 a download that stopped")
    archive = tmp_path / "my_shapes.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(classes.rglob("*")):
            bundle.write(path, Path("my_shapes") / path.relative_to(classes))
    unlabelled = tmp_path / "holiday"
    for index in range(10):
        _write(unlabelled, f"photo_{index:02d}.jpg", _picture(SHAPES[index % 3], rng))
    for index in (1, 2):
        shutil.copy(unlabelled / f"photo_{index:02d}.jpg", unlabelled / f"photo_{index:02d}_again.jpg")
    (unlabelled / "notes.txt").write_text("not a picture")
    new = tmp_path / "new"
    for shape in SHAPES:
        _write(new, f"new_{shape}.png", _picture(shape, rng))
    return {"zip": archive, "unlabelled": unlabelled, "new": new}


def _outputs(cell: nbformat.NotebookNode) -> str:
    texts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            texts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            texts.append(output.get("data", {}).get("text/plain", ""))
        elif output.output_type == "error":
            texts.append(f"ERROR {output.ename}: {output.evalue}")
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_notebook_05_runs_on_a_users_zip_and_folders(own_images, tmp_path, kit_settings, shared_data):
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    kernel = notebook.metadata["kernelspec"]["name"]
    if kernel not in KernelSpecManager().find_kernel_specs():
        pytest.skip(f"the Jupyter kernel {kernel!r} is not installed (python -m helpers kernel)")
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, "notebook 05 has one cell tagged 'parameters'"
    parameters[0].source = (
        f'IMAGES = None\nLABELS_CSV = None\nPATH_COLUMN, LABEL_COLUMN = "path", "target"\n'
        f"ZIP_FILE = {str(own_images['zip'])!r}\nUNLABELLED = {str(own_images['unlabelled'])!r}\n"
        f"NEW_IMAGES = {str(own_images['new'])!r}\n"
    )
    cache = tmp_path / "cache"
    environment = {
        "KIT_PROFILE": "smoke", "KIT_BACKBONE": "mobilenet", "KIT_ALPHA": "0.75", "KIT_CACHE_DIR": str(cache),
        "KIT_WEIGHTS_MIRROR": str(shared_data / "keras_home" / "models"), "KIT_DATA_DIR": str(shared_data / "datasets"),
    }
    # What a student does with the label form: mark one image unusable, press Save.
    notebook.cells.append(nbformat.v4.new_code_cell(
        "marker.menus[next(iter(marker.menus))].value = top_losses.UNUSABLE\nprint('saved', marker.save())"
    ))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with course_folder.kernel_environment(environment):
        client = NotebookClient(notebook, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(run_dir)}})
        client.execute()
    by_id = {cell.id: _outputs(cell) for cell in notebook.cells if cell.cell_type == "code"}
    noise = {cid: text for cid, text in by_id.items() if "ERROR" in text}
    assert not noise, noise
    assert not clean_outputs.noise(notebook), "stderr or library warnings in the outputs"

    assert "No images of your own" not in by_id["load-images"] and "32 images of 3 classes" in by_id["load-images"]
    assert "31 usable image(s), 1 problem(s): 1 corrupt" in by_id["scan"] and "IMG_9999.jpg" in by_id["scan"]
    assert "2 images have a near-duplicate" in by_id["duplicates"], by_id["duplicates"]
    assert "Test accuracy" in by_id["evaluate"]
    model_folder = cache / "models" / "my_images"
    info = json.loads((model_folder / "model.json").read_text())
    assert info["class_names"] == list(SHAPES) and info["results"]["images"] == 31
    assert "No new images given" not in by_id["score-new"]
    # The worst mistakes' form saves a labels table of every usable image that the kit's sources read back.
    marks = cache / "uploads" / "labels_marked.csv"
    assert f"--labels {marks}" in by_id["label-marker"] and f"saved {marks}" in _outputs(notebook.cells[-1])
    table = pd.read_csv(marks, keep_default_na=False)
    assert len(table) == 31 and (table["mark"] == "unusable").sum() == 1 and (table["target"] == "").sum() == 1
    with pytest.warns(sources.DroppedRowsWarning, match="1 x missing label"):  # the unusable image, listed
        relabelled = sources.from_table(marks)
    assert len(relabelled) == 30 and len(sources.dropped(relabelled)) == 1, "retraining on the table leaves it out"
    # The export: every format reloaded and checked against the Keras model on the test images.
    exported = json.loads((model_folder / "export" / "export.json").read_text())
    assert exported["on_test_split"] and exported["class_names"] == list(SHAPES), exported
    assert {"savedmodel", "tflite float16"} <= set(exported["formats"]) and "exported to" in by_id["export"]
    assert pd.read_csv(model_folder / "export" / "export.csv")["agrees"].all()
    assert all(f"new_{shape}.png" in by_id["lab-table-code"] for shape in SHAPES)
    assert "12 images in" in by_id["unlabelled"] and "(1 other files)" in by_id["unlabelled"]
    assert "4 of 12 images have a near-duplicate in the folder (2 groups)" in by_id["near-duplicates"]
