"""The demo page of a saved model: labels and Grad-CAM for an upload, clear answers to broken files; in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import backbones, demo, heads, saved_models
from helpers.settings import load_settings

CLASSES = ["bart", "homer", "lisa"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A retrained-style MobileNet (alpha 0.25, random weights, 96 px) saved as a model folder."""
    import keras

    folder = tmp_path_factory.mktemp("demo")
    settings = load_settings({"profile": "smoke", "backbone": "mobilenet", "alpha": 0.25, "image_size": 96,
                              "cache_dir": folder / "cache"}, environ={})
    keras.utils.set_random_seed(0)
    base = backbones.load_base(settings, weights=None)
    model = heads.assemble_model(base, heads.build_head(base.output_shape[1:], len(CLASSES), seed=0))
    return saved_models.save_model(model, folder / "model", settings, CLASSES), settings


@contextlib.contextmanager
def serving(model_folder):
    location, settings = model_folder
    server = demo.make_server(demo.DemoModel(str(location), settings, k=2), 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _png(colour=(200, 40, 40), size=(120, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/predict", data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_upload_gets_top_k_labels_and_an_overlay_and_broken_files_a_clear_message(model_folder):
    with serving(model_folder) as url:
        status, answer = _post(url, _png())
        assert status == 200, answer
        assert [row["label"] for row in answer["labels"]] != [] and len(answer["labels"]) == 2
        assert {row["label"] for row in answer["labels"]} <= set(CLASSES)
        probabilities = [row["probability"] for row in answer["labels"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
        assert answer["overlay"].startswith("data:image/png;base64,") and answer["image"].startswith("data:image/png")
        overlay = Image.open(io.BytesIO(__import__("base64").b64decode(answer["overlay"].split(",", 1)[1])))
        assert overlay.size == (96, 96)

        assert _post(url, b"this is not an image")[0] == 400
        status, answer = _post(url, b"this is not an image")
        assert "not an image" in answer["error"] and "JPEG" in answer["error"]
        status, answer = _post(url, _png()[:60])  # a truncated PNG
        assert status == 400 and "damaged or truncated" in answer["error"]
        assert _post(url, b"")[1]["error"].startswith("the file is empty")
        with urllib.request.urlopen(url + "/", timeout=30) as response:
            page = response.read().decode()
            assert "bart, homer, lisa" in page and "Content-Security-Policy" in response.headers
        # another name for this machine (DNS rebinding) is refused
        request = urllib.request.Request(url + "/", headers={"Host": "attacker.example:80"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403


def test_a_flip_averaged_model_is_explained_through_the_model_inside(model_folder, tmp_path):
    """The retrain command saves the model averaged with its flipped view: Grad-CAM explains the model inside it."""
    location, settings = model_folder
    inner, _ = saved_models.load_model(location)
    folder = saved_models.save_model(heads.flip_averaged(inner), tmp_path / "averaged", settings, CLASSES)
    page = demo.DemoModel(str(folder), settings, k=3)
    answer = page.label(_png())
    assert page.explains and answer["overlay"] and "flipped" in answer["note"]
    assert [row["label"] for row in answer["labels"]] and len(answer["labels"]) == 3


def test_bad_arguments_and_a_missing_model_are_refused(model_folder, tmp_path, capsys):
    location, settings = model_folder
    with pytest.raises(ValueError, match="positive whole number"):
        demo.DemoModel(str(location), settings, k=0)
    assert demo.main([str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "no model" in capsys.readouterr().err


@pytest.mark.browser
def test_demo_page_in_headless_chromium(model_folder, tmp_path):
    """Upload an image, the labels and overlay appear; upload a broken file, the page says what is wrong."""
    import test_browser as browser

    picture = tmp_path / "red.png"
    picture.write_bytes(_png())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    profile = tmp_path / "profile"
    profile.mkdir()
    with serving(model_folder) as url, browser.chromium_session(profile) as driver:
        from selenium.webdriver.common.by import By

        requests = browser.RequestLog(driver)
        driver.get(url + "/")
        assert "Image classifier demo" in driver.title
        driver.find_element(By.ID, "file").send_keys(str(picture))
        driver.find_element(By.ID, "submit").click()
        items = browser._wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#labels li"), 60, "the labels")
        assert len(items) == 2 and all(any(c in item.text for c in CLASSES) and "%" in item.text for item in items)
        overlay = browser._wait(lambda: driver.find_elements(By.ID, "overlay"), 10, "the Grad-CAM overlay")[0]
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay) == 96
        assert driver.find_element(By.ID, "error").text == ""
        driver.save_screenshot(str(browser._artifact("demo_page_labelled.png")))

        driver.find_element(By.ID, "file").send_keys(str(broken))
        driver.find_element(By.ID, "submit").click()
        message = browser._wait(lambda: driver.find_element(By.ID, "error").text, 30, "the error message")
        assert "damaged or truncated" in message or "not an image" in message
        assert not driver.find_elements(By.CSS_SELECTOR, "#labels li"), "the old labels are cleared"
        driver.save_screenshot(str(browser._artifact("demo_page_broken_file.png")))
        assert requests.outside() == [], "the demo page asks nothing of any other host"
