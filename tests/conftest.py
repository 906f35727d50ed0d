"""Shared test setup: an isolated kit cache for the whole run, and the course-data fixtures.

Integration tests use the course data kept beside the project (``../shared/data``);
where it is absent they are skipped with the reason, never failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_MODELS = SHARED_DATA / "keras_home" / "models"
SHARED_DATASETS = SHARED_DATA / "datasets"
SKIP_NO_SHARED = (
    f"course data not found at {SHARED_DATA}: integration tests need the pre-downloaded weights and "
    "datasets beside the project (see README, 'Offline classrooms')"
)

_SESSION_CACHE: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point the kit (and Keras, read once at import) at a throw-away cache before any import."""
    global _SESSION_CACHE
    _SESSION_CACHE = Path(tempfile.mkdtemp(prefix="kit-tests-"))
    os.environ["KIT_CACHE_DIR"] = str(_SESSION_CACHE)
    os.environ["KERAS_HOME"] = str(_SESSION_CACHE / "keras")
    os.environ.setdefault("KIT_PROFILE", "smoke")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A developer's own KIT_* settings must not leak into the tests.
    for name in [n for n in os.environ if n.startswith("KIT_") and n not in {"KIT_CACHE_DIR", "KIT_PROFILE"}]:
        del os.environ[name]
    os.environ["KIT_PROFILE"] = "smoke"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def kit_kernel() -> str:
    """The kit's named kernel, which every notebook asks for; installed into the environment if missing.

    ``make setup`` installs it; a checkout installed with plain ``pip install -e .`` gets it here.
    """
    from helpers import kernel

    if kernel.installed() is None:
        kernel.install()
    return kernel.KERNEL_NAME


@pytest.fixture(scope="session")
def session_cache() -> Path:
    """The cache folder shared by the whole test run."""
    assert _SESSION_CACHE is not None
    return _SESSION_CACHE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``, or skip with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(SKIP_NO_SHARED)
    return SHARED_DATA


@pytest.fixture(scope="session")
def kit_settings(session_cache: Path):
    """Smoke-profile settings with MobileNet alpha 0.75, the weights seeded from ../shared when present."""
    from helpers import backbones, weights
    from helpers.settings import load_settings

    overrides = {"profile": "smoke", "backbone": "mobilenet", "alpha": 0.75, "cache_dir": str(session_cache)}
    if SHARED_DATA.is_dir():
        overrides |= {"weights_mirror": str(SHARED_MODELS), "data_dir": str(SHARED_DATASETS)}
    settings = load_settings(overrides, environ={})
    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    return settings


@pytest.fixture(scope="session")
def real_weights(kit_settings, shared_data):
    """Settings whose cache holds the real MobileNet alpha 0.75 ImageNet weights (skips without them)."""
    return kit_settings
