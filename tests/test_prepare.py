"""helpers.prepare: `python -m helpers prepare` readies weights and datasets, offline from a
mirror folder, and prints what is ready and what is missing with the fix."""

from __future__ import annotations

import http.server
import os
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from helpers import backbones, cli, prepare, weights
from helpers.settings import load_settings


@pytest.fixture
def kit_env(tmp_path, monkeypatch):
    """Environment for a smoke run with MobileNet a0.75 and empty mirrors; returns the folders."""
    folders = {name: tmp_path / name for name in ("cache", "data", "weights-mirror", "data-mirror")}
    for name in ("weights-mirror", "data-mirror"):
        folders[name].mkdir()
    values = {
        "KIT_PROFILE": "smoke", "KIT_BACKBONE": "mobilenet", "KIT_ALPHA": "0.75",
        "KIT_CACHE_DIR": folders["cache"], "KIT_DATA_DIR": folders["data"],
        "KIT_WEIGHTS_MIRROR": folders["weights-mirror"], "KIT_DATA_MIRROR": folders["data-mirror"],
    }
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    return folders


def _weight_files() -> list[str]:
    settings = load_settings()
    return [backbones.weight_file_name(settings, top) for top in (True, False)] + [weights.CLASS_INDEX_FILE]


def _fill_mirrors(folders: dict[str, Path], monkeypatch) -> None:
    # Stand-in weight files: no md5 is known for them, so they pass as the real ones would.
    monkeypatch.setattr(backbones, "known_md5s", lambda: {})
    for name in _weight_files():
        (folders["weights-mirror"] / name).write_bytes(b"weights")
    source = folders["data-mirror"].parent / "src"
    for character in ("bart_simpson", "lisa_simpson"):
        for number in range(3):
            path = source / "simpsons_dataset" / character / f"pic_{number:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), (number * 60, 90, 30)).save(path)
    with zipfile.ZipFile(folders["data-mirror"] / "simpsons.zip", "w") as bundle:
        for path in source.rglob("*.jpg"):
            bundle.write(path, path.relative_to(source))
    for domain in ("photo", "cartoon", "sketch"):
        for cls in ("dog", "house"):
            path = folders["data-mirror"] / "pacs" / domain / cls / "0.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), (200, 10 * len(domain), 30)).save(path)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_offline_prepare_from_mirror_folders(kit_env, monkeypatch, capsys):
    _fill_mirrors(kit_env, monkeypatch)
    mirror_before = _tree(kit_env["data-mirror"]) | _tree(kit_env["weights-mirror"])
    assert prepare.main(["--offline", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "Everything is ready" in output
    for item in [*(f"weights {name}" for name in _weight_files()), "dataset simpsons", "dataset photo_vs_drawing", "dataset photos"]:
        line = next(line for line in output.splitlines() if line.startswith(item))
        assert " ready " in line, line
    assert (kit_env["cache"] / "keras" / "models" / _weight_files()[0]).is_file()
    assert (kit_env["data"] / "simpsons" / "simpsons_dataset" / "bart_simpson").is_dir(), "archive unpacked into the data dir"
    assert not (kit_env["data"] / "pacs").exists(), "an unpacked mirror is used in place"
    assert _tree(kit_env["data-mirror"]) | _tree(kit_env["weights-mirror"]) == mirror_before, "mirrors are read-only"


def test_missing_items_fail_with_the_fix(kit_env, capsys):
    assert prepare.main(["--offline", "--quiet"]) == 1
    output = capsys.readouterr().out
    rows = {line.split("  ")[0]: line for line in output.splitlines() if line.startswith(("weights ", "dataset "))}
    assert " missing " in rows[f"weights {_weight_files()[1]}"] and "KIT_WEIGHTS_MIRROR" in rows[f"weights {_weight_files()[1]}"]
    assert " missing " in rows["dataset simpsons"] and "KIT_DATA_MIRROR" in rows["dataset simpsons"]
    assert " missing " in rows["dataset photo_vs_drawing"]
    assert " ready " in rows["dataset photos"], "the photographs come with the kit (helpers/sample_photos)"
    assert "Some items are missing" in output


def test_dataset_subset_and_bad_names(kit_env, monkeypatch, capsys):
    _fill_mirrors(kit_env, monkeypatch)
    assert cli.main(["prepare", "--offline", "--quiet", "--datasets", "photos"]) == 0
    output = capsys.readouterr().out
    assert "dataset photos" in output and "dataset simpsons" not in output
    with pytest.raises(SystemExit) as caught:
        prepare.main(["--datasets", "mnist"])
    assert caught.value.code == 2


def test_prepare_rows_for_the_notebook(kit_env, monkeypatch):
    _fill_mirrors(kit_env, monkeypatch)
    rows = prepare.prepare(load_settings(), offline=True, names=["photos"], progress=False)
    assert all(set(row) == {"item", "status", "where", "fix"} for row in rows)
    assert prepare.all_ready(rows)
    assert "item" in prepare.format_table(rows).splitlines()[0]


def test_missing_weights_are_downloaded_when_online(kit_env, monkeypatch):
    monkeypatch.setattr(backbones, "known_md5s", lambda: {})
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"weights")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        real_weight_file = backbones.weight_file
        monkeypatch.setattr(
            backbones, "weight_file", lambda *args, **kwargs: (name := real_weight_file(*args, **kwargs)[0], f"{base}/{name}")
        )
        monkeypatch.setattr(weights, "CLASS_INDEX_URL", f"{base}/{weights.CLASS_INDEX_FILE}")
        settings = load_settings()
        offline = prepare.prepare(settings, offline=True, names=["photos"], progress=False)
        assert requests == [] and not prepare.all_ready(offline)
        online = prepare.prepare(settings, offline=False, names=["photos"], progress=False)
        assert sorted(requests) == sorted(f"/{name}" for name in _weight_files())
        assert prepare.all_ready(online)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_missing_weights_mirror_is_a_warning(kit_env, monkeypatch):
    monkeypatch.setenv("KIT_WEIGHTS_MIRROR", str(kit_env["cache"].parent / "no-such-mirror"))
    rows = prepare.prepare(load_settings(), offline=True, names=["photos"], progress=False)
    assert rows[0]["item"] == "weights mirror" and rows[0]["status"] == "warning"


@pytest.mark.integration
def test_offline_prepare_with_the_shared_data_as_mirror(kit_env, monkeypatch, capsys, shared_data):
    monkeypatch.setenv("KIT_WEIGHTS_MIRROR", str(shared_data / "keras_home" / "models"))
    monkeypatch.setenv("KIT_DATA_MIRROR", str(shared_data / "datasets"))
    assert prepare.main(["--offline", "--quiet"]) == 0, capsys.readouterr().out
    output = capsys.readouterr().out
    assert output.count(" ready ") == 6
    assert not kit_env["data"].exists() or not os.listdir(kit_env["data"]), "the mirror is used in place, not copied"
