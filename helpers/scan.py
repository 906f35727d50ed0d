"""Find unusable image files before training, so that nothing fails mid-epoch.

:func:`scan_images` opens every file of a dataset frame and sorts the rows into
usable ones and problems, each problem with a reason:

========================  =====================================================
kind                      what it means
========================  =====================================================
``missing``               the file does not exist (any more)
``empty``                 the file has 0 bytes
``not-an-image``          the content is not an image (a text file named .jpg)
``unsupported-format``    an image format the pipeline does not read (TIFF, ...)
``too-large``             more pixels than the limit: a decompression bomb, or
                          just far too big (checked from the header, not decoded)
``truncated``             the file ends before the image data does
``corrupt``               the image data cannot be decoded
========================  =====================================================

The pipeline reads JPEG, PNG, BMP, GIF (first frame) and WebP, in every colour mode
(grayscale, RGBA, CMYK, palette, 16-bit): each usable file gets a *decoder*: ``tf``
(TensorFlow's own decoder, the fast path) or ``pil`` (Pillow, for what TensorFlow
gets wrong: palette/1-bit BMPs, transparency, EXIF rotation).

Results are cached by (path, size, modification time), in memory and in
``<cache_dir>/scan/scan-cache.json``, so scanning again is fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from helpers.files import atomic_write
from helpers.settings import Settings, load_settings
from helpers.sources import DatasetError, common_folder

DEFAULT_MAX_PIXELS = 40_000_000
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
PROBLEM_COLUMNS = ["path", "label", "kind", "reason"]
KINDS = ("missing", "empty", "not-an-image", "unsupported-format", "too-large", "truncated", "corrupt")
_CACHE_VERSION = 2  # bump when the checks or the decoder rules change

# Formats and modes TensorFlow's decoders read exactly as Pillow does (checked by the
# tests); everything else -- palette and 1-bit BMPs, animated WebP/PNG, transparency,
# EXIF rotation, rarer modes -- goes to Pillow rather than risk a wrong or failed decode.
_TF_MODES = {
    "JPEG": {"L", "RGB", "CMYK"},
    "PNG": {"1", "L", "P", "RGB", "I", "I;16", "I;16B", "I;16L"},
    "GIF": {"L", "P", "RGB"},
    "BMP": {"RGB"},
    "WEBP": {"RGB"},
}
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}

_MEMORY: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()
_OPEN_LOCK = threading.Lock()
_LOADED: set[str] = set()  # cache files already read into memory


@dataclasses.dataclass
class ScanResult:
    """What :func:`scan_images` found.

    Returned by :func:`scan_images` in notebook 05, sections 2 and 8.

    Attributes:
        good: The usable rows, with ``width``, ``height``, ``format``, ``mode`` and
            ``decoder`` columns added.
        problems: One row per unusable file: ``path``, ``label``, ``kind``, ``reason``.
    """

    good: pd.DataFrame
    problems: pd.DataFrame

    def summary(self) -> str:
        """One line: how many usable files, how many problems of each kind."""
        text = f"{len(self.good)} usable image(s), {len(self.problems)} problem(s)"
        if len(self.problems):
            counts = self.problems["kind"].value_counts()
            text += ": " + ", ".join(f"{count} {kind}" for kind, count in counts.items())
        return text

    def __str__(self) -> str:
        lines = [self.summary()]
        if len(self.problems):
            lines.append(self.problems[["path", "reason"]].to_string(index=False, max_colwidth=80))
        return "\n".join(lines)


def _record(kind: str | None, reason: str = "", **info: Any) -> dict[str, Any]:
    return {"kind": kind, "reason": reason, **info}


def _sniff(head: bytes) -> str | None:
    """The format by its magic number, for the formats the pipeline reads."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _choose_decoder(image: Any, fmt: str) -> str:
    """``tf`` where TensorFlow decodes the file exactly as Pillow would, else ``pil``."""
    mode = image.mode
    if mode not in _TF_MODES.get(fmt, ()) or mode in _ALPHA_MODES or "transparency" in image.info:
        return "pil"  # transparency is composited on white; TensorFlow would drop it
    if fmt in ("PNG", "WEBP") and getattr(image, "is_animated", False):
        return "pil"  # TensorFlow fails on animated WebP; Pillow reads the first frame
    if fmt in ("JPEG", "WEBP", "PNG"):
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block is not worth rejecting the image for
            orientation = 1
        if orientation not in (None, 1):
            return "pil"  # TensorFlow ignores EXIF rotation
    return "tf"


def inspect_file(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Check one file without the cache.

    Used inside :func:`inspect_paths` (notebook 05, section 2).

    Returns:
        A dict with ``kind`` (None when usable, else one of :data:`KINDS`), ``reason``,
        and for readable images ``format``, ``mode``, ``width``, ``height``, ``decoder``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return _record("missing", "file does not exist")
    except OSError as error:
        return _record("missing", f"cannot read the file ({error.strerror or error})")
    if size == 0:
        return _record("empty", "empty file (0 bytes)")
    try:
        with path.open("rb") as handle:
            head = handle.read(32)
    except OSError as error:
        return _record("missing", f"cannot read the file ({error.strerror or error})")
    fmt = _sniff(head)
    try:
        # Pillow warns about huge images when opening them; the scan reports them
        # itself. catch_warnings is process-wide, hence the lock (opening reads the
        # header only, so the lock is held for microseconds).
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        return _record("too-large", f"decompression bomb refused by Pillow ({error})")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if fmt is None:
            what = "a text file" if _looks_like_text(head) else "unknown content"
            return _record("not-an-image", f"not an image ({what})")
        return _record("corrupt", f"{fmt} header cannot be read ({error})")
    with image:
        real = (image.format or "").upper()
        if fmt is None or real not in SUPPORTED_FORMATS:
            return _record(
                "unsupported-format",
                f"{real or 'this'} format is not supported (use JPEG, PNG, BMP, GIF or WebP; convert it)",
                format=real,
            )
        width, height = image.size
        info = {"format": real, "mode": image.mode, "width": int(width), "height": int(height)}
        pixels = width * height
        if pixels > max_pixels:
            return _record(
                "too-large", f"{width}x{height} = {pixels / 1e6:.0f} megapixels, over the {max_pixels / 1e6:g} MP limit", **info
            )
        if pixels == 0:
            return _record("corrupt", "image has no pixels (0 width or height)", **info)
        decoder = _choose_decoder(image, real)
        try:
            if real == "JPEG":
                # Decoding at 1/8 scale still reads every byte of the stream: it finds
                # truncation and corruption about 3x faster than a full decode.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            message = str(error)
            if "truncated" in message.lower() or isinstance(error, EOFError):
                return _record("truncated", f"truncated {real} file ({message})", **info)
            return _record("corrupt", f"corrupt {real} data ({message})", **info)
    return _record(None, "", decoder=decoder, **info)


def _cache_file(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "scan" / "scan-cache.json"


def _load_disk_cache(path: Path) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("version") != _CACHE_VERSION:
        return
    with _LOCK:
        for key, entry in data.get("entries", {}).items():
            _MEMORY.setdefault(key, entry)


def _save_disk_cache(path: Path) -> None:
    with _LOCK:
        payload = json.dumps({"version": _CACHE_VERSION, "entries": _MEMORY})
    try:
        atomic_write(path, payload)
    except OSError:
        pass  # the cache only saves time; a read-only cache folder must not stop a scan


def _clear_cache(settings: Settings | None = None) -> None:
    """Forget every cached scan result (in memory, and on disk when settings are given).

    For the tests, which stand in for a new process this way; users never need it (a
    cached result is used only while the file's size and time stamp are unchanged).
    """
    with _LOCK:
        _MEMORY.clear()
        _LOADED.clear()
    if settings is not None:
        _cache_file(settings).unlink(missing_ok=True)


def _cached_inspect(path: str, max_pixels: int) -> tuple[dict[str, Any], bool]:
    """(record, fresh) for one path, using the cache when size and mtime still match."""
    try:
        stat = os.stat(path)
        key_stamp = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        return inspect_file(path, max_pixels), False  # missing files are never cached
    with _LOCK:
        entry = _MEMORY.get(path)
    if entry is not None and entry["stamp"] == key_stamp:
        record = entry["record"]
        pixels = record.get("width", 0) * record.get("height", 0)
        if record["kind"] is None and pixels > max_pixels:
            return _record(
                "too-large",
                f"{record['width']}x{record['height']} = {pixels / 1e6:.0f} megapixels, over the {max_pixels / 1e6:g} MP limit",
                **{k: record[k] for k in ("format", "mode", "width", "height")},
            ), False
        if record["kind"] != "too-large" or pixels > max_pixels:
            return record, False
    record = inspect_file(path, max_pixels)
    with _LOCK:
        _MEMORY[path] = {"stamp": key_stamp, "record": record}
    return record, True


def inspect_paths(
    paths: Iterable[str | os.PathLike],
    *,
    settings: Settings | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Check many files (cached), in order; see :func:`inspect_file` for the records.

    Used inside :func:`scan_images` (notebook 05, section 2) and by ``pipeline.load_image`` (notebook 01, section 2).
    """
    paths = [str(Path(p).expanduser()) for p in paths]
    if max_pixels < 1:
        raise ValueError("max_pixels must be a positive number of pixels (for example 40_000_000).")
    if not cache:
        return [inspect_file(p, max_pixels) for p in paths]
    settings = settings or load_settings()
    cache_path = _cache_file(settings)
    if str(cache_path) not in _LOADED:
        _LOADED.add(str(cache_path))
        if cache_path.is_file():
            _load_disk_cache(cache_path)
    # Pillow releases the GIL while decoding, so two threads use both cores.
    workers = workers or min(4, os.cpu_count() or 1)
    if len(paths) < 64 or workers == 1:
        results = [_cached_inspect(p, max_pixels) for p in paths]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda p: _cached_inspect(p, max_pixels), paths, chunksize=32))
    if any(fresh for _, fresh in results):
        _save_disk_cache(cache_path)
    return [record for record, _ in results]


def usable_rows(paths: Sequence[str], *, settings: Settings | None = None) -> tuple[list[int], list[str | None]]:
    """Positions of the readable images among ``paths``, and per file an error (``"kind: reason"``) or None.

    Used inside ``scoring.predict_files``: the unreadable file of notebook 01, section 4 gets an error, not a crash.

    Used by the scoring and recipe helpers to process the good files and report the bad ones.
    """
    errors: list[str | None] = [None] * len(paths)
    usable = []
    for row, record in enumerate(inspect_paths(paths, settings=settings)):
        if record["kind"] is None:
            usable.append(row)
        else:
            errors[row] = f"{record['kind']}: {record['reason']}"
    return usable, errors


def check_classes(good: pd.DataFrame, scanned: pd.DataFrame, *, min_classes: int = 2) -> None:
    """Stop with a clear error when the usable images cannot train a classifier.

    Used inside :func:`scan_images` (notebook 05, section 2).

    Args:
        good: The usable rows.
        scanned: Every row that was scanned (to name the folder of a lost class).
        min_classes: Fewest classes accepted.

    Raises:
        DatasetError: No usable image, a class that lost all its images, or fewer
            than ``min_classes`` classes. The message names the folder.
    """
    if not len(good):
        folder = common_folder(scanned["path"]) if len(scanned) else "(no files given)"
        raise DatasetError(
            f"no usable image in {folder}: every file was rejected by the scan (see the problems table) "
            "or the dataset is empty. Add images to that folder or point the kit at the right one."
        )
    if "label" not in good.columns:
        return
    lost = sorted(set(scanned["label"]) - set(good["label"]), key=str)
    if lost:
        details = "; ".join(
            f"{label!r} in {common_folder(scanned.loc[scanned['label'] == label, 'path'])}" for label in lost
        )
        raise DatasetError(
            f"class(es) with no usable image: {details}. Fix or replace those files (see the problems table), "
            "or remove the class."
        )
    classes = good["label"].nunique()
    if classes < min_classes:
        raise DatasetError(
            f"only {classes} class ({', '.join(map(str, good['label'].unique()))}) in {common_folder(good['path'])}; "
            f"a classifier needs at least {min_classes}. Add a folder (or labelled images) for each other class."
        )


def scan_images(
    frame: pd.DataFrame | Sequence[str],
    *,
    settings: Settings | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    min_classes: int | None = 2,
) -> ScanResult:
    """Check every image of a dataset and separate usable files from problems.

    Taught in notebook 05, section 2 (every file checked); used again in section 8.

    Args:
        frame: A dataset frame (``path`` column, usually ``label``), or a list of paths.
        settings: Course settings (where the scan cache lives); loaded when omitted.
        max_pixels: Images with more pixels are rejected as ``too-large``, from
            their header alone (protects against decompression bombs).
        cache: Reuse results for files whose size and mtime have not changed.
        min_classes: With a ``label`` column, stop unless at least this many classes
            keep a usable image, and if any class lost all of its images. None skips
            the class checks (an empty result still stops).

    Returns:
        A :class:`ScanResult`: ``good`` rows (columns added: width, height, format,
        mode, decoder) and ``problems`` (path, label, kind, reason).

    Raises:
        DatasetError: Nothing usable, a class with no usable image, or too few classes.
        ValueError: ``frame`` has no ``path`` column.
    """
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame({"path": [str(p) for p in frame]})
    if "path" not in frame.columns:
        raise ValueError(f"the frame needs a 'path' column; it has {list(frame.columns)}.")
    records = inspect_paths(frame["path"], settings=settings, max_pixels=max_pixels, cache=cache)
    ok = [record["kind"] is None for record in records]
    good = frame.loc[ok].copy()
    for column in ("width", "height", "format", "mode", "decoder"):
        good[column] = [record.get(column) for record, keep in zip(records, ok) if keep]
    good = good.reset_index(drop=True)
    bad_rows = [
        {
            "path": path,
            "label": label,
            "kind": record["kind"],
            "reason": record["reason"],
        }
        for path, label, record in zip(
            frame["path"], frame["label"] if "label" in frame.columns else [None] * len(frame), records
        )
        if record["kind"] is not None
    ]
    problems = pd.DataFrame(bad_rows, columns=PROBLEM_COLUMNS)
    if min_classes is not None:
        check_classes(good, frame, min_classes=min_classes if "label" in frame.columns else 0)
    elif not len(good):
        check_classes(good, frame, min_classes=0)
    return ScanResult(good=good, problems=problems)


def decoders_for(
    paths: Sequence[str], *, settings: Settings | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[str]:
    """The decoder (``tf`` or ``pil``) for each path, refusing unusable files.

    Used inside ``pipeline.make_dataset`` (notebook 03, section 3).

    Raises:
        ValueError: Some files are unusable; the message lists them and says to run
            :func:`scan_images` first and keep ``result.good``.
    """
    records = inspect_paths(paths, settings=settings, max_pixels=max_pixels)
    bad = [(path, record["reason"]) for path, record in zip(paths, records) if record["kind"] is not None]
    if bad:
        listing = "\n".join(f"  {path}: {reason}" for path, reason in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(
            f"{len(bad)} of {len(paths)} file(s) cannot be read:\n{listing}{more}\n"
            "Run helpers.scan.scan_images(frame) first and build the pipeline from result.good."
        )
    return [record["decoder"] for record in records]
