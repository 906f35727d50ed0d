"""The workshop deck: its agenda walks through the kit's notebooks within the three hours, its
numbers and figures come from one run of the figure script, and the build makes one
self-contained offline HTML file. No slide's wording is checked.

The browser check of the built deck (every slide rendered, no request to another host)
is in ``tests/test_browser.py``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLIDES = ROOT / "slides"
DECK = SLIDES / "deck.md"
FIGURES = SLIDES / "figures"
SEPARATOR = re.compile(r"\r?\n---\r?\n")
NOTEBOOK = re.compile(r"\b(\d\d_[a-z0-9_]+)\b")


def _load(name: str) -> ModuleType:
    """Import a script of slides/ (they are scripts, not part of the helpers package)."""
    spec = importlib.util.spec_from_file_location(f"kit_slides_{name}", SLIDES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build() -> ModuleType:
    return _load("build")


@pytest.fixture(scope="module")
def slides() -> list[str]:
    return SEPARATOR.split(DECK.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifest() -> dict:
    path = FIGURES / "manifest.json"
    assert path.is_file(), f"{path} is missing: run `python slides/figures.py` (make figures) and commit its output"
    return json.loads(path.read_text(encoding="utf-8"))


def _titles(slides: list[str]) -> list[str]:
    return [next((line.lstrip("#").strip() for line in s.splitlines() if line.startswith("#")), "") for s in slides]


# --------------------------------------------------------------------------- the deck's content


def _plan(slides: list[str]) -> list[tuple[int, str, list[str]]]:
    """The agenda: (minutes from the start, what, notebooks named) for each row of the table whose
    first column is a time."""
    rows = []
    for slide in slides:
        for line in slide.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            time = re.fullmatch(r"(\d+):(\d\d)", cells[0]) if len(cells) >= 2 else None
            if time:
                rows.append((int(time.group(1)) * 60 + int(time.group(2)), cells[1], NOTEBOOK.findall(line)))
    return rows


def _hands_on(slides: list[str]) -> list[tuple[str, int]]:
    """(notebook, minutes) of every hands-on slide (reveal's ``class="hands-on"``)."""
    found = []
    for slide in slides:
        if 'class="hands-on"' in slide:
            match = re.search(r"`(\d\d_[a-z0-9_]+)`\s*\((\d+) min\)", slide)
            assert match, f"a hands-on slide names its notebook and its minutes: {_titles([slide])}"
            found.append((match.group(1), int(match.group(2))))
    return found


def test_the_plan_walks_through_existing_notebooks_in_order_within_three_hours(slides: list[str]) -> None:
    """The agenda's notebooks exist (student and solutions versions), come in their numbered order, and the
    day ends within the workshop's three hours."""
    plan = _plan(slides)
    assert len(plan) >= 5, f"the deck has an agenda table (time | what | where): {plan}"
    times = [minute for minute, _, _ in plan]
    assert times == sorted(set(times)) and times[0] == 0, f"the agenda's times run forward from 0:00: {times}"
    assert times[-1] < 180, "the last block starts before the three hours are over"
    named = [notebook for _, _, notebooks in plan for notebook in notebooks]
    assert named == sorted(named) and len(named) == len(set(named)), f"notebooks out of order: {named}"
    for notebook in named:
        for folder in ("notebooks", "solutions"):
            assert (ROOT / folder / notebook / f"{notebook}.ipynb").is_file(), f"the deck plans {notebook}: {folder}/ lacks it"
    taught = sorted(p.name for p in (ROOT / "solutions").iterdir() if NOTEBOOK.fullmatch(p.name))
    assert named == taught[: len(named)], f"the day covers the first notebooks in order: planned {named}, kit {taught}"


def test_each_hands_on_fits_its_slot_in_the_plan(slides: list[str]) -> None:
    """A hands-on slide's minutes fit the agenda's slot for its notebook, in the agenda's order."""
    plan = _plan(slides)
    hands_on = _hands_on(slides)
    assert hands_on, "the deck has hands-on slides"
    assert [n for n, _ in hands_on] == sorted(n for n, _ in hands_on), f"hands-on out of order: {hands_on}"
    for notebook, minutes in hands_on:
        slot = [i for i, (_, _, notebooks) in enumerate(plan) if notebook in notebooks]
        assert slot, f"the hands-on with {notebook} has no slot in the agenda"
        start = plan[slot[0]][0]
        end = plan[slot[0] + 1][0] if slot[0] + 1 < len(plan) else 180
        assert minutes <= end - start, f"{notebook}: {minutes} min of hands-on in a {end - start} min slot"


def test_every_slide_has_speaker_notes(slides: list[str]) -> None:
    missing = [title for title, text in zip(_titles(slides), slides) if not re.search(r"^Note:", text, re.MULTILINE)]
    assert missing == [], f"slides without speaker notes ('Note:' line): {missing}"


def test_no_result_typed_into_the_deck() -> None:
    """Results are {{placeholders}} filled from the figure run, never percentages typed by hand."""
    text = DECK.read_text(encoding="utf-8")
    typed = re.findall(r"[^\s{}]*\d\s?%", re.sub(r"\{\{[^}]*\}\}", "", text))
    assert typed == [], f"slides/deck.md contains typed results {typed}; record them in slides/figures.py instead"


# --------------------------------------------------------------------------- figures and numbers


def test_deck_numbers_and_figures_come_from_the_figure_script(manifest: dict) -> None:
    from PIL import Image

    text = DECK.read_text(encoding="utf-8")
    assert manifest["generated_by"] == "slides/figures.py"
    names = set(re.findall(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}", text))
    unknown = sorted(names - set(manifest["numbers"]))
    assert unknown == [], f"the deck uses numbers the figure run did not record: {unknown}; run `make figures`"
    made = {file for entry in manifest["figures"].values() for file in entry["files"]}
    shown = set(re.findall(r"\]\(figures/([^)]+)\)", text))
    assert shown, "the deck shows no figure"
    assert shown <= made, f"the deck shows figures the figure script does not make: {sorted(shown - made)}"
    script = _load("figures")
    assert set(manifest["figures"]) <= set(script.FIGURES_BY_NAME), "the manifest names figures the script no longer makes"
    for file in sorted(made):
        path = FIGURES / file
        assert path.is_file(), f"{path} is missing: run `make figures`"
        assert path.stat().st_size < 400_000, f"{path} is {path.stat().st_size} bytes; keep committed figures small"
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 200, f"{path} is not a usable PNG ({image.size})"


def test_a_slide_showing_a_figure_states_what_that_figure_measured(slides: list[str], manifest: dict) -> None:
    """The numbers next to a figure are the ones recorded by the run that drew it."""
    made_by = {file: name for name, entry in manifest["figures"].items() for file in entry["files"]}
    for title, slide in zip(_titles(slides), slides):
        shown = re.findall(r"\]\(figures/([^)]+)\)", slide)
        used = set(re.findall(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}", slide))
        for file in shown:
            recorded = set(manifest["figures"][made_by[file]]["numbers"])
            assert used & recorded, (
                f"slide {title!r} shows {file} but states none of the numbers its run recorded ({sorted(recorded)})"
            )


def test_the_deck_numbers_come_from_one_run(manifest: dict) -> None:
    """Every figure of the deck comes from the run the title slide names (profile, backbone), and the
    derived numbers agree with the measured ones."""
    run, numbers = manifest["run"], manifest["numbers"]
    profiles = {name: entry["profile"] for name, entry in manifest["figures"].items()}
    assert set(profiles.values()) == {run["profile"]} == {numbers["profile"]}, f"figures from other runs: {profiles}"
    script = _load("figures")
    settings = script.figure_settings(run["profile"], run["backbone"], run["alpha"])
    assert numbers["backbone"] == script._backbone_label(settings), "the title slide names the run's backbone"
    recorded = {key for entry in manifest["figures"].values() for key in entry["numbers"]}
    assert set(numbers) - recorded == {"profile", "backbone"}, "every other number was recorded by a figure's run"
    if "speedup_vs_resnet50" in numbers:  # "N times faster (A against B images per CPU-second)"
        fast, slow = float(numbers[f"{run['backbone']}_speed"]), float(numbers["resnet50_speed"])
        low, high = (fast - 0.5) / (slow + 0.5), (fast + 0.5) / (slow - 0.5)  # the speeds are rounded to units
        assert low - 0.05 <= float(numbers["speedup_vs_resnet50"]) <= high + 0.05, (
            f"speedup {numbers['speedup_vs_resnet50']} does not follow from {fast:g} and {slow:g} images per second"
        )


# --------------------------------------------------------------------------- the build


def test_fill_numbers_refuses_unknown_names(build: ModuleType) -> None:
    assert build.fill_numbers("acc {{ a }} and {{b}}", {"a": "91%", "b": "x"}) == "acc 91% and x"
    with pytest.raises(build.BuildError, match="missing_one"):
        build.fill_numbers("{{missing_one}}", {})


def test_embed_figures_inlines_local_images_and_refuses_urls(build: ModuleType, tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "figures").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "figures" / "a.png")
    out = build.embed_figures('![x](figures/a.png) <img src="figures/a.png">', tmp_path)
    assert out.count("data:image/png;base64,") == 2 and "figures/a.png" not in out
    with pytest.raises(build.BuildError, match="does not exist"):
        build.embed_figures("![x](figures/missing.png)", tmp_path)
    with pytest.raises(build.BuildError, match="instead of a URL"):
        build.embed_figures("![x](https://example.org/a.png)", tmp_path)


def test_inline_css_embeds_imports_and_webfonts_only(build: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "fonts").mkdir()
    for suffix in ("eot", "woff", "ttf"):
        (tmp_path / "fonts" / f"f.{suffix}").write_bytes(b"font-" + suffix.encode())
    (tmp_path / "fonts" / "fonts.css").write_text(
        "@font-face { font-family: F; src: url('./f.eot');"
        " src: url('./f.eot?#iefix') format('embedded-opentype'), url('./f.woff') format('woff'), url('./f.ttf'); }"
    )
    (tmp_path / "main.css").write_text("@import url(./fonts/fonts.css);\nbody { color: red; }")
    css = build.inline_css(tmp_path / "main.css")
    assert "@import" not in css and "body { color: red; }" in css
    assert css.count("data:font/woff;base64,") == 1 and ".eot" not in css and ".ttf" not in css
    (tmp_path / "remote.css").write_text("@import url(https://fonts.example.org/x.css);")
    with pytest.raises(build.BuildError, match="network"):
        build.inline_css(tmp_path / "remote.css")


def test_check_self_contained_flags_outside_references(build: ModuleType) -> None:
    build.check_self_contained('<style>a{background:url(data:image/png;base64,AA)}</style><a href="#x">x</a>')
    for page in ('<link rel="stylesheet" href="https://cdn.example.org/reveal.css">',
                 '<script src="reveal.js"></script>',
                 "<textarea data-template>![x](figures/a.png)</textarea>"):
        with pytest.raises(build.BuildError):
            build.check_self_contained(page)


def test_build_writes_one_self_contained_file(build: ModuleType, tmp_path: Path, manifest: dict) -> None:
    """The real deck builds (reveal.js from npm, figures from slides/figures) into one HTML file."""
    try:
        reveal = build.ensure_reveal()
    except build.BuildError as error:
        pytest.skip(f"reveal.js cannot be installed here: {error}")
    output = build.build(output=tmp_path / "deck.html", reveal_dir=reveal)
    page = output.read_text(encoding="utf-8")
    assert output.stat().st_size < 5_000_000, f"the deck is {output.stat().st_size / 1e6:.1f} MB"
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.DOTALL)  # the inlined libraries' own strings
    assert page.count("</script>") == 2 and not re.search(r"<(?:script|img|link)\b[^>]*\b(?:src|href)=", markup), (
        "the deck loads files by reference"
    )
    shown = len(re.findall(r"\]\(figures/", DECK.read_text(encoding="utf-8")))
    assert page.count("](data:image/png;base64,") == shown, "every figure should be inlined once"
    assert "{{" not in page.split("<textarea data-template>")[1].split("</textarea>")[0], "a placeholder was left unfilled"
    assert f"reveal.js {build.reveal_version()}" in page


def test_build_command_line_reports_a_missing_deck(build: ModuleType, tmp_path: Path, capsys) -> None:
    assert build.main(["--deck", str(tmp_path / "nope.md"), "--output", str(tmp_path / "x.html")]) == 1
    assert "no deck source" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


# --------------------------------------------------------------------------- the figure script, for real


@pytest.mark.integration
@pytest.mark.slow
def test_figure_script_runs_on_the_course_data(shared_data: Path, session_cache: Path, tmp_path: Path) -> None:
    """The figure functions run on the real data in the smoke profile and record their numbers."""
    script = _load("figures")
    settings = script.figure_settings("smoke", "mobilenet", 0.75, cache_dir=str(session_cache))
    # Backbones is tested below, cheaply; notebook 04's comparison runs its main approaches only.
    names = ["topk", "learning_curve", "features", "photo_vs_drawing"]
    assert set(names) | {"backbones"} == set(script.FIGURES_BY_NAME), "a new figure needs a test here"
    quicker = dict(script.FIGURES_BY_NAME)
    script.FIGURES_BY_NAME["photo_vs_drawing"] = lambda s, out: quicker["photo_vs_drawing"](
        s, out, approaches=("transfer", "raw_pixels", "deep_features", "baseline"))
    manifest = script.run(names, settings, tmp_path, log=lambda line: None)
    for name in names:
        for file in script.FILES[name]:
            assert (tmp_path / file).stat().st_size > 5_000, f"{name} wrote no usable {file}"
        assert manifest["figures"][name]["numbers"], f"{name} recorded no number"
    numbers = manifest["numbers"]
    assert numbers["profile"] == "smoke" and numbers["simpsons_classes"] == str(settings.scale.simpsons_characters)
    for key in ("head_val_accuracy", "finetune_val_accuracy", "test_accuracy", "features_test_accuracy",
                "pvd_transfer_accuracy", "pvd_features_accuracy", "pvd_pixels_accuracy"):
        assert re.fullmatch(r"\d{1,3}%", numbers[key]), f"{key} = {numbers[key]!r} is not a percentage"
    saved = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert saved["numbers"] == numbers and saved["run"]["backbone"] == "mobilenet"


@pytest.mark.slow
def test_backbone_figure_measures_speed(session_cache: Path, tmp_path: Path) -> None:
    script = _load("figures")
    settings = script.figure_settings("smoke", "mobilenet", 0.75, cache_dir=str(session_cache))
    numbers = script.figure_backbones(settings, tmp_path, keys=["mobilenet"], batch=4, repeats=1)
    assert float(numbers["mobilenet_speed"]) > 0
    assert (tmp_path / "backbones.png").stat().st_size > 5_000
