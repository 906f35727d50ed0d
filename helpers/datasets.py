"""The course datasets, each defined once in :data:`CATALOG`, found or fetched, sized by the profile.

==================  =========================================================
``simpsons``        The Simpsons characters (Kaggle, alexattia): one folder per
                    character; the profile picks the most populous characters
                    and a number of images per character.
``photo_vs_drawing`` PACS (Li et al., ICCV 2017): ``photo`` against ``drawing``
                    (art_painting, cartoon and sketch together), balanced.
``photos``          Six CC0 / public-domain photographs shipped with the kit
                    (``helpers/sample_photos``), scored with the ImageNet classifier.
==================  =========================================================

Where a dataset is looked for, in order (nothing is ever written into a read-only
folder, and a folder found in place is only read):

1. the data dir (``settings.data_dir``, ``KIT_DATA_DIR``), in the expected layout;
2. the data mirror (``settings.data_mirror``, ``KIT_DATA_MIRROR``): an unpacked
   folder used in place, or an archive unpacked into a writable data dir;
3. a previous kagglehub download in its cache (Simpsons);
4. a download (kagglehub for the Simpsons, https for PACS), unless offline.

Every selection is deterministic: images are ordered by a hash of their file name,
never by a random draw, so every run of a profile sees the same images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from helpers import download, scan, splits
from helpers.files import atomic_copy
from helpers.settings import Settings, load_settings
from helpers.sources import IMAGE_EXTENSIONS, DatasetError, DroppedRowsWarning, label_rule

PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
PACS_DRAWING_DOMAINS = ("art_painting", "cartoon", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
SIMPSONS_TEST_FOLDER = "kaggle_simpson_testset"
SIMPSONS_FRAME_BLOCK = 20


class DatasetMissingError(FileNotFoundError):
    """A course dataset is neither on disk, nor in the mirror, nor downloadable now.

    Used by notebook 00, section 4 (a dataset that is not ready yet).
    """


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One course dataset.

    Not called in a notebook: the entries of :data:`CATALOG`, whose names notebook 00, section 4 goes through.

    Attributes:
        name: Catalog key (``load_dataset(name)``).
        title: Human name.
        folder: Sub-folder of the data dir it lives in (``<data_dir>/<folder>``).
        layout: The expected layout inside that folder.
        upstream: Where it comes from (page or package).
        download: How the kit downloads it (``kagglehub:<handle>``, an https URL, or a package).
        licence: Licence / terms-of-use note.
        archives: Archive file names looked for in the data mirror.
        sha256: Expected sha256 of the downloaded archive, where known.
        fix: What to do by hand when the dataset cannot be found.
        grouping: How :func:`load_dataset` groups images that must not be split
            apart (the ``group`` column; see :mod:`helpers.splits`), in words.
        test_set: The dataset's own test set, used as the test split when present.
    """

    name: str
    title: str
    folder: str
    layout: str
    upstream: str
    download: str
    licence: str
    archives: tuple[str, ...] = ()
    sha256: str | None = None
    fix: str = ""
    grouping: str = "none"
    test_set: str = "none: a group split of the images stands in"


CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="simpsons",
            title="The Simpsons characters",
            folder="simpsons",
            layout="simpsons/simpsons_dataset/<character>/pic_NNNN.jpg",
            upstream="https://www.kaggle.com/datasets/alexattia/the-simpsons-characters-dataset",
            download="kagglehub:alexattia/the-simpsons-characters-dataset",
            licence=(
                "Frames from The Simpsons (c) 20th Television; shared on Kaggle by Alexandre Attia for research "
                "and teaching. Fine for class use; do not redistribute the images."
            ),
            archives=("simpsons.zip", "simpsons.tar.gz", "simpsons.tgz", "the-simpsons-characters-dataset.zip", "archive.zip"),
            fix=(
                "download the Kaggle dataset alexattia/the-simpsons-characters-dataset (pip install kagglehub and "
                "Kaggle credentials in ~/.kaggle/kaggle.json, or the archive from the Kaggle page) and put the zip "
                "in the data mirror (KIT_DATA_MIRROR) or unpack it into {target}"
            ),
            grouping=(
                f"blocks of {SIMPSONS_FRAME_BLOCK} consecutive frame numbers per character, a stand-in for episodes "
                "(helpers.splits.frame_number_groups)"
            ),
            test_set=(
                "kaggle_simpson_testset/<character>_<N>.jpg beside simpsons_dataset/ (labels in the file names), when "
                "present; otherwise a group split of simpsons_dataset/ stands in"
            ),
        ),
        DatasetSpec(
            name="photo_vs_drawing",
            title="Photographs vs drawings (PACS)",
            folder="pacs",
            layout="pacs/<domain>/<class>/<image> with domains photo, art_painting, cartoon, sketch",
            upstream="https://domaingeneralization.github.io/ (PACS, Li et al., ICCV 2017; files on Google Drive)",
            download="https://drive.usercontent.google.com/download?id=1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd&export=download&confirm=t",
            licence=(
                "PACS was collected from the web by its authors for research; no licence is stated. Use it for "
                "teaching and research, cite Li et al. 2017, do not redistribute."
            ),
            archives=("pacs.zip", "PACS.zip", "pacs.tar.gz", "pacs.tgz"),
            fix=(
                "download PACS.zip (the DomainBed copy on Google Drive, id 1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd) and put "
                "it in the data mirror (KIT_DATA_MIRROR) or unpack it into {target}"
            ),
            grouping=(
                "none by default: PACS has one image per picture, but near-duplicates across the splits are counted "
                "in notebook 04 (helpers.splits.near_duplicate_groups / cross_split_duplicates)"
            ),
        ),
        DatasetSpec(
            name="photos",
            title="Real photographs (shipped with the kit)",
            folder="photos",
            layout="<cache_dir>/photos/<name>.jpg, copied from helpers/sample_photos",
            upstream="six CC0 / public-domain photographs, as distributed in scikit-image (helpers/sample_photos/ATTRIBUTION.md)",
            download="package:helpers",
            licence="Public domain or CC0, per image (see PHOTOS and helpers/sample_photos/ATTRIBUTION.md).",
            fix="reinstall the kit (pip install -e .): helpers/sample_photos holds the photographs",
        ),
    )
}

# The photographs shipped in helpers/sample_photos (their sources: ATTRIBUTION.md there).
SAMPLE_PHOTOS = Path(__file__).resolve().parent / "sample_photos"

# (name, what it shows, licence). The first three are the ones the smoke profile
# scores; they are labelled sensibly by ImageNet classifiers.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("cat", "Chelsea the cat, a tabby", "CC0 (Stefan van der Walt)"),
    ("coffee", "a cup of espresso on a saucer", "CC0 (Rachel Michetti)"),
    ("rocket", "Falcon 9 launching DSCOVR", "public domain (SpaceX)"),
    ("astronaut", "astronaut Eileen Collins", "public domain (NASA)"),
    ("camera", "a photographer with a camera on a tripod (grayscale)", "CC0 (Lav Varshney)"),
    ("clock", "a wall clock, motion blurred (grayscale)", "public domain (Stefan van der Walt)"),
)


def _order(name: str) -> str:
    """Deterministic, well-spread order of files: a hash of the file name."""
    return hashlib.sha1(name.encode()).hexdigest()


def is_writable(path: Path) -> bool:
    """Whether the kit may write into ``path`` (or create it).

    Used by :func:`writable_data_dir` and when :func:`load_dataset` unpacks a dataset (notebook 00, section 4 first).

    Folders without any write permission bit count as read-only even for root,
    who could write anyway: a shared read-only data folder must stay untouched.
    """
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            return False
        existing = existing.parent
    try:
        mode = existing.stat().st_mode
    except OSError:
        return False
    return os.access(existing, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable_data_dir(settings: Settings) -> Path:
    """Where datasets are unpacked: the data dir, or ``<cache_dir>/datasets`` if that is read-only.

    Used by :func:`locate` (notebook 05, sections 1 and 8) and so by :func:`load_dataset`.
    """
    data_dir = Path(settings.data_dir)
    return data_dir if is_writable(data_dir) else Path(settings.cache_dir) / "datasets"


def _subdirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:  # scandir knows folders without a stat per file
            names = [e.name for e in entries if e.is_dir() and not e.name.startswith((".", "__MACOSX"))]
    except OSError:
        return []
    return [folder / name for name in sorted(names)]


def _has_images(folder: Path, limit: int = 50) -> bool:
    try:
        with os.scandir(folder) as entries:
            for index, entry in enumerate(entries):
                if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                    return True
                if index >= limit:
                    return False
    except OSError:
        return False
    return False


def _search(base: Path, accept: Callable[[Path], bool], depth: int) -> Path | None:
    """Breadth-first search for a folder that ``accept`` likes, at most ``depth`` levels down."""
    level = [base] if base.is_dir() else []
    for _ in range(depth + 1):
        for folder in level:
            if accept(folder):
                return folder
        level = [child for folder in level for child in _subdirs(folder)]
    return None


def _is_simpsons_root(folder: Path) -> bool:
    children = _subdirs(folder)
    named = folder.name == "simpsons_dataset" or any(c.name in ("homer_simpson", "bart_simpson") for c in children)
    return named and sum(1 for c in children[:60] if _has_images(c)) >= 2


def _is_pacs_root(folder: Path) -> bool:
    names = {c.name for c in _subdirs(folder)}
    return "photo" in names and bool(names & set(PACS_DRAWING_DOMAINS)) and any(
        _has_images(c) for c in _subdirs(folder / "photo")
    )


_FINDERS: dict[str, Callable[[Path], bool]] = {"simpsons": _is_simpsons_root, "photo_vs_drawing": _is_pacs_root}


def _kagglehub_cache(handle: str) -> list[Path]:
    base = Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")
    versions = base / "datasets" / handle / "versions"
    found = [v for v in _subdirs(versions) if v.name.isdigit()]
    return sorted(found, key=lambda v: int(v.name), reverse=True)


def _candidates(spec: DatasetSpec, settings: Settings) -> list[tuple[Path, int]]:
    """(folder, search depth) pairs to look in, in order, without downloading."""
    places: list[tuple[Path, int]] = [(Path(settings.data_dir) / spec.folder, 3), (Path(settings.data_dir), 1)]
    fallback = writable_data_dir(settings)
    if fallback != Path(settings.data_dir):
        places.append((fallback / spec.folder, 3))
    if settings.data_mirror is not None:
        places += [(Path(settings.data_mirror) / spec.folder, 3), (Path(settings.data_mirror), 1)]
    if spec.download.startswith("kagglehub:"):
        places += [(version, 3) for version in _kagglehub_cache(spec.download.split(":", 1)[1])]
    return places


def _missing(spec: DatasetSpec, settings: Settings, why: str) -> DatasetMissingError:
    target = writable_data_dir(settings) / spec.folder
    return DatasetMissingError(
        f"The dataset {spec.name!r} ({spec.title}) was not found: {why}\n"
        f"Expected layout: {spec.layout}, under {settings.data_dir}"
        + (f" or the data mirror {settings.data_mirror}" if settings.data_mirror else "")
        + f".\nTo fix: {spec.fix.format(target=target)}; then run: python -m helpers prepare"
    )


def _download_simpsons(spec: DatasetSpec) -> Path:
    try:
        import kagglehub
    except ImportError:
        raise DatasetMissingError(
            "kagglehub is not installed, so the Simpsons dataset cannot be downloaded. "
            "Run `pip install kagglehub` (and put Kaggle credentials in ~/.kaggle/kaggle.json), "
            "or use an instructor's data mirror (KIT_DATA_MIRROR)."
        ) from None
    handle = spec.download.split(":", 1)[1]
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as error:  # noqa: BLE001 - kagglehub raises many kinds; the message matters
        raise DatasetMissingError(
            f"kagglehub could not download {handle}: {error}. Kaggle may need credentials "
            "(~/.kaggle/kaggle.json, or KAGGLE_USERNAME and KAGGLE_KEY) and an internet connection; "
            "or use an instructor's data mirror (KIT_DATA_MIRROR)."
        ) from error


def _download_archive(spec: DatasetSpec, settings: Settings, progress: bool) -> Path:
    writable = writable_data_dir(settings)
    archive = writable / "downloads" / spec.archives[0]
    download.fetch(spec.download, archive, sha256=spec.sha256, progress=progress)
    try:
        return _unpack(spec, archive, writable)
    except ValueError as error:
        archive.unlink(missing_ok=True)
        raise DatasetMissingError(
            f"the download of {spec.name} is not a usable archive ({error}); the host may have answered with a web "
            f"page. Download it by hand from {spec.upstream} into the data mirror."
        ) from error


def _unpack(spec: DatasetSpec, archive: Path, writable: Path) -> Path:
    target = writable / spec.folder
    if not is_writable(writable):
        raise DatasetMissingError(f"cannot unpack {archive}: {writable} is not writable; set KIT_DATA_DIR or KIT_CACHE_DIR.")
    download.extract(archive, target)
    return target


def locate(name: str, settings: Settings | None = None, *, download_ok: bool = True, progress: bool = True) -> Path:
    """The folder holding a course dataset in its expected layout, fetching it if needed.

    Used by notebook 05, sections 1 and 8 (the stand-in folders).

    Args:
        name: A :data:`CATALOG` key.
        settings: Course settings (``data_dir``, ``data_mirror``, ``cache_dir``).
        download_ok: May download (False: only data dir, mirror and caches).
        progress: Show progress bars for downloads.

    Returns:
        For ``simpsons`` the ``simpsons_dataset`` folder (one folder per character); for
        ``photo_vs_drawing`` the folder holding the PACS domains; for ``photos`` the
        folder of photographs.

    Raises:
        ValueError: Unknown dataset name.
        DatasetMissingError: Not found and not downloadable; the message says what to do.
    """
    spec = _spec(name)
    settings = settings or load_settings()
    if name == "photos":
        return ensure_photos(settings)
    accept = _FINDERS[name]
    for folder, depth in _candidates(spec, settings):
        found = _search(folder, accept, depth)
        if found is not None:
            return found
    writable = writable_data_dir(settings)
    if settings.data_mirror is not None:
        for archive_name in spec.archives:
            archive = Path(settings.data_mirror) / archive_name
            if archive.is_file():
                found = _search(_unpack(spec, archive, writable), accept, 3)
                if found is not None:
                    return found
    if not download_ok:
        raise _missing(spec, settings, "not in the data dir or the mirror, and downloads are off (offline).")
    if spec.download.startswith("kagglehub:"):
        fetched = _download_simpsons(spec)
    else:
        fetched = _download_archive(spec, settings, progress)
    found = _search(fetched, accept, 4)
    if found is None:
        raise _missing(spec, settings, f"the download in {fetched} does not have the expected layout.")
    return found


def _spec(name: str) -> DatasetSpec:
    if name not in CATALOG:
        raise ValueError(f"unknown dataset {name!r}; the course datasets are {sorted(CATALOG)}.")
    return CATALOG[name]


def _images_in(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        found += [
            Path(dirpath) / n for n in filenames if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found, key=lambda p: (_order(p.name), str(p)))


def _round_robin(streams: list[list[Any]], count: int) -> list[Any]:
    """Take one item from each stream in turn until ``count`` (0 = everything)."""
    chosen, position = [], 0
    total = sum(len(s) for s in streams)
    limit = total if count <= 0 else min(count, total)
    while len(chosen) < limit:
        for stream in streams:
            if position < len(stream) and len(chosen) < limit:
                chosen.append(stream[position])
        position += 1
    return chosen


def _pick_usable(
    groups: dict[Any, list[list[Path]]], count: int | Callable[[Any], int], settings: Settings
) -> tuple[dict[Any, list[Path]], list[dict[str, Any]]]:
    """Pick ``count`` files per group round-robin over its streams, replacing unusable ones."""
    excluded: set[Path] = set()
    problems: list[dict[str, Any]] = []
    while True:
        picked = {
            key: _round_robin([[p for p in s if p not in excluded] for s in streams], count(key) if callable(count) else count)
            for key, streams in groups.items()
        }
        flat = [(key, path) for key, paths in picked.items() for path in paths]
        records = scan.inspect_paths([p for _, p in flat], settings=settings)
        bad = [(key, path, record) for (key, path), record in zip(flat, records) if record["kind"] is not None]
        if not bad:
            return picked, problems
        for key, path, record in bad:
            excluded.add(path)
            problems.append({"path": str(path), "label": key, "reason": record["reason"]})


def _report(frame: pd.DataFrame, problems: list[dict[str, Any]], name: str, root: Path) -> pd.DataFrame:
    frame.attrs.update({"dataset": name, "root": str(root), "dropped": problems})
    if problems:
        warnings.warn(
            f"{name}: skipped {len(problems)} unusable file(s) and took the next ones instead; "
            "helpers.sources.dropped(frame) lists them.",
            DroppedRowsWarning,
            stacklevel=3,
        )
    return frame


def simpsons_test_folder(root: Path) -> Path | None:
    """The Kaggle test folder (``kaggle_simpson_testset``) beside a ``simpsons_dataset`` folder, if any.

    Used by ``load_dataset("simpsons")``: the Kaggle test folder becomes the test split (notebook 02, section 1).

    Upstream it sits beside ``simpsons_dataset`` and may be nested once
    (``kaggle_simpson_testset/kaggle_simpson_testset/``); the folder holding the images is returned.
    """
    for folder in (root.parent / SIMPSONS_TEST_FOLDER, root / SIMPSONS_TEST_FOLDER):
        found = _search(folder, _has_images, 2)
        if found is not None:
            return found
    return None


def _simpsons_test_rows(root: Path, characters: Sequence[str], settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the Kaggle test set (``<character>_<N>.jpg``) for the chosen characters, marked ``test``."""
    folder = simpsons_test_folder(root)
    if folder is None:
        return [], []
    parse = label_rule("before_number")
    chosen = set(characters)
    files = [p for p in _images_in(folder) if parse(p) in chosen]
    records = scan.inspect_paths(files, settings=settings)
    rows, problems = [], []
    for path, record in zip(files, records):
        if record["kind"] is None:
            rows.append({"path": str(path), "label": parse(path), "split": "test", "group": f"test/{path.name}"})
        else:
            problems.append({"path": str(path), "label": parse(path), "reason": record["reason"]})
    return rows, problems


def select_simpsons(root: Path, settings: Settings) -> pd.DataFrame:
    """The profile's Simpsons subset from a ``simpsons_dataset`` folder, with episode groups.

    Used by ``load_dataset("simpsons")`` (notebook 02, section 1).

    The ``simpsons_characters`` characters with the most images (ties by name; 0 =
    all), and ``simpsons_per_class`` images of each (0 = all), ordered by a hash of
    the file name; unusable files are replaced by the next ones. A ``group`` column
    holds blocks of :data:`SIMPSONS_FRAME_BLOCK` frame numbers (a stand-in for
    episodes: :func:`helpers.splits.frame_number_groups`), so that
    :func:`helpers.splits.split_dataset` keeps each block on one side.

    When the Kaggle test folder (``kaggle_simpson_testset/<character>_<N>.jpg``) sits
    beside ``simpsons_dataset``, its images of the chosen characters are added with
    ``split`` already ``test``: the dataset's own test set is the test split, and
    ``split_dataset`` divides the rest into train and validation.
    """
    run = settings.scale
    folders = {folder.name: _images_in(folder) for folder in _subdirs(root)}
    folders = {name: files for name, files in folders.items() if files}
    ranked = sorted(folders, key=lambda name: (-len(folders[name]), name))
    if run.simpsons_characters:
        ranked = ranked[: run.simpsons_characters]
    picked, problems = _pick_usable({name: [folders[name]] for name in ranked}, run.simpsons_per_class, settings)
    rows = [{"path": str(p), "label": name} for name, paths in picked.items() for p in paths]
    frame = pd.DataFrame(rows, columns=["path", "label"]).sort_values(["label", "path"]).reset_index(drop=True)
    frame["group"] = splits.frame_number_groups(frame, SIMPSONS_FRAME_BLOCK)
    test_rows, test_problems = _simpsons_test_rows(root, ranked, settings)
    if test_rows:
        frame.insert(2, "split", None)
        test = pd.DataFrame(test_rows, columns=["path", "label", "split", "group"]).sort_values(["label", "path"])
        frame = pd.concat([frame, test], ignore_index=True)
    frame.attrs["test_set"] = str(simpsons_test_folder(root)) if test_rows else None
    return _report(frame, problems + test_problems, "simpsons", root)


def select_photo_vs_drawing(root: Path, settings: Settings) -> pd.DataFrame:
    """The profile's balanced photo-vs-drawing set from a PACS folder.

    Used by ``load_dataset("photo_vs_drawing")`` (notebook 04, section 1).

    ``photo`` images against ``drawing`` (art_painting, cartoon, sketch), ``pacs_per_class``
    of each label (0 = as many as the smaller side has). Drawings are spread evenly
    over the three domains and the seven classes, photos over the classes.
    """
    classes = [c.name for c in _subdirs(root / "photo")] or list(PACS_CLASSES)
    domains = [d for d in PACS_DRAWING_DOMAINS if (root / d).is_dir()]
    photo_streams = [_images_in(root / "photo" / c) for c in classes]
    drawing_streams = [_images_in(root / d / c) for c in classes for d in domains]
    available = min(sum(map(len, photo_streams)), sum(map(len, drawing_streams)))
    per_label = settings.scale.pacs_per_class or available
    picked, problems = _pick_usable({"photo": photo_streams, "drawing": drawing_streams}, min(per_label, available), settings)
    rows = []
    for label, paths in picked.items():
        for path in paths:
            domain, object_class = path.relative_to(root).parts[:2]
            rows.append({"path": str(path), "label": label, "domain": domain, "object": object_class})
    frame = pd.DataFrame(rows, columns=["path", "label", "domain", "object"])
    frame = frame.sort_values(["label", "domain", "object", "path"]).reset_index(drop=True)
    return _report(frame, problems, "photo_vs_drawing", root)


def photos_dir(settings: Settings) -> Path:
    """Where the photographs are written: ``<cache_dir>/photos``.

    Used by :func:`ensure_photos`, for ``load_dataset("photos")`` (notebook 01, section 2).
    """
    return Path(settings.cache_dir) / "photos"


def ensure_photos(settings: Settings | None = None) -> Path:
    """Copy the kit's photographs (``helpers/sample_photos``) into the cache once (atomically); return their folder.

    Used by ``load_dataset("photos")`` (notebook 01, section 2).

    Raises:
        DatasetMissingError: The kit's installation lacks a photograph.
    """
    settings = settings or load_settings()
    folder = photos_dir(settings)
    for name, *_ in PHOTOS:
        path, source = folder / f"{name}.jpg", SAMPLE_PHOTOS / f"{name}.jpg"
        if path.is_file() and path.stat().st_size > 0:
            continue
        if not source.is_file():
            raise DatasetMissingError(f"{source} is missing from the kit; reinstall it (pip install -e .).")
        atomic_copy(source, path)
    return folder


def select_photos(folder: Path, settings: Settings) -> pd.DataFrame:
    """The profile's photographs: the first ``photos`` of :data:`PHOTOS` (0 = all).

    Used by ``load_dataset("photos")`` (notebook 01, section 2).
    """
    count = settings.scale.photos or len(PHOTOS)
    rows = [
        {"path": str(folder / f"{name}.jpg"), "label": name, "description": description, "licence": licence}
        for name, description, licence in PHOTOS[:count]
    ]
    frame = pd.DataFrame(rows, columns=["path", "label", "description", "licence"])
    frame.attrs.update({"dataset": "photos", "root": str(folder), "dropped": []})
    return frame


_SELECTORS: dict[str, Callable[[Path, Settings], pd.DataFrame]] = {
    "simpsons": select_simpsons,
    "photo_vs_drawing": select_photo_vs_drawing,
    "photos": select_photos,
}


def load_dataset(name: str, settings: Settings | None = None, *, download_ok: bool = True) -> pd.DataFrame:
    """Load a course dataset, sized by the run profile.

    Used by every notebook: notebook 00, section 4; notebook 01, section 2; notebooks 02, 03 and 04, section 1;
    notebook 05, section 7.

    Args:
        name: ``simpsons``, ``photo_vs_drawing`` or ``photos`` (see :data:`CATALOG`).
        settings: Course settings; loaded when omitted (``KIT_PROFILE`` etc.).
        download_ok: May download when the data is neither in the data dir nor the mirror.

    Returns:
        A frame with ``path`` and ``label`` (``photo_vs_drawing`` adds ``domain`` and
        ``object``; ``photos`` adds ``description`` and ``licence``). Every file has
        passed the scan; skipped files are in ``helpers.sources.dropped(frame)``.
        ``frame.attrs["root"]`` is the folder it came from.

    Raises:
        ValueError: Unknown name.
        DatasetMissingError: The data is not available; the message says how to get it.
    """
    settings = settings or load_settings()
    root = locate(name, settings, download_ok=download_ok)
    frame = _SELECTORS[name](root, settings)
    if not len(frame):
        raise DatasetError(f"no images found for {name!r} in {root}; expected layout: {CATALOG[name].layout}.")
    return frame


def catalog_rows() -> list[dict[str, str]]:
    """The catalog as rows: name, title, layout, upstream, grouping, test set and licence.

    Shown in notebook 00, section 3 (what is ready): where each dataset comes from and how it is split.
    """
    return [
        {
            "dataset": spec.name,
            "title": spec.title,
            "layout": spec.layout,
            "upstream": spec.upstream,
            "grouping": spec.grouping,
            "test set": spec.test_set,
            "licence": spec.licence,
        }
        for spec in CATALOG.values()
    ]


def iter_specs(names: Iterable[str] | None = None) -> list[DatasetSpec]:
    """Catalog entries by name (all by default), validating the names.

    Not called in a notebook: notebook 00, section 3's ``prepare.prepare`` goes through the catalog with it.
    """
    return [_spec(name) for name in (names or CATALOG)]
