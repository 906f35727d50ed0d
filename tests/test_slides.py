"""The workshop deck: its source covers the flow, its numbers and figures come from the figure
script, and the build makes one self-contained offline HTML file.

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


def test_deck_follows_the_hands_on_flow(slides: list[str]) -> None:
    """Every topic of the workshop is there, in the order of the day."""
    titles = _titles(slides)
    flow = [
        "architecture + weights",
        "Convolutional neural networks",
        "usual obstacles",
        "Three ways to classify images",
        "Hands-on 1",
        "Is deeper always better",
        "Residual connections",
        "knobs of retraining",
        "Hands-on 2",
        "Feature extraction",
        "Hands-on 3",
        "Which approach wins",
        "When the pretraining does not transfer",
    ]
    positions = []
    for topic in flow:
        found = [i for i, title in enumerate(titles) if topic.lower() in title.lower()]
        assert found, f"no slide titled with {topic!r} in slides/deck.md (titles: {titles})"
        positions.append(found[0])
    assert positions == sorted(positions), f"the topics are out of order: {dict(zip(flow, positions))}"


def test_deck_explains_every_retraining_parameter(slides: list[str]) -> None:
    """The two 'knobs' slides name each parameter of the retraining recipe."""
    knobs = "\n".join(s for s in slides if "knobs of retraining" in s.lower()).lower()
    for parameter in ("pooling", "image size", "layers to retrain", "dropout", "l1 / l2", "optimizer",
                      "learning rate", "batch size", "epochs", "augmentation"):
        assert f"| {parameter}" in knobs, f"the knobs slides have no row for {parameter!r}"


def test_deck_names_domains_far_from_imagenet(slides: list[str]) -> None:
    limits = next(s for s in slides if "does not transfer" in s).lower()
    for domain in ("grayscale medical", "seismic", "multi-spectral"):
        assert domain in limits, f"the limits slide does not mention {domain!r}"


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
    assert numbers["profile"] == "smoke" and numbers["simpsons_classes"] == str(settings.run.simpsons_characters)
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
