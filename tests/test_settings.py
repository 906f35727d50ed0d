"""Settings: precedence defaults < config file < environment < overrides, validation, README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import settings as settings_module
from helpers.settings import PROFILE_PURPOSES, PROFILES, load_settings, profiles_table_markdown, settings_table_markdown

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "kit.toml"
    path.write_text(body)
    return path


def test_defaults_without_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KIT_CONFIG", raising=False)
    resolved = load_settings(environ={})
    assert resolved.backbone == "resnet50"
    assert resolved.profile == "workshop"
    assert resolved.seed == 42
    assert resolved.data_dir == resolved.cache_dir / "datasets"
    assert resolved.keras_home == resolved.cache_dir / "keras"
    assert resolved.sources == {}


def test_precedence_file_then_environment_then_overrides(tmp_path):
    path = _config(tmp_path, '[kit]\nbackbone = "mobilenet"\nbatch_size = 8\nseed = 1\nprofile = "full"\n')
    resolved = load_settings(
        {"seed": 3},
        environ={"KIT_BATCH_SIZE": "16", "KIT_SEED": "2"},
        config_file=path,
    )
    assert resolved.backbone == "mobilenet"  # file beats default
    assert resolved.batch_size == 16  # environment beats file
    assert resolved.seed == 3  # override beats environment
    assert resolved.profile == "full"
    assert resolved.sources["backbone"] == str(path)
    assert resolved.sources["batch_size"] == "$KIT_BATCH_SIZE"
    assert resolved.sources["seed"] == "override"
    assert resolved.scale is PROFILES["full"]


def test_config_found_in_parent_folder_and_relative_paths(tmp_path, monkeypatch):
    _config(tmp_path, '[kit]\ncache_dir = "cache"\nweights_mirror = "mirror"\n')
    nested = tmp_path / "notebooks" / "01"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.delenv("KIT_CONFIG", raising=False)
    resolved = load_settings(environ={})
    # Paths in the file are relative to the file, not to the notebook's folder.
    assert resolved.cache_dir == (tmp_path / "cache").resolve()
    assert resolved.weights_mirror == (tmp_path / "mirror").resolve()


def test_kit_config_variable_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match="KIT_CONFIG"):
        settings_module.find_config_file()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KIT_PROFILE": "huge"}, "unknown profile"),
        ({"KIT_BATCH_SIZE": "many"}, "batch_size"),
        ({"KIT_BATCH_SIZE": "0"}, "at least 1"),
        ({"KIT_MIXED_PRECISION": "maybe"}, "boolean"),
        ({"KIT_GPU_MEMORY": "lots"}, "gpu_memory"),
        ({"KIT_IMAGE_SIZE": "8"}, "image_size"),
    ],
)
def test_bad_values_say_what_to_do(tmp_path, environ, message):
    with pytest.raises(ValueError, match=message):
        load_settings(environ=environ, config_file=_config(tmp_path, "[kit]\n"))


def test_unknown_setting_in_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown setting.*backbon"):
        load_settings(environ={}, config_file=_config(tmp_path, '[kit]\nbackbon = "x"\n'))


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        load_settings(environ={}, config_file=_config(tmp_path, "[kit\n"))


def test_types_are_parsed(tmp_path):
    resolved = load_settings(
        environ={"KIT_ALPHA": "0.75", "KIT_IMAGE_SIZE": "160", "KIT_MIXED_PRECISION": "yes", "KIT_GPU_MEMORY": "0.5"},
        config_file=_config(tmp_path, "[kit]\n"),
    )
    assert resolved.alpha == 0.75 and resolved.image_size == 160
    assert resolved.mixed_precision is True and resolved.gpu_memory == "0.5"


def test_replace_keeps_validation(tmp_path):
    base = load_settings(environ={}, config_file=_config(tmp_path, "[kit]\n"))
    assert base.replace(profile="smoke").scale.name == "smoke"
    with pytest.raises(ValueError):
        base.replace(profile="nope")


def test_profiles_scale_monotonically():
    smoke, workshop = PROFILES["smoke"], PROFILES["workshop"]
    assert smoke.head_epochs == 1 and smoke.finetune_epochs == 1
    assert smoke.simpsons_per_class < workshop.simpsons_per_class
    assert smoke.pacs_per_class < workshop.pacs_per_class
    assert PROFILES["full"].simpsons_per_class == 0  # all data


def test_the_slow_laptop_profile_sits_between_smoke_and_workshop():
    """laptop: the lessons of workshop (several points per curve, several epochs) on less data and time."""
    smoke, laptop, workshop = PROFILES["smoke"], PROFILES["laptop"], PROFILES["workshop"]
    assert laptop != smoke and laptop.name == "laptop"
    assert len(laptop.sample_sizes) >= 4 and laptop.sample_seeds >= 2, "learning curves need several points"
    assert laptop.head_epochs >= 10 and laptop.finetune_epochs >= 5 and laptop.scratch_epochs >= 3
    assert smoke.simpsons_per_class < laptop.simpsons_per_class < workshop.simpsons_per_class
    assert smoke.pacs_per_class < laptop.pacs_per_class < workshop.pacs_per_class
    assert laptop.scratch_image_size <= workshop.scratch_image_size
    assert max(laptop.sample_sizes) <= 0.6 * laptop.pacs_per_class, "every curve point needs that many training images"


def test_profiles_take_keyword_arguments_only():
    with pytest.raises(TypeError):
        settings_module.Profile("tiny", 1, 1, 1, 1, 1, 1, 1, 64, 1, (2,), 1, 60)  # positional: refused


def test_every_per_profile_number_lives_in_the_profile():
    """No other module keeps its own table keyed by profile names (it would drift from PROFILES)."""
    import ast

    offenders = []
    for path in sorted((ROOT / "helpers").rglob("*.py")):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if len(keys & set(PROFILES)) >= 2:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"tables by profile name outside helpers.settings: {offenders}; make them Profile fields."


def test_readme_settings_table_is_generated_from_the_fields():
    readme = (ROOT / "README.md").read_text()
    assert settings_table_markdown() in readme, (
        "README's settings table is out of date: paste helpers.settings.settings_table_markdown() into it"
    )


def test_readme_profiles_table_is_generated_from_the_profiles():
    assert set(PROFILE_PURPOSES) == set(PROFILES), "say what each profile is for in PROFILE_PURPOSES"
    table = profiles_table_markdown()
    assert all(f"| `{name}` |" in table for name in PROFILES)
    assert table in (ROOT / "README.md").read_text(), (
        "README's profiles table is out of date: paste helpers.settings.profiles_table_markdown() into it"
    )


def test_every_notebook_states_its_time_in_the_slow_laptop_profile():
    import nbformat

    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if "**Expected time:**" in c.source)
        assert "laptop" in text, f"{path.name}: say in its 'Expected time' what the laptop profile takes"
