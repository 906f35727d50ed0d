"""Real-browser checks: JupyterLab with notebook 01, and the built slides, in headless Chromium.

Driver: Selenium with the system's ChromeDriver (Debian ``chromium`` + ``chromium-driver``,
which always match each other). Both tests skip, with the reason, where Selenium,
Chromium or ChromeDriver is missing; ``.ci/run`` installs them on CI.

Every request the page makes is recorded from Chrome's DevTools network events (the
performance log), and any request to a host other than this machine fails the test.
Screenshots are kept under ``tests/artifacts/`` (git-ignored; ``KIT_TEST_ARTIFACTS``
moves it); each test prints where it wrote them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ARTIFACTS = Path(os.environ.get("KIT_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
NOTEBOOK_01 = Path("01_pretrained_scoring") / "01_pretrained_scoring.ipynb"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Schemes that never leave the machine.
LOCAL_SCHEMES = {"data", "blob", "about", "file", "chrome", "devtools"}

# The flags this closed network needs: no sandbox (containers), no GPU, no QUIC, and none
# of Chromium's own background traffic (component updates, sync, field trials...).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--window-size=1366,900",
    # A request to any other host fails at once instead of waiting for DNS; it is still
    # recorded (and fails the test) because Chrome logs it before resolving the name.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _find(env: str, names: tuple[str, ...]) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser_or_skip() -> tuple[str, str]:
    """Chromium and ChromeDriver paths, or skip with the reason."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed: `pip install -e .[dev]` (browser checks need it)")
    chromium = _find("KIT_CHROMIUM", ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's `chromium`, or set KIT_CHROMIUM): browser checks skipped")
    driver = _find("KIT_CHROMEDRIVER", ("chromedriver",))
    if driver is None:
        pytest.skip("no ChromeDriver found (install Debian's `chromium-driver`, or set KIT_CHROMEDRIVER)")
    return chromium, driver


@contextlib.contextmanager
def chromium_session(profile_dir: Path) -> Iterator[Any]:
    """A headless Chromium driven by Selenium, with a fresh profile; always quit afterwards."""
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would try to download one) never runs.
    service = Service(executable_path=driver_path, log_output=str(profile_dir.parent / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(60)
        yield driver
    finally:
        driver.quit()


class RequestLog:
    """Every URL the page asked for, read from Chrome's DevTools network events."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.urls: list[str] = []
        driver.get_log("performance")  # drop what happened before the page under test

    def collect(self) -> list[str]:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                self.urls.append(params["request"]["url"])
            elif message.get("method") == "Network.webSocketCreated":
                self.urls.append(params["url"])
        return self.urls

    def outside(self) -> list[str]:
        """Requests that would leave this machine."""
        found = []
        for url in self.collect():
            parts = urlsplit(url)
            if parts.scheme in LOCAL_SCHEMES:
                continue
            if parts.scheme in {"http", "https", "ws", "wss"} and (parts.hostname or "") in LOCAL_HOSTS:
                continue
            found.append(url[:120])
        return sorted(set(found))


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def _wait(condition, timeout: float, what: str, poll: float = 0.25):
    """Poll ``condition()`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the page may be mid-render; try again
            last_error = error
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


# --------------------------------------------------------------------------- the slides


def _built_deck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the deck into a temporary folder (skips where the slide build cannot run)."""
    spec = importlib.util.spec_from_file_location("kit_slides_build", ROOT / "slides" / "build.py")
    slides_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slides_build)
    try:
        reveal_dir = slides_build.ensure_reveal()
    except slides_build.BuildError as error:
        pytest.skip(f"reveal.js is not available, the deck cannot be built: {error}")
    output = tmp_path_factory.mktemp("deck") / "deck.html"
    return slides_build.build(output=output, reveal_dir=reveal_dir)


# Walk every slide with the Reveal API and report what is wrong with each.
_WALK_SLIDES = """
const height = Reveal.getConfig().height;
const report = [];
for (const slide of Reveal.getSlides()) {
  const where = Reveal.getIndices(slide);
  Reveal.slide(where.h, where.v || 0);
  const rect = slide.getBoundingClientRect();
  const text = (slide.innerText || '').trim();
  const images = Array.from(slide.querySelectorAll('img'));
  report.push({
    index: where.h + '/' + (where.v || 0),
    title: (slide.querySelector('h1, h2, h3') || {innerText: text.slice(0, 40)}).innerText,
    current: Reveal.getCurrentSlide() === slide,
    visible: rect.width > 0 && rect.height > 0 && getComputedStyle(slide).display !== 'none',
    text: text.length,
    images: images.length,
    graphics: images.length + slide.querySelectorAll('svg, table').length,
    brokenImages: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40)),
    height: slide.offsetHeight,
    tooTall: slide.offsetHeight > height + 2,
    leftovers: (text.match(/\\{\\{|\\]\\(|^Note:/m) || []).length,
    notes: !!slide.querySelector('aside.notes'),
  });
}
Reveal.slide(0, 0);
return {total: Reveal.getTotalSlides(), height: height, slides: report};
"""


def test_slides_render_offline_in_chromium(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The built deck opens from file://, every slide renders, and nothing is requested from another host."""
    _browser_or_skip()
    deck = _built_deck(tmp_path_factory)
    source = (ROOT / "slides" / "deck.md").read_text(encoding="utf-8")
    expected_slides = len(re.findall(r"\r?\n---\r?\n", source)) + 1
    began = time.monotonic()
    with chromium_session(tmp_path / "chromium") as driver:
        requests = RequestLog(driver)
        driver.get(deck.as_uri())
        _wait(lambda: driver.execute_script("return !!(window.Reveal && Reveal.isReady());"), 30, "reveal.js to start")
        # Images are data: URIs; give the browser a moment to decode them all.
        _wait(
            lambda: driver.execute_script(
                "return Array.from(document.images).every(i => i.complete);"
            ),
            15,
            "every image to load",
        )
        result = driver.execute_script(_WALK_SLIDES)
        screenshot = _artifact("slides-title.png")
        driver.save_screenshot(str(screenshot))
        index = [s["index"] for s in result["slides"] if s["title"].startswith("Which approach")]
        if index:
            h, v = map(int, index[0].split("/"))
            driver.execute_script(f"Reveal.slide({h}, {v});")
            time.sleep(0.3)
            driver.save_screenshot(str(_artifact("slides-results.png")))
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        outside = requests.outside()
        seen = requests.collect()
    print(f"\nslides: {result['total']} slides checked in {time.monotonic() - began:.1f} s; "
          f"{len(seen)} requests, all local; screenshots in {ARTIFACTS}")

    slides = result["slides"]
    assert outside == [], f"the deck requested other hosts (it must work offline): {outside}"
    assert errors == [], f"the deck logged errors in the browser console: {errors}"
    assert result["total"] == expected_slides == len(slides), (
        f"slides/deck.md has {expected_slides} slides but reveal.js shows {result['total']}: "
        "check the '---' separators (a blank line before and after each)"
    )
    problems = []
    for slide in slides:
        if not (slide["current"] and slide["visible"]):
            problems.append(f"slide {slide['index']} ({slide['title']!r}) could not be shown")
        if slide["text"] == 0 and slide["graphics"] == 0:
            problems.append(f"slide {slide['index']} is empty")
        if slide["brokenImages"]:
            problems.append(f"slide {slide['index']} ({slide['title']!r}) has broken images {slide['brokenImages']}")
        if slide["tooTall"]:
            problems.append(
                f"slide {slide['index']} ({slide['title']!r}) is {slide['height']} px tall, more than the "
                f"{result['height']} px of a slide: shorten it or split it"
            )
        if slide["leftovers"]:
            problems.append(f"slide {slide['index']} ({slide['title']!r}) shows unrendered Markdown or a {{{{placeholder}}}}")
    assert problems == [], "\n".join(problems)
    without_notes = [s["title"] for s in slides if not s["notes"]]
    assert without_notes == [], f"speaker notes did not render on {without_notes}"
    shown = len(re.findall(r"!\[[^\]]*\]\(figures/", source))
    assert sum(s["images"] for s in slides) == shown, f"the deck shows {shown} figures but the page has other images"
    assert screenshot.stat().st_size > 10_000, f"no useful screenshot at {screenshot}"


# --------------------------------------------------------------------------- JupyterLab


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root_dir: Path, work: Path, env_extra: dict[str, str], timeout: float = 90) -> Iterator[str]:
    """Start JupyterLab headless on 127.0.0.1 with a token; yield its base URL with the token; stop it.

    Autosave is off and checkpoints go to ``work``, so opening and running a notebook
    leaves ``root_dir`` untouched.
    """
    port, token = _free_port(), secrets.token_hex(16)
    settings = work / "lab-settings"
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(
        json.dumps({"autosave": False})
    )
    # No "would you like news?" prompt and no update check (nothing to fetch on a closed network).
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(os.environ) | env_extra | {
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        "IPYTHONDIR": str(work / "ipython"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root_dir}", "--ServerApp.port_retries=0",
        f"--FileCheckpoints.root_dir={work / 'checkpoints'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root; Jupyter refuses that by default
    log_path = work / "jupyterlab.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.returncode}: {log_path.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
            return response.status == 200

    try:
        try:
            _wait(answers, timeout, f"JupyterLab to answer on {base}", poll=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- JupyterLab log ---\n{log_path.read_text()[-3000:]}") from None
        yield f"{base}|{token}"
    finally:
        # Jupyter stops its kernels on SIGTERM; the whole process group goes if it hangs.
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGKILL)  # a kernel left behind by a crash


def _kit_environment(cache: Path) -> dict[str, str]:
    env = {
        "KIT_PROFILE": "smoke",
        "KIT_BACKBONE": "mobilenet",
        "KIT_ALPHA": "0.75",
        "KIT_CACHE_DIR": str(cache),
        "KERAS_HOME": str(cache / "keras"),
    }
    if SHARED_DATA.is_dir():
        env |= {
            "KIT_WEIGHTS_MIRROR": str(SHARED_DATA / "keras_home" / "models"),
            "KIT_DATA_DIR": str(SHARED_DATA / "datasets"),
        }
    return env


_CELLS = """
return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')).map(cell => {
  const prompt = cell.querySelector('.jp-InputArea-prompt');
  return {
    source: (cell.querySelector('.jp-InputArea-editor .cm-content') || {innerText: ''}).innerText,
    prompt: prompt ? prompt.innerText.trim() : '',
    text: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(o => o.innerText).join('\\n'),
    errors: cell.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').length,
  };
});
"""


def _setup_cell(driver: Any) -> tuple[int, dict[str, Any]] | None:
    """Position and state of the notebook's setup cell (the code cell calling ``session.start``).

    nbgrader puts its header (the NAME / COLLABORATORS cell) first, so it is found by content.
    """
    for index, cell in enumerate(driver.execute_script(_CELLS) or []):
        if "session.start(" in cell["source"]:
            return index, cell
    return None


def test_jupyterlab_runs_notebook_01_setup_cell(tmp_path: Path) -> None:
    """JupyterLab (headless, 127.0.0.1, token) opens notebook 01 in Chromium; its setup cell runs and reports."""
    _browser_or_skip()
    notebook = ROOT / "notebooks" / NOTEBOOK_01
    if not notebook.is_file():
        pytest.fail(f"{notebook} is missing: generate the student notebooks with `python -m instructor_tools generate`")
    before = notebook.read_bytes()
    cache = tmp_path / "kit-cache"
    began = time.monotonic()
    with jupyterlab(ROOT / "notebooks", tmp_path, _kit_environment(cache)) as server, \
            chromium_session(tmp_path / "chromium") as driver:
        base, token = server.split("|")
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        requests = RequestLog(driver)
        driver.get(f"{base}/lab/tree/{NOTEBOOK_01.as_posix()}?token={token}")
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell"), 90,
              "notebook 01 to open in JupyterLab")
        # The kernel must be idle before we run anything.
        _wait(
            lambda: driver.execute_script(
                "const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
                "return s && s.getAttribute('data-status') === 'idle';"
            ),
            90,
            "the notebook's kernel to be idle",
        )
        index, _ = _wait(lambda: _setup_cell(driver), 30,
                         "a code cell calling session.start() (the setup cell) in notebook 01")

        def select_setup_cell() -> bool:
            # JupyterLab re-renders cells while it settles: find the cell afresh on every try.
            cell = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")[index]
            driver.execute_script("arguments[0].scrollIntoView();", cell)
            cell.find_element(By.CSS_SELECTOR, ".jp-InputArea-prompt").click()  # selects it, in command mode
            return "jp-mod-active" in cell.get_attribute("class")

        _wait(select_setup_cell, 30, "the setup cell to be selected")
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()

        def finished() -> dict[str, Any] | None:
            cell = driver.execute_script(_CELLS)[index]
            return cell if re.fullmatch(r"\[\d+\]:", cell["prompt"]) else None

        output = _wait(finished, 180, "the setup cell to finish (its prompt to show an execution count)", poll=0.5)
        driver.execute_script(
            "arguments[0].scrollIntoView();",
            driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")[index],
        )
        driver.save_screenshot(str(_artifact("jupyterlab-notebook-01.png")))
        outside = requests.outside()
        seen = len(requests.collect())
    print(f"\njupyterlab: setup cell of notebook 01 ran in the browser ({time.monotonic() - began:.1f} s in all, "
          f"{seen} requests, all local); screenshot in {ARTIFACTS}")

    text = output["text"]
    assert "Traceback" not in text and output["errors"] == 0, f"the setup cell raised an error:\n{text[-2000:]}"
    assert "Device:" in text, f"the setup summary does not print the device line:\n{text[-2000:]}"
    assert "Weights cache:" in text, f"the setup summary does not print the weights cache:\n{text[-2000:]}"
    assert str(cache) in text, "the kernel did not use the KIT_CACHE_DIR given to JupyterLab"
    assert outside == [], f"JupyterLab in the browser requested other hosts: {outside}"
    assert notebook.read_bytes() == before, f"the test changed {notebook}; it must leave notebooks/ untouched"
