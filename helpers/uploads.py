"""Bringing your own images into a notebook: upload widgets, saved uploads, unpacked zips.

JupyterLab's upload button (``ipywidgets.FileUpload``) hands the notebook file names
and bytes. This module turns them into files the kit can read, safely:

* :func:`upload_widget` -- an upload button for images, a zip of class folders, or a
  labels table;
* :func:`save_uploads` -- the uploaded files written to a folder, under cleaned names
  (no folders, no hidden files, never overwriting one another), each written atomically;
* :func:`unpack_images` -- a zip (or tar) of images unpacked once, with the kit's safe
  extraction (no paths outside the folder, no links, a size limit), into a folder named
  by the archive's content; returns the folder that holds the class folders.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers import download, files, sources

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

__all__ = ["DEFAULT_MAX_BYTES", "clean_name", "save_uploads", "unpack_images", "upload_widget", "uploaded_files"]

# Most bytes an uploaded archive may unpack to (a few thousand photos).
DEFAULT_MAX_BYTES = 4_000_000_000
_ACCEPT = {
    "images": ",".join(sorted(sources.IMAGE_EXTENSIONS)),
    "zip": ".zip,.tar,.tgz,.tar.gz",
    "table": ".csv",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def upload_widget(kind: str = "images") -> "ipywidgets.FileUpload":
    """An upload button: ``images`` (several files), ``zip`` (one archive of class folders) or ``table`` (a CSV).

    Used by notebook 05, sections 1 and 7.
    """
    import ipywidgets

    if kind not in _ACCEPT:
        raise ValueError(f"kind must be one of {sorted(_ACCEPT)}, not {kind!r}.")
    descriptions = {"images": "Upload images", "zip": "Upload a zip", "table": "Upload labels"}
    return ipywidgets.FileUpload(accept=_ACCEPT[kind], multiple=kind == "images", description=descriptions[kind])


def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """``(name, content)`` of each uploaded file, from a ``FileUpload.value`` (ipywidgets 8 or 7).

    Used inside :func:`save_uploads` (notebook 05, sections 1 and 7).

    >>> uploaded_files(({"name": "a.jpg", "content": memoryview(b"xy")},))
    [('a.jpg', b'xy')]
    >>> uploaded_files({})
    []
    """
    if not value:
        return []
    if isinstance(value, dict):  # ipywidgets 7: {name: {"content": ...}}
        items = [{"name": name, **entry} for name, entry in value.items()]
    else:
        items = list(value)
    return [(str(item["name"]), bytes(item["content"])) for item in items]


def clean_name(name: str) -> str:
    """A safe file name from an uploaded one: no folders, no leading dots, plain characters.

    Used inside :func:`save_uploads` and :func:`unpack_images` (notebook 05, section 1).

    >>> clean_name("../../etc/passwd")
    'passwd'
    >>> clean_name("My photo (1).JPG")
    'My photo _1_.JPG'
    >>> clean_name(".hidden.png")
    'hidden.png'
    """
    base = Path(str(name).replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).lstrip(". ")
    return base or "upload"


def save_uploads(value: Any, folder: str | os.PathLike) -> list[Path]:
    """Write uploaded files into ``folder`` (created) and return their paths, in upload order.

    Used by notebook 05, sections 1 and 7.

    Names are cleaned (:func:`clean_name`); a name already taken gets ``-2``, ``-3``...
    unless the file there has the same content (uploading twice gives one file).

    Args:
        value: ``FileUpload.value``.
        folder: Where to write them.
    """
    folder = Path(folder).expanduser()
    saved = []
    for name, content in uploaded_files(value):
        target = folder / clean_name(name)
        counter = 1
        while target.exists() and target.read_bytes() != content:
            counter += 1
            target = folder / f"{Path(clean_name(name)).stem}-{counter}{Path(clean_name(name)).suffix}"
        if not target.exists():
            files.atomic_write(target, content)
        saved.append(target)
    return saved


def _image_root(folder: Path) -> Path:
    """Descend through single wrapping folders (``my_photos.zip`` holding ``my_photos/<class>/...``)."""
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".") and e.name not in {"__MACOSX"}]
        if len(entries) == 1 and entries[0].is_dir():
            inner = [e for e in entries[0].iterdir() if not e.name.startswith(".")]
            if any(e.is_dir() for e in inner):
                folder = entries[0]
                continue
        return folder


def unpack_images(
    archive: str | os.PathLike, into: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Path:
    """Unpack an archive of images once and return the folder holding its class folders.

    Used by notebook 05, section 1 (the archive unpacked once, safely).

    The archive is unpacked into ``into/<archive name>-<hash of its content>``, so the same
    archive is unpacked once however often the notebook runs, and another archive never
    mixes with it.

    Args:
        archive: A ``.zip`` (or tar) file.
        into: Parent folder of the unpacked folders.
        max_bytes: Refuse archives that unpack to more.

    Raises:
        FileNotFoundError: No such archive.
        helpers.download.UnsafeArchiveError: A member would land outside the folder, is a
            link, or the archive is too large (nothing is written).
        ValueError: Not a zip or tar archive.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist.")
    digest = hashlib.sha256()
    with archive.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    stem = clean_name(archive.name.split(".")[0]) or "images"
    target = Path(into).expanduser() / f"{stem}-{digest.hexdigest()[:12]}"
    if not (target.is_dir() and any(target.iterdir())):
        download.extract(archive, target, max_bytes=max_bytes)
    return _image_root(target)
