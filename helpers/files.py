"""Writing files so that nobody ever reads half of one: the kit's one atomic-write helper.

Every file the kit writes for later (cached features, weights, downloads, datasets'
photos, saved models, reports, figures) is written to a hidden temporary file in the
same folder and renamed over its final name only once complete. A rename within one
folder is atomic, so a reader sees the old file or the new one, and an interrupted
write (an error, Ctrl-C, a full disk) leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

# mkstemp makes files private (0o600); the kit's caches and outputs are shared and read by others.
SHARED_FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".part", mode: int = SHARED_FILE_MODE) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block succeeds.

    The temporary file exists (empty) when the block starts. If the block raises,
    it is removed and ``path`` is left as it was.

    Args:
        path: The final file; its folder is created if needed.
        suffix: End of the temporary name (``.keras`` where a writer insists on one).
        mode: Permissions of the final file.

    Yields:
        The temporary path.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "note.txt") as temporary:
    ...     _ = temporary.write_text("done")
    >>> (folder / "note.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('done', ['note.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; returns ``path``.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt"
    >>> atomic_write(target, "hello").read_text()
    'hello'
    """
    with atomic_path(path) as temporary:
        temporary.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def atomic_copy(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy ``source`` to ``destination`` atomically (read-only sources give replaceable copies)."""
    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)
    return Path(destination)


def swap_folder(built: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the folder ``built`` at ``target`` in one rename, the old ``target`` (if any) removed after.

    ``built`` must be on the same file system as ``target`` (build it beside it); a
    reader sees the old folder or the new one, never half of each.

    >>> import tempfile, pathlib
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> (base / "new").mkdir(); _ = (base / "new" / "a.txt").write_text("new")
    >>> (base / "live").mkdir(); _ = (base / "live" / "a.txt").write_text("old")
    >>> (swap_folder(base / "new", base / "live") / "a.txt").read_text(), sorted(p.name for p in base.iterdir())
    ('new', ['live'])
    """
    built, target = Path(built), Path(target)
    retired = target.parent / f".{target.name}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        os.replace(target, retired)
    os.replace(built, target)
    shutil.rmtree(retired, ignore_errors=True)
    return target
