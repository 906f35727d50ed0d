"""The kit's own Keras weights cache.

Keras reads ``KERAS_HOME`` once, when it is first imported, and then loads
``<KERAS_HOME>/models/<file>`` or downloads it there. Pointing Keras at a read-only
shared folder is unsafe (it silently falls back to ``/tmp/.keras`` and, on an md5
mismatch while offline, deletes the cached file). So the kit keeps a *writable*
cache of its own (``<cache_dir>/keras``) and *seeds* it by copying from a read-only
mirror (an instructor's share of pre-downloaded files), checking md5 where Keras
knows one. Keras never sees the mirror, so it can never write to or delete from it.

This module is a plain cache: it knows no backbone. Callers hand it the table of
checksums it verifies (:func:`helpers.backbones.known_md5s`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path
from typing import Mapping

from helpers import download
from helpers.files import atomic_copy
from helpers.settings import Settings

MODELS_SUBDIR = "models"

# imagenet_class_index.json is needed by decode_predictions; its md5 is Keras's own.
CLASS_INDEX_FILE = "imagenet_class_index.json"
CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"
CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"


class WeightsMissingError(RuntimeError):
    """A weight file is neither in the kit's cache nor downloadable right now."""


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """What happened to one file when seeding the cache.

    Attributes:
        name: File name.
        status: ``copied``, ``present`` (already in the cache and valid) or ``bad-checksum``.
        detail: A sentence for the student or instructor.
    """

    name: str
    status: str
    detail: str


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def models_dir(settings: Settings) -> Path:
    """The folder Keras loads weight files from: ``<cache_dir>/keras/models``."""
    return settings.keras_home / MODELS_SUBDIR


def configure_keras_home(settings: Settings) -> Path:
    """Make Keras use the kit's writable cache; call before (or instead of) importing keras.

    Sets ``KERAS_HOME`` for Keras imported later. If Keras was already imported with
    another home, its (private) module-level path is redirected too, so weights still
    come from the kit's cache rather than ``~/.keras``.

    Args:
        settings: Course settings; the cache lives under ``settings.cache_dir``.

    Returns:
        The Keras home folder, created if needed.

    Raises:
        PermissionError: The cache folder is not writable (choose another ``cache_dir``).
    """
    home = settings.keras_home
    (home / MODELS_SUBDIR).mkdir(parents=True, exist_ok=True)
    if not os.access(home, os.W_OK):
        raise PermissionError(
            f"The kit's Keras cache {home} is not writable; set KIT_CACHE_DIR to a writable folder."
        )
    os.environ["KERAS_HOME"] = str(home)
    config = sys.modules.get("keras.src.backend.config")
    if config is not None and getattr(config, "_KERAS_DIR", None) != str(home):
        config._KERAS_DIR = str(home)
    return home


def seed_cache(settings: Settings, mirror: Path | None = None, *, known_md5: Mapping[str, str]) -> list[SeedResult]:
    """Copy pre-downloaded weight files from a read-only mirror into the kit's cache.

    Only reads the mirror. A file whose md5 Keras knows is verified first; a mismatch
    is reported (``bad-checksum``) and the file is not copied, so Keras never deletes
    it. A file already in the cache with the same size (and md5 where known) is kept.

    Args:
        settings: Course settings (cache location, ``weights_mirror``).
        mirror: Folder to seed from; ``settings.weights_mirror`` by default. Either the
            folder holding the ``.h5`` files or a Keras home with a ``models/`` subfolder.
        known_md5: File name -> md5 for the files Keras verifies
            (:func:`helpers.backbones.known_md5s`); other files are copied unchecked.

    Returns:
        One :class:`SeedResult` per file in the mirror; empty when there is no mirror.

    Raises:
        FileNotFoundError: The mirror folder was named but does not exist.
    """
    mirror = mirror if mirror is not None else settings.weights_mirror
    if mirror is None:
        return []
    mirror = Path(mirror).expanduser()
    if not mirror.is_dir():
        raise FileNotFoundError(
            f"The weights mirror {mirror} does not exist; fix KIT_WEIGHTS_MIRROR (or weights_mirror in kit.toml)."
        )
    if (mirror / MODELS_SUBDIR).is_dir():
        mirror = mirror / MODELS_SUBDIR
    target_dir = models_dir(settings)
    target_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for source in sorted(p for p in mirror.iterdir() if p.is_file() and not p.name.startswith(".")):
        target = target_dir / source.name
        expected = known_md5.get(source.name)
        if target.is_file() and target.stat().st_size == source.stat().st_size and (
            expected is None or md5sum(target) == expected
        ):
            results.append(SeedResult(source.name, "present", f"already in {target_dir}"))
            continue
        if expected is not None:
            actual = md5sum(source)
            if actual != expected:
                results.append(
                    SeedResult(
                        source.name,
                        "bad-checksum",
                        f"{source} has md5 {actual} but Keras expects {expected}; not copied. "
                        "Replace the mirror's file with a fresh download.",
                    )
                )
                continue
        atomic_copy(source, target)
        results.append(SeedResult(source.name, "copied", f"copied from {mirror}"))
    return results


def ensure_weights(
    settings: Settings, file_name: str, url: str, *, known_md5: Mapping[str, str], progress: bool = True
) -> Path:
    """Make sure a weight file is in the kit's cache, downloading it if needed.

    The download goes to a hidden staging file, is checked against Keras's md5 where
    Keras has one, and only then is renamed to its final name: Keras never sees a
    partial or wrong file.

    Args:
        settings: Course settings (cache location).
        file_name: The file name Keras expects (see :func:`helpers.backbones.weight_file`).
        url: Where to download it from when it is not cached.
        known_md5: File name -> md5 (:func:`helpers.backbones.known_md5s`); a file
            not in it is accepted as downloaded.
        progress: Show a progress bar while downloading.

    Returns:
        The cached file's path.

    Raises:
        WeightsMissingError: It is not cached and cannot be downloaded, or the download
            has the wrong checksum. The message names the file, the folder and the fix.
    """
    target = models_dir(settings) / file_name
    expected = known_md5.get(file_name)
    if target.is_file() and (expected is None or md5sum(target) == expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{file_name}.download")
    try:
        download.fetch(url, staging, progress=progress)
    except (OSError, ValueError) as error:
        raise WeightsMissingError(missing_weights_message(file_name, settings, str(error).splitlines()[0])) from error
    if expected is not None and md5sum(staging) != expected:
        staging.unlink(missing_ok=True)
        raise WeightsMissingError(
            missing_weights_message(file_name, settings, f"the download from {url} does not have md5 {expected}")
        )
    os.replace(staging, target)
    return target


def ensure_class_index(settings: Settings, *, progress: bool = True) -> Path:
    """Make sure ``imagenet_class_index.json`` (for ``decode_predictions``) is cached."""
    return ensure_weights(
        settings, CLASS_INDEX_FILE, CLASS_INDEX_URL, known_md5={CLASS_INDEX_FILE: CLASS_INDEX_MD5}, progress=progress
    )


def missing_weights_message(file_name: str, settings: Settings, reason: str = "") -> str:
    """The sentence shown when a weight file is missing: which file, where, which command."""
    target = models_dir(settings) / file_name
    lines = [
        f"The weight file {file_name} is not in the kit's cache and could not be downloaded"
        + (f" ({reason})." if reason else "."),
        f"Put {file_name} in {target.parent} (or in a mirror folder named by KIT_WEIGHTS_MIRROR)",
        "and run:  python -m helpers prepare",
        "Offline classroom? Ask the instructor for the shared weights folder, or choose a backbone whose",
        "weights are in the cache (python -m helpers prepare lists them).",
    ]
    return "\n".join(lines)


def check_weights(settings: Settings, file_name: str, *, known_md5: Mapping[str, str]) -> SeedResult:
    """Report whether one weight file is in the cache and valid (md5 where ``known_md5`` has one)."""
    target = models_dir(settings) / file_name
    if not target.is_file():
        return SeedResult(file_name, "missing", missing_weights_message(file_name, settings).splitlines()[1])
    expected = known_md5.get(file_name)
    if expected is not None and md5sum(target) != expected:
        return SeedResult(file_name, "bad-checksum", f"{target} does not have md5 {expected}; delete it and run prepare.")
    return SeedResult(file_name, "present", str(target))
