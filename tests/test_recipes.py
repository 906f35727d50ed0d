"""The lab's recipes on a folder of your own: score, extract, retrain (the functions and the commands).

Unit tests use tables and files the tests write; the command tests run the real
commands (in process, and once through the installed ``tlkit`` script) on images
the tests generate, with MobileNet alpha 0.75 and the course's pretrained weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import cli, recipes, saved_models, sources

from conftest import SHARED_MODELS

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}


def _make_images(folder: Path, per_class: int = 8, size: int = 64, seed: int = 0) -> Path:
    """``folder/<colour>/<colour>_NN.jpg``: a coloured square somewhere on dark noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 70, size=(size, size, 3)).astype(np.uint8)
            x, y = rng.integers(0, size // 2, size=2)
            pixels[y : y + size // 3, x : x + size // 3] = colour
            Image.fromarray(pixels).save(folder / label / f"{label}_{index:02d}.jpg", quality=92)
    return folder


# --------------------------------------------------------------------------- pure helpers


def test_list_images_sorts_recurses_and_reports_other_files(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/deep/x.PNG", "a/y.jpg", "b.jpeg", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "c.jpg").write_bytes(b"x")
    images, skipped = recipes.list_images(tmp_path)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in images] == ["a/deep/x.PNG", "a/y.jpg", "b.jpeg"]
    assert [Path(p).name for p in skipped] == ["notes.txt"]
    assert recipes.list_images(tmp_path / "b.jpeg") == ([str((tmp_path / "b.jpeg").resolve())], [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        recipes.list_images(tmp_path / "missing")


def test_write_table_csv_and_parquet_atomic_and_never_overwrites_by_accident(tmp_path):
    table = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "features": [np.array([1.0, 2.5], dtype=np.float32), None],
                          "error": ["", "corrupt: bad"]})
    csv = recipes.write_table(table, tmp_path / "out.csv")
    back = pd.read_csv(csv, keep_default_na=False)
    assert json.loads(back.loc[0, "features"]) == [1.0, 2.5] and back.loc[1, "features"] == ""
    parquet = recipes.write_table(table, tmp_path / "out.parquet")
    read = pd.read_parquet(parquet)
    assert list(read.loc[0, "features"]) == [1.0, 2.5] and read.loc[1, "features"] is None
    with pytest.raises(FileExistsError, match="--overwrite"):
        recipes.write_table(table, csv)
    recipes.write_table(table.head(1), csv, overwrite=True)
    assert len(pd.read_csv(csv)) == 1
    with pytest.raises(ValueError, match=".csv or .parquet"):
        recipes.write_table(table, tmp_path / "out.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.parquet"], "no temporary file left"


def test_limit_per_class_is_deterministic_and_independent_across_classes():
    frame = pd.DataFrame({"path": [f"/d/{c}/{i}.jpg" for c in "ab" for i in range(30)], "label": ["a"] * 30 + ["b"] * 30})
    kept = recipes.limit_per_class(frame, 5, seed=1)
    assert kept["label"].value_counts().to_dict() == {"a": 5, "b": 5}
    more_b = pd.concat([frame, pd.DataFrame({"path": ["/d/b/extra.jpg"], "label": ["b"]})], ignore_index=True)
    again = recipes.limit_per_class(more_b, 5, seed=1)
    assert set(again.loc[again["label"] == "a", "path"]) == set(kept.loc[kept["label"] == "a", "path"])
    assert len(recipes.limit_per_class(frame, 0)) == 60
    with pytest.raises(ValueError, match="whole number"):
        recipes.limit_per_class(frame, -1)


def test_labelled_images_from_folders_or_a_lab_table(tmp_path):
    _make_images(tmp_path / "imgs", per_class=2)
    by_folder = recipes.labelled_images(tmp_path / "imgs")
    assert sorted(by_folder["label"].unique()) == sorted(COLOURS)
    table = tmp_path / "labels.csv"
    pd.DataFrame({"file": ["red/red_00.jpg", "/blue/blue_01.jpg", "green/missing.jpg", "red/red_01.jpg"],
                  "who": ["red", "blue", "green", None]}).to_csv(table, index=False)
    with pytest.warns(sources.DroppedRowsWarning):
        frame = recipes.labelled_images(tmp_path / "imgs", table, path_column="file", label_column="who")
    assert frame["label"].tolist() == ["blue", "red"]
    assert set(sources.dropped(frame)["reason"]) == {"file does not exist", "missing label"}
    with pytest.raises(ValueError, match="path_column= and label_column="):
        recipes.labelled_images(tmp_path / "imgs", table)


def test_labelled_images_reads_train_and_val_folders_as_classes_with_their_own_test_set(tmp_path):
    """A hymenoptera-style folder (train/ + val/ of classes): classes are the colours, val/ is the test split."""
    from helpers import splits

    _make_images(tmp_path / "data" / "train", per_class=6)
    _make_images(tmp_path / "data" / "val", per_class=3, seed=1)
    frame = recipes.labelled_images(tmp_path / "data")
    assert set(frame["label"]) == set(COLOURS), "the classes are the folders inside train/ and val/, not 'train'/'val'"
    assert (frame["split"] == "test").sum() == 3 * len(COLOURS)
    split = splits.split_dataset(recipes.limit_per_class(frame, 0), seed=0, min_per_class=1)
    assert set(split.loc[split["path"].str.contains("/val/"), "split"]) == {"test"}
    assert set(split.loc[split["path"].str.contains("/train/"), "split"]) <= {"train", "validation"}
    plain = recipes.labelled_images(tmp_path / "data" / "train")  # an ordinary folder of classes
    assert set(plain["label"]) == set(COLOURS) and "split" not in plain.columns


def test_lab_table_turns_predictions_into_json():
    table = pd.DataFrame({"image": ["x.jpg"], "predictions": [{"b": 0.7, "a": 0.2}], "error": [None]})
    row = recipes.lab_table(table).iloc[0]
    assert list(json.loads(row["prediction"])) == ["b", "a"] and row["error"] == ""


def test_save_model_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path, kit_settings):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    precious = tmp_path / "holiday_photos"
    precious.mkdir()
    (precious / "beach.jpg").write_bytes(b"photo")
    with pytest.raises(FileExistsError, match="not a saved model"):
        saved_models.save_model(model, precious, kit_settings, ["a", "b"])
    assert (precious / "beach.jpg").read_bytes() == b"photo"
    folder = saved_models.save_model(model, tmp_path / "m", kit_settings, ["a", "b"], results={"x": 1},
                                extra={"report.md": "hi"})
    again = saved_models.save_model(model, folder, kit_settings, ["a", "b"])  # a model folder is replaced
    assert sorted(p.name for p in again.iterdir()) == ["model.json", "model.keras"]
    loaded, info = saved_models.load_model(folder)
    assert info["class_names"] == ["a", "b"] and info["backbone"] == "mobilenet" and loaded.output_shape == (None, 2)
    (folder / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match="class names"):
        saved_models.load_model(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_a_loaded_model_lives_under_the_device_strategy(tmp_path, kit_settings, monkeypatch):
    """``score --model`` predicts on every GPU: the model is loaded inside the kit's strategy."""
    import keras

    from helpers import device

    tf = device.import_tensorflow()
    inputs = keras.Input((4,))
    folder = saved_models.save_model(keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs)),
                                tmp_path / "m", kit_settings, ["a", "b"])
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])  # what several GPUs get, on one CPU device
    monkeypatch.setattr(device, "_STRATEGY", mirrored)
    loaded, _ = saved_models.load_model(folder)
    assert loaded.distribute_strategy is mirrored, "saved_models.load_model must load under device.strategy()"


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def command_env(monkeypatch, shared_data, kit_settings):
    """The commands read settings from the environment: MobileNet alpha 0.75, the course weights mirror."""
    monkeypatch.setenv("KIT_BACKBONE", "mobilenet")
    monkeypatch.setenv("KIT_ALPHA", "0.75")
    monkeypatch.setenv("KIT_WEIGHTS_MIRROR", str(SHARED_MODELS))
    monkeypatch.setenv("KIT_CACHE_DIR", str(kit_settings.cache_dir))
    return kit_settings


def test_commands_are_listed_in_the_help(capsys):
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name}" in listing for name in ("score", "extract", "retrain"))


@pytest.mark.integration
def test_score_writes_the_lab_table_with_errors_for_bad_files(tmp_path, command_env, capsys):
    folder = _make_images(tmp_path / "imgs", per_class=2)
    (folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "readme.txt").write_text("not an image")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(folder), "-o", str(output), "-k", "3", "--min-probability", "0.01"]) == 0
    captured = capsys.readouterr()
    assert "scored 6 of 7 image(s)" in captured.out and "1 with an error" in captured.out
    assert "readme.txt" in captured.err
    table = pd.read_csv(output, keep_default_na=False)
    assert list(table.columns) == ["image", "prediction", "error"] and len(table) == 7
    broken = table.loc[table["image"].str.endswith("broken.jpg")].iloc[0]
    assert broken["error"].startswith("corrupt") and json.loads(broken["prediction"]) == {}
    scored = table.loc[table["error"] == ""]
    for text in scored["prediction"]:
        labels = json.loads(text)
        assert 1 <= len(labels) <= 3 and all(p >= 0.01 for p in labels.values())
        assert list(labels.values()) == sorted(labels.values(), reverse=True)
    # The same output again is refused (exit 2), nothing overwritten; --overwrite replaces it.
    before = output.read_text()
    assert cli.main(["score", str(folder), "-q", "-o", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err and output.read_text() == before


@pytest.mark.integration
def test_bad_input_gives_a_message_and_an_exit_code(tmp_path, command_env, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["score", str(tmp_path / "nowhere"), "-q", "-o", str(tmp_path / "s.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["score", str(empty), "-q", "-o", str(tmp_path / "s.csv")]) == 1
    assert "no image files" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"")
    assert cli.main(["score", str(broken), "-q", "-o", str(tmp_path / "s.csv")]) == 1, "nothing could be scored"
    assert "0 of 1" in capsys.readouterr().out
    assert cli.main(["extract", str(broken), "-q", "-o", str(tmp_path / "f.txt")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err
    images = _make_images(tmp_path / "imgs", per_class=1)
    assert cli.main(["extract", str(images), "-q", "--layer", "no_such_layer", "-o", str(tmp_path / "f.csv")]) == 2
    assert "no_such_layer" in capsys.readouterr().err
    table = tmp_path / "labels.csv"
    table.write_text("file,who\nred/red_00.jpg,red\n")
    assert cli.main(["retrain", "--images", str(images), "--labels", str(table), "-q", "-o", str(tmp_path / "m")]) == 2
    assert "no column(s)" in capsys.readouterr().err
    assert cli.main(["retrain", "--images", str(images), "-q", "-o", str(images)]) == 2
    assert "not a saved model" in capsys.readouterr().err
    assert cli.main(["retrain", "--images", str(images / "red"), "-q", "-o", str(tmp_path / "m")]) == 2
    assert "class" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["retrain"])  # --images is required: argparse's usage error
    assert usage.value.code == 2


def test_retrain_trains_on_flipped_copies_unless_told_not_to(tmp_path, command_env, monkeypatch):
    """The recipe adds left-right flipped copies by default; --no-flip-copies reaches it as flips=False."""
    from types import SimpleNamespace

    calls = []

    def run_retrain(images, output, settings, **options):
        calls.append(options)
        return SimpleNamespace(report="# Retrained model", folder=Path(output))

    monkeypatch.setattr(recipes, "run_retrain", run_retrain)
    for extra in ([], ["--no-flip-copies"]):
        assert cli.main(["retrain", "--images", str(tmp_path), "-q", "-o", str(tmp_path / "m"), *extra]) == 0
    assert [options["flips"] for options in calls] == [True, False]
    assert [options["n_blocks"] for options in calls] == [None, None], "the default recipe's blocks unless told"
    assert calls[0]["epoch_lines"] is None and calls[0]["bars"] is False, "-q: no bars and no epoch lines"


@pytest.mark.integration
def test_missing_weights_offline_exit_3(tmp_path, command_env, monkeypatch, capsys):
    """No weights in the cache, no mirror, the download server answers 404 (a server on 127.0.0.1)."""
    import functools
    import http.server
    import threading

    from helpers import backbones

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(backbones, "_KERAS_BASE_URL", f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.delenv("KIT_WEIGHTS_MIRROR")
        monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "empty-cache"))
        images = _make_images(tmp_path / "imgs", per_class=1)
        code = cli.main(["extract", str(images), "-q", "--backbone", "mobilenet_v2", "--alpha", "1.0",
                         "-o", str(tmp_path / "f.csv")])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 3
    assert "python -m helpers prepare" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.integration
def test_extract_gives_one_vector_per_image_in_csv_and_parquet(tmp_path, command_env, capsys):
    folder = _make_images(tmp_path / "imgs", per_class=2)
    assert cli.main(["extract", str(folder), "-q", "-o", str(tmp_path / "f.parquet")]) == 0
    table = pd.read_parquet(tmp_path / "f.parquet")
    assert list(table.columns) == ["image", "features", "error"] and len(table) == 6
    assert {len(v) for v in table["features"]} == {768}, "MobileNet 0.75's penultimate layer, pooled"
    assert cli.main(["extract", str(folder), "-q", "--layer", "conv_pw_5_relu", "--pooling", "max",
                     "-o", str(tmp_path / "f.csv")]) == 0
    csv = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    vectors = np.array([json.loads(v) for v in csv["features"]])
    assert vectors.shape == (6, 192) and (vectors >= 0).all()
    assert cli.main(["extract", str(folder), "--list-layers", "-q"]) == 0
    assert "conv_pw_13_relu" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.slow
def test_retrain_then_score_with_the_saved_model(tmp_path, command_env, capsys):
    """Class folders with a duplicated picture and a broken file -> a model folder -> score --model."""
    folder = _make_images(tmp_path / "imgs", per_class=8)
    original = folder / "red" / "red_00.jpg"
    shutil.copy(original, folder / "red" / "red_00_copy.jpg")  # the same picture twice, as photo folders often have
    (folder / "blue" / "broken.jpg").write_bytes(b"GIF89a truncated")
    output = tmp_path / "model"
    assert cli.main(["retrain", "--images", str(folder), "-o", str(output), "--export"]) == 0
    out = capsys.readouterr().out
    assert "# Retrained model" in out and "phase 1" in out and f"score FOLDER --model {output}" in out
    names = sorted(p.name for p in output.iterdir())
    assert {"model.keras", "model.json", "report.md", "split.csv", "history.csv", "problems.csv", "export"} <= set(names)
    # --export: the saved folder exported as export-model does, checked on the folder's own test split
    exported = json.loads((output / "export" / "export.json").read_text())
    test_images = int((pd.read_csv(output / "split.csv")["split"] == "test").sum())
    assert exported["on_test_split"] and exported["images_checked"] == test_images > 0, exported
    assert exported["class_names"] == ["blue", "green", "red"] and "tflite float16" in exported["formats"]
    assert (output / "export" / "saved_model").is_dir() and (output / "export" / "model.tflite").is_file()
    report = pd.read_csv(output / "export" / "export.csv")
    assert report["agrees"].all() and f"exported to {output / 'export'}" in out, report
    info = json.loads((output / "model.json").read_text())
    assert info["class_names"] == ["blue", "green", "red"] and info["backbone"] == "mobilenet"
    assert info["image_size"] == 224 and info["results"]["images"] == 25
    split = pd.read_csv(output / "split.csv")
    pair = split.loc[split["path"].str.contains("red_00")]
    assert len(pair) == 2 and pair["group"].nunique() == 1 and pair["split"].nunique() == 1, (
        "the copy must share its original's group and split"
    )
    assert "broken.jpg" in (output / "problems.csv").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no run folder or staging left"

    scores = tmp_path / "scores.csv"
    assert cli.main(["score", str(folder / "green"), "-q", "--model", str(output), "-k", "1",
                     "--min-probability", "0", "-o", str(scores)]) == 0
    table = pd.read_csv(scores, keep_default_na=False)
    assert all(set(json.loads(p)) <= {"blue", "green", "red"} and len(json.loads(p)) == 1 for p in table["prediction"])

    # A labels table as in the lab (path,target), paths relative to the image folder.
    table_path = tmp_path / "labels.csv"
    rows = [(f"{label}/{label}_{i:02d}.jpg", label) for label in ("red", "blue") for i in range(5)]
    pd.DataFrame(rows, columns=["path", "target"]).to_csv(table_path, index=False)
    assert cli.main(["retrain", "--images", str(folder), "--labels", str(table_path), "-q",
                     "-o", str(tmp_path / "from_table")]) == 0
    assert json.loads((tmp_path / "from_table" / "model.json").read_text())["class_names"] == ["blue", "red"]


@pytest.mark.integration
@pytest.mark.slow
def test_retrain_keeps_a_val_folder_as_the_test_split_extracts_once_and_logs_plain_lines(
    tmp_path, command_env, capsys, monkeypatch
):
    """A train/ + val/ folder (the hymenoptera layout): every val/ image is tested, none trained on; one pass."""
    from helpers import features

    root = tmp_path / "ants_and_bees"
    _make_images(root / "train", per_class=6, seed=1)
    _make_images(root / "val", per_class=3, seed=2)
    passes = []
    original = features.cached_arrays
    monkeypatch.setattr(features, "cached_arrays", lambda *a, **k: passes.append(k.get("name")) or original(*a, **k))
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: pytest.fail("a second extraction pass"))
    output = tmp_path / "model"
    assert cli.main(["retrain", "--images", str(root), "-o", str(output)]) == 0
    assert passes == ["images, as they are and flipped"], "the images go through the network once"
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\r" not in captured.out + captured.err, "no escape codes in a log"
    epochs = [line for line in captured.out.splitlines() if ": epoch " in line]
    assert epochs and epochs[0].startswith("phase 1: epoch 1/") and any(e.startswith("phase 2: epoch") for e in epochs)
    split = pd.read_csv(output / "split.csv")
    from_val = split["path"].str.contains(f"{os.sep}val{os.sep}", regex=False)
    assert from_val.sum() == 9 and (split.loc[from_val, "split"] == "test").all(), "every val/ image is a test image"
    assert (split.loc[~from_val, "split"] != "test").all(), "no train/ image is a test image"
    info = json.loads((output / "model.json").read_text())
    assert info["results"]["recipe"]["n_blocks"] == 3 and info["results"]["recipe"]["label_smoothing"] == 0.1
    assert len(pd.read_csv(output / "test_predictions.csv")) == 9
    assert "held-out folder" in (output / "report.md").read_text()


@pytest.mark.integration
def test_the_tlkit_script_runs_a_command(tmp_path, command_env):
    script = Path(sys.executable).with_name("tlkit")
    if not script.is_file():
        pytest.skip(f"the tlkit script is not installed beside {sys.executable} (pip install -e .)")
    folder = _make_images(tmp_path / "imgs", per_class=1)
    done = subprocess.run(
        [str(script), "score", str(folder), "-q", "-o", str(tmp_path / "s.csv")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "scored 3 of 3 image(s)" in done.stdout and done.stderr == ""
    assert len(pd.read_csv(tmp_path / "s.csv")) == 3
    shutil.rmtree(folder)


def test_duplicate_groups_never_merge_images_that_only_share_a_file_name():
    """Cameras name files IMG_0001.jpg in every folder: groups are named by the path inside the folder."""
    frame = pd.DataFrame({"path": ["/d/dog/IMG_1.jpg", "/d/cat/IMG_1.jpg", "/d/cat/IMG_2.jpg"]})
    groups = recipes.duplicate_groups(frame, [[1.0, 0.0], [0.0, 1.0], [1.0, 0.01]])
    assert groups.tolist() == ["dog/IMG_1.jpg", "cat/IMG_1.jpg", "dog/IMG_1.jpg"]


def test_the_readmes_command_examples_parse():
    """Every `python -m helpers score|extract|retrain ...` line of the README is accepted by that command's options."""
    import shlex

    from helpers import recipe_commands

    lines = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()]
    examples = [shlex.split(line)[3:] for line in lines if line.startswith(("python -m helpers score",
                                                                             "python -m helpers extract",
                                                                             "python -m helpers retrain"))]
    assert {argv[0] for argv in examples} == {"score", "extract", "retrain"}, "the README shows every command"
    for argv in examples:
        recipe_commands.PARSERS[argv[0]]().parse_args(argv[1:])  # argparse exits on an unknown option
