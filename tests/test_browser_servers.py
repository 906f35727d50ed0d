"""The kit's two servers in headless Chromium, as a student and an instructor meet them.

- the student's server (``python -m helpers workshop``): a notebook's widgets render and respond,
  no instructor tool shows (no Nbgrader menu, no formgrader, no Create Assignment), the
  notebook's Validate button is there, a released notebook is not marked modified when it
  opens, the kit's progress bar, saved with the notebook, reads complete in its plain-text
  fallback, the Launcher offers one kernel (the kit's), no "Jupyter news" pop-up appears, and
  TensorBoard opens from the Launcher inside JupyterLab;
- the instructor's server (``python -m instructor_tools instructor``): the formgrader lists the course's
  graded assignments (not an ungraded notebook such as 05) on the first visit to a fresh course
  folder, with no missing-exchange banner; its JupyterLab offers one kernel and no news pop-up.

Skipped, with the reason, where Selenium, Chromium or ChromeDriver is missing (see
tests/test_browser.py, whose browser helpers these tests share).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from helpers import kernel, lab_server
from instructor_tools.serving import instructor_lab

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_browser as browser  # noqa: E402 - the browser helpers live beside this file
import test_servers as serving  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDGETS_NOTEBOOK = "widgets.ipynb"
RELEASED = Path("01_pretrained_scoring") / "01_pretrained_scoring.ipynb"
NEWS_PROMPT = "official Jupyter news"
BAR_CELL = "from helpers import progress\nfor _ in progress.bar(range(30), desc='frames', unit='img'):\n    pass\n"

# The Launcher's sections and their cards' titles.
_LAUNCHER = """
return Array.from(document.querySelectorAll('.lm-Widget:not(.lm-mod-hidden) > .jp-Launcher .jp-Launcher-section')).map(s => [
  s.querySelector('.jp-Launcher-sectionTitle').innerText,
  Array.from(s.querySelectorAll('.jp-LauncherCard')).map(c => c.getAttribute('title') || c.innerText)]);
"""


# Epochs of the two phases in the TensorBoard run the student test writes (as notebook 02 logs them).
PHASE_1_EPOCHS, PHASE_2_EPOCHS = 3, 2


def _lab_settings(work: Path) -> dict[str, str]:
    """No autosave (nothing written). The news prompt is left to the kit's server config, which the tests check."""
    settings = work / "lab-settings"
    target = settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"autosave": False}))
    return {"JUPYTERLAB_SETTINGS_DIR": str(settings)}


def _launcher_kernels(driver) -> dict[str, list[str]]:
    """The kernels the Launcher offers for notebooks and consoles, once JupyterLab has restored (and would have
    asked its news question)."""
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; window.jupyterapp.restored.then(() => setTimeout(done, 2000));")
    if not driver.execute_script("return !!document.querySelector('.lm-Widget:not(.lm-mod-hidden) > .jp-Launcher')"):
        driver.execute_script("window.jupyterapp.commands.execute('launcher:create')")
    sections = browser._wait(lambda: driver.execute_script(_LAUNCHER), 30, "the Launcher's sections")
    return {title: cards for title, cards in sections if title in ("Notebook", "Console")}


def _student_root(tmp_path: Path) -> Path:
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks" / RELEASED.parent, root / RELEASED.parent)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "tl-workshop", "language": "python", "display_name": "Python (tl-workshop)"}}
    notebook.cells = [nbformat.v4.new_code_cell(
        BAR_CELL +  # the kit's progress bar, then a widget
        "import ipywidgets as widgets\n"
        "widgets.interact(lambda k: print(f'k squared is {k * k}'), k=widgets.IntSlider(value=3, min=0, max=10));"
    )]
    nbformat.write(notebook, root / WIDGETS_NOTEBOOK)
    # a run's TensorBoard logs, where notebook 02 writes them (beside the notebook) and as it writes them:
    # phase 1's fit, then phase 2's fit continuing from phase 1's last epoch (initial_epoch), one log folder
    logs = root / RELEASED.parent / "logs" / "run-1"
    logs.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-c", (
            "import numpy as np, keras\n"
            "x = np.random.default_rng(0).normal(size=(32, 4)).astype('float32')\n"
            "y = (x[:, 0] > 0).astype('int32')\n"
            "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation='softmax')])\n"
            "model.compile(keras.optimizers.Adam(1e-2), 'sparse_categorical_crossentropy')\n"
            f"board = lambda: keras.callbacks.TensorBoard({str(logs)!r})\n"
            f"first = model.fit(x, y, epochs={PHASE_1_EPOCHS}, validation_data=(x, y), callbacks=[board()], verbose=0)\n"
            "model.compile(keras.optimizers.Adam(1e-3), 'sparse_categorical_crossentropy')\n"
            f"model.fit(x, y, epochs={PHASE_1_EPOCHS + PHASE_2_EPOCHS}, initial_epoch=len(first.epoch),\n"
            "          validation_data=(x, y), callbacks=[board()], verbose=0)\n")],
        check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, timeout=180,
    )
    return root


def _open(driver, base: str, token: str, path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/lab/tree/{path}?reset&token={token}")  # reset: this notebook alone, no restored tabs
    browser._wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell"),
                  90, f"{path} to open")
    browser._wait(lambda: driver.execute_script(
        "const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
        "return s && s.getAttribute('data-status') === 'idle';"), 120, f"the kernel of {path} to be idle")


def test_student_server_in_the_browser(tmp_path):
    """Widgets respond, no instructor tools, Validate present, a release opens unmodified, TensorBoard opens."""
    browser._browser_or_skip()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    began = time.monotonic()
    root = _student_root(tmp_path)
    released_before = (root / RELEASED).read_bytes()
    env = lab_server.student_environment() | _lab_settings(tmp_path) | {"KIT_PROFILE": "smoke"}
    command = lab_server.student_command(serving._free_port(), True, root, cull_idle_minutes=30)
    command.append("--LabApp.expose_app_in_browser=True")  # the test drives JupyterLab's own commands
    with serving.running_server(command, env, ROOT, tmp_path) as server, \
            browser.chromium_session(tmp_path / "chromium") as driver:
        base, token, log = server.split("|")
        requests = browser.RequestLog(driver)

        # 1. a released notebook opens unmodified, with Validate and without the instructor's tools
        _open(driver, base, token, RELEASED.as_posix())
        time.sleep(2)  # JupyterLab updates the notebook's metadata from the kernel just after it starts
        dirty = driver.execute_script("return Array.from(document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty')).map(t => t.innerText)")
        menus = driver.execute_script("return Array.from(document.querySelectorAll('.lm-MenuBar-itemLabel')).map(m => m.innerText)")
        toolbar = driver.execute_script(
            "return document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar').innerText")
        page = driver.execute_script("return document.body.innerText")
        driver.save_screenshot(str(browser._artifact("student-release.png")))

        # 2. a widget renders and responds (alone in JupyterLab, so that "run all" runs this notebook)
        driver.execute_script("return window.jupyterapp.commands.execute('application:close-all')")
        _open(driver, base, token, WIDGETS_NOTEBOOK)

        def output() -> str:
            return driver.execute_script(
                "return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output'))"
                ".map(o => o.innerText).join('\\n')")

        attempted = [0.0]

        def first_output() -> bool:
            # JupyterLab may ask which kernel to start for a notebook opened with ?reset: accept its proposal
            for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):
                button.click()
            if "k squared is 9" in output():
                return True
            prompt = driver.execute_script(
                "const p = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputArea-prompt');"
                "return p ? p.innerText : '';")
            if prompt.strip() in ("[ ]:", "") and time.monotonic() - attempted[-1] > 5:
                attempted.append(time.monotonic())
                # not run yet (a command sent while JupyterLab still settles focus is dropped): run it as a
                # student does, Shift+Enter in the cell
                driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt").click()
                ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
            return False

        try:
            browser._wait(first_output, 90, "the interact widget to render its first output")
        finally:
            driver.save_screenshot(str(browser._artifact("student-widgets.png")))
        handle = browser._wait(lambda: driver.find_element(
            By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider .noUi-handle"), 30, "the slider")
        handle.click()
        ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
        browser._wait(lambda: "k squared is 16" in output(), 30, "the output to follow the slider (k=4)")
        live_bar = output()
        driver.save_screenshot(str(browser._artifact("student-widgets.png")))

        # the student saves: the progress bar's saved text is what GitHub, nbviewer and the feedback HTML show
        driver.execute_script("return window.jupyterapp.commands.execute('docmanager:save')")
        saved = browser._wait(lambda: [o for o in nbformat.read(root / WIDGETS_NOTEBOOK, as_version=4).cells[0].outputs
                                       if o.get("output_type") == "display_data"], 30, "the notebook to be saved")
        saved_bars = [o["data"].get("text/plain", "") for o in saved if "frames" in o["data"].get("text/plain", "")]

        # 3. one kernel in the Launcher, no news pop-up (JupyterLab asks once it has restored, and the question stays)
        kernels = _launcher_kernels(driver)
        news = NEWS_PROMPT in driver.execute_script("return document.body.innerText")

        # 4. TensorBoard from the Launcher (the one open now), inside JupyterLab
        card = browser._wait(lambda: next(c for c in driver.find_elements(By.CSS_SELECTOR, '.jp-LauncherCard[title="TensorBoard"]')
                                          if c.is_displayed()), 30, "a TensorBoard card in the Launcher")
        card.click()
        frame = browser._wait(lambda: driver.find_element(By.CSS_SELECTOR, ".lm-Widget:not(.lm-mod-hidden) iframe"), 30,
                              "TensorBoard's tab (an iframe in JupyterLab)")
        src = frame.get_attribute("src")
        driver.switch_to.frame(frame)
        browser._wait(lambda: driver.execute_script(
            "return document.title === 'TensorBoard' && !!document.querySelector('tb-webapp, tf-tensorboard');"),
            150, "TensorBoard to load in its JupyterLab tab")
        browser._wait(lambda: "run-1" in driver.execute_script("return document.body.innerText"), 60,
                      "TensorBoard to list the notebook's run")
        # The steps TensorBoard plots for the training loss, asked of TensorBoard itself through the proxy.
        steps = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const base = location.pathname.replace(/\\/?$/, '/');"
            "fetch(base + 'data/runs').then(r => r.json()).then(runs => {"
            "  const run = runs.find(name => name.endsWith('run-1/train'));"
            "  if (!run) { done('no run-1/train run among ' + JSON.stringify(runs)); return; }"
            "  return fetch(base + 'data/plugin/scalars/scalars?run=' + encodeURIComponent(run) + '&tag=epoch_loss')"
            "    .then(r => r.ok ? r.json() : r.text()).then(d => done(Array.isArray(d) ? d.map(p => p[1]) : d));"
            "}).catch(e => done(String(e)));"
        )
        driver.switch_to.default_content()
        driver.save_screenshot(str(browser._artifact("student-tensorboard.png")))
        outside = requests.outside()
    seconds = time.monotonic() - began
    print(f"\nstudent server in the browser: {seconds:.0f} s; screenshots in {browser.ARTIFACTS}")

    assert dirty == [], f"JupyterLab marks {dirty} modified right after opening: the saved format differs from its own"
    assert "Nbgrader" not in menus, f"the student's menu bar shows nbgrader's instructor menu: {menus}"
    assert "Formgrader" not in page and "Create Assignment" not in page, "an instructor tool shows on the student's server"
    assert "Validate" in toolbar, f"the student's notebook toolbar lacks nbgrader's Validate button: {toolbar!r}"
    assert re.search(r"frames:\W*100%.*30/30", live_bar, re.S), f"the live progress bar does not show its end: {live_bar!r}"
    assert len(saved_bars) == 1 and re.match(r"frames: 100%\|#+\| 30/30 \[", saved_bars[0]), (
        f"the saved progress bar's plain text does not read complete: {saved_bars}")
    one_kernel = {"Notebook": [kernel.DISPLAY_NAME], "Console": [kernel.DISPLAY_NAME]}
    assert kernels == one_kernel, f"the student's Launcher offers {kernels}, not the kit's kernel alone"
    assert not news, "JupyterLab's 'get notified about official Jupyter news?' pop-up shows on the student's server"
    assert src.rstrip("/").endswith("/tensorboard"), f"TensorBoard is not served through the Jupyter server: {src}"
    assert steps == list(range(PHASE_1_EPOCHS + PHASE_2_EPOCHS)), (
        f"TensorBoard's step axis is not continuous across the two phases (phase 2 from initial_epoch): {steps}")
    assert outside == [], f"the page requested other hosts: {outside}"
    assert (root / RELEASED).read_bytes() == released_before, "opening a notebook must not write it"


def test_instructor_formgrader_loads_on_a_fresh_course_in_the_browser(tmp_path):
    browser._browser_or_skip()
    from selenium.webdriver.common.by import By

    began = time.monotonic()
    root = serving._toy_course(tmp_path)
    bare = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    prepared = subprocess.run([sys.executable, "-m", "instructor_tools", "instructor", "--help"], env=bare, capture_output=True,
                              text=True, timeout=60)
    assert prepared.returncode == 0 and "--port" in prepared.stdout
    assert instructor_lab.prepare_gradebook(root) == ["toy"], "the ungraded 'extra' is no assignment"
    instructor_lab.prepare_exchange(root)  # as `python -m instructor_tools instructor` does
    env = instructor_lab.instructor_environment(bare) | _lab_settings(tmp_path)
    command = instructor_lab.instructor_command(serving._free_port(), True, root) + ["--LabApp.expose_app_in_browser=True"]
    with serving.running_server(command, env, root, tmp_path) as server, \
            browser.chromium_session(tmp_path / "chromium") as driver:
        base, token, _ = server.split("|")
        driver.get(f"{base}/formgrader?token={token}")
        rows = browser._wait(
            lambda: [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#main-table tr") if "toy" in r.text], 90,
            "the formgrader to list the assignment 'toy'")
        time.sleep(1)  # every row of the table, not the first one only
        rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#main-table tr")]
        driver.save_screenshot(str(browser._artifact("instructor-formgrader.png")))
        page = driver.execute_script("return document.body.innerText")
        banners = [b.text for b in driver.find_elements(By.CSS_SELECTOR, ".alert-warning")]

        # the instructor's JupyterLab: one kernel, no news pop-up
        driver.get(f"{base}/lab?reset&token={token}")
        browser._wait(lambda: driver.execute_script("return !!window.jupyterapp"), 90, "the instructor's JupyterLab")
        kernels = _launcher_kernels(driver)
        news = NEWS_PROMPT in driver.execute_script("return document.body.innerText")
        driver.save_screenshot(str(browser._artifact("instructor-launcher.png")))
    print(f"\ninstructor formgrader and JupyterLab in the browser: {time.monotonic() - began:.0f} s")
    assert rows and "Loading, please wait" not in page
    assert [row.split()[0] for row in rows if row.strip()] == ["toy"], f"the formgrader lists more than the graded assignment: {rows}"
    assert banners == [] and "exchange directory" not in page, f"the formgrader shows a warning banner: {banners}"
    one_kernel = {"Notebook": [kernel.DISPLAY_NAME], "Console": [kernel.DISPLAY_NAME]}
    assert kernels == one_kernel, f"the instructor's Launcher offers {kernels}, not the kit's kernel alone"
    assert not news, "JupyterLab's 'get notified about official Jupyter news?' pop-up shows on the instructor's server"
