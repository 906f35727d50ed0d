"""Safe downloads and archive extraction: the kit's one downloader.

:func:`fetch` gets a file from a local mirror folder (offline classroom) or over
https, with retries that resume where the connection broke (HTTP ``Range``), an
optional sha256 check and a progress bar. Bytes go to a temporary file beside the
destination that is renamed only once complete and verified, so a half-written file
never appears under its final name. :func:`extract` unpacks zip and tar archives
after checking every member: absolute paths, ``..`` components, links and device
files are refused before anything is written.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from helpers.files import atomic_copy, atomic_path
from helpers import progress as progress_bars

# Plain http is only allowed to this machine (the tests' throw-away servers).
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# HTTP statuses worth retrying; any other 4xx means the request itself is wrong.
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A file could not be downloaded (after retries), or its mirror copy is unusable."""


class ChecksumError(DownloadError):
    """A downloaded or mirrored file does not have the expected sha256."""


class UnsafeArchiveError(ValueError):
    """An archive has members that would write outside the target folder, or links."""


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
        return
    raise ValueError(
        f"refusing to download {url!r}: only https URLs are allowed (plain http only from 127.0.0.1)."
    )


def _matches(path: Path, sha256: str | None) -> bool:
    return path.is_file() and (sha256 is None or sha256sum(path) == sha256.lower())


def _from_mirror(url: str, destination: Path, sha256: str | None, mirror_dirs: Iterable[str | os.PathLike]) -> Path | None:
    """Copy the file from the first mirror folder that has a valid copy; None if none has."""
    names = {destination.name, PurePosixPath(urllib.parse.urlsplit(url).path).name} - {""}
    for folder in mirror_dirs:
        if folder is None:
            continue
        for name in sorted(names):
            candidate = Path(folder).expanduser() / name
            if not candidate.is_file():
                continue
            if sha256 is not None and sha256sum(candidate) != sha256.lower():
                # A bad mirror copy is skipped, not fatal: the download may still work.
                continue
            atomic_copy(candidate, destination)
            return destination
    return None


def _content_range_start(header: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None


def _download_once(url: str, part: Path, timeout: float, progress_bar) -> None:
    """One attempt: resume ``part`` from its current size if the server allows it."""
    have = part.stat().st_size
    request = urllib.request.Request(url, headers={"User-Agent": "tl-workshop-kit"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            # The server cannot serve the range (file changed?): start again from zero.
            part.write_bytes(b"")
            progress_bar.reset()
            raise
        raise
    with response:
        status = getattr(response, "status", 200)
        if status == 206:
            if _content_range_start(response.headers.get("Content-Range")) != have:
                # Another range than asked for: start the file again on the next attempt.
                part.write_bytes(b"")
                progress_bar.reset()
                raise OSError(f"the server answered an unexpected byte range for {url}")
            mode = "ab"  # resuming
        else:
            # A full answer (200): the server ignored the Range header; start again.
            mode, have = "wb", 0
            progress_bar.reset()
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        if progress_bar.total is None and expected is not None:
            progress_bar.reset(total=have + expected)  # through reset, the notebook widget learns its length too
        progress_bar.update(have - progress_bar.n)
        received = 0
        with part.open(mode) as handle:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                progress_bar.update(len(chunk))
        if expected is not None and received < expected:
            raise http.client.IncompleteRead(b"", expected - received)


def fetch(
    url: str,
    destination: str | os.PathLike,
    *,
    sha256: str | None = None,
    mirror_dirs: Iterable[str | os.PathLike | None] = (),
    retries: int = 3,
    progress: bool = True,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Make ``destination`` a complete, verified copy of ``url``.

    Order: an existing valid ``destination`` is kept; then each mirror folder is
    searched for a file of the same name (a copy with the wrong sha256 is skipped);
    then the URL is downloaded. Downloads go to a temporary file beside
    ``destination``; after a dropped connection the next attempt asks for the missing
    bytes only (HTTP Range) when the server supports it. The file is renamed into
    place only once complete and, when ``sha256`` is given, verified; on failure the
    temporary file is removed, so no partial file is ever left.

    Args:
        url: ``https://`` URL (``http://`` is accepted for 127.0.0.1 only).
        destination: Final file path; its folder is created.
        sha256: Expected hex sha256; None skips the check (say so to the user).
        mirror_dirs: Folders searched for a pre-downloaded copy before downloading.
        retries: Extra attempts after the first failed one.
        progress: Show a tqdm progress bar.
        timeout: Seconds to wait for the server on each network operation.
        backoff: Seconds before the first retry; doubled on each further one.

    Returns:
        The destination path.

    Raises:
        ValueError: The URL is not https (or http to 127.0.0.1).
        ChecksumError: The downloaded file has the wrong sha256 (nothing is kept).
        DownloadError: The file could not be downloaded after all attempts.
    """
    _check_url(url)
    if retries < 0:
        raise ValueError("retries must be 0 or more.")
    destination = Path(destination).expanduser()
    destination.parent.mkdir(parents=True, exist_ok=True)
    if _matches(destination, sha256):
        return destination
    if _from_mirror(url, destination, sha256, mirror_dirs) is not None:
        return destination

    last_error: BaseException | None = None
    with atomic_path(destination) as part:  # renamed into place only if nothing below raises
        with progress_bars.bar(
            total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=destination.name, disable=not progress, leave=False
        ) as progress_bar:
            for attempt in range(retries + 1):
                try:
                    _download_once(url, part, timeout, progress_bar)
                    last_error = None
                    break
                except urllib.error.HTTPError as error:
                    last_error = error
                    if error.code not in _RETRY_STATUSES and error.code != 416:
                        break
                except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, OSError) as error:
                    last_error = error
                if attempt < retries:
                    time.sleep(backoff * 2**attempt)
        if last_error is not None:
            raise DownloadError(
                f"could not download {url} after {retries + 1} attempt(s): {last_error}. "
                "Check the connection, or put the file in a mirror folder (KIT_DATA_MIRROR / KIT_WEIGHTS_MIRROR)."
            ) from last_error
        if sha256 is not None:
            actual = sha256sum(part)
            if actual != sha256.lower():
                raise ChecksumError(
                    f"{url} downloaded with sha256 {actual}, expected {sha256.lower()}; the file was discarded. "
                    "The server may have changed the file or the download was tampered with; try again or use a mirror."
                )
    return destination


def _archive_kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ValueError(f"{archive} is neither a zip nor a tar archive (.zip, .tar, .tar.gz, .tgz).")


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    cleaned = name.replace("\\", "/")
    path = PurePosixPath(cleaned)
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract.")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the target (..); refusing to extract.")
    return path


def _safe_members(archive: Path, kind: str, max_bytes: int | None) -> None:
    """Check every member before anything is written."""
    total = 0
    if kind == "zip":
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                _check_member_name(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract.")
                total += info.file_size
    else:
        with tarfile.open(archive) as bundle:
            for member in bundle.getmembers():
                _check_member_name(member.name, archive)
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link; refusing to extract.")
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device or special file; refusing.")
                total += member.size
    if max_bytes is not None and total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive} would unpack to {total} bytes, more than the limit of {max_bytes}; refusing to extract."
        )


def extract(archive: str | os.PathLike, target_dir: str | os.PathLike, *, max_bytes: int | None = None) -> Path:
    """Unpack a zip or tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) archive safely.

    Every member is checked first: absolute paths, ``..`` components, symbolic and
    hard links, and device files make the whole archive rejected before anything is
    written. The archive is unpacked into a hidden staging folder beside
    ``target_dir`` and moved into place at the end, so an interrupted extraction
    never leaves a half-filled target.

    Args:
        archive: The archive file.
        target_dir: Folder to unpack into; created. Existing entries of the same
            name are not overwritten.
        max_bytes: Refuse archives whose members add up to more than this.

    Returns:
        ``target_dir``.

    Raises:
        UnsafeArchiveError: A member is unsafe (nothing is written).
        ValueError: The file is not a zip or tar archive.
        FileExistsError: An entry of the archive already exists in ``target_dir``.
    """
    archive = Path(archive)
    target = Path(target_dir).expanduser()
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist.")
    kind = _archive_kind(archive)
    _safe_members(archive, kind, max_bytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
        else:
            with tarfile.open(archive) as bundle:
                if hasattr(tarfile, "data_filter"):
                    bundle.extractall(staging, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were checked above
                    bundle.extractall(staging)
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
            return target
        entries = list(staging.iterdir())
        clashes = [entry.name for entry in entries if (target / entry.name).exists()]
        if clashes:
            raise FileExistsError(
                f"{target} already has {clashes[:3]}; remove them or extract {archive.name} somewhere else."
            )
        for entry in entries:
            os.replace(entry, target / entry.name)
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
