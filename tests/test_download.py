"""helpers.download: fetch (mirror, https, checksum, retries with resume) and safe extraction.

Every network test talks to a throw-away HTTP server on 127.0.0.1 started by the
fixture below; it serves from memory and is shut down after each test (and by a
timer, should a test hang).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from helpers import download

PAYLOAD = bytes(range(256)) * 2048  # 512 KiB: several chunks, so a cut lands mid-body
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /good (Range aware), /cut-once (cuts the first answer), /cut-once-norange
    (cuts once, then ignores Range), /cut-once-badrange (cuts once, then answers the
    wrong range), /cut-always, /missing (404)."""

    timeout = 5  # a stuck client cannot hold a server thread for long

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        state = self.server.state
        state["requests"].append((self.path, self.headers.get("Range")))
        route = self.path.split("?")[0]
        if route == "/missing":
            self.send_error(404)
            return
        body = state["files"].get(route, PAYLOAD)
        count = sum(1 for path, _ in state["requests"] if path == self.path)
        cut = route == "/cut-always" or (route.startswith("/cut-once") and count == 1)
        range_header = self.headers.get("Range")
        start = 0
        if range_header and route != "/cut-once-norange" and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0])
        if start and route == "/cut-once-badrange":
            # Claims a partial answer but sends the wrong range (from byte 0).
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        remaining = body[start:]
        if cut:
            self.wfile.write(remaining[: len(remaining) // 3])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # drop the connection mid-body
            return
        self.wfile.write(remaining)


@pytest.fixture
def server():
    """A bounded HTTP server on 127.0.0.1; yields (base_url, state)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = {"requests": [], "files": {}}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)  # never outlives a hung test by much
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_file_is_downloaded_and_verified(server, tmp_path):
    base, state = server
    target = tmp_path / "out" / "file.bin"
    result = download.fetch(f"{base}/good", target, sha256=PAYLOAD_SHA, progress=False)
    assert result == target
    assert target.read_bytes() == PAYLOAD
    assert _leftovers(target.parent) == ["file.bin"], "no temporary file may be left beside the download"


def test_progress_bar_does_not_break_the_download(server, tmp_path):
    base, _ = server
    target = tmp_path / "file.bin"
    download.fetch(f"{base}/good", target, progress=True)
    assert target.read_bytes() == PAYLOAD


def test_existing_valid_file_is_not_downloaded_again(server, tmp_path):
    base, state = server
    target = tmp_path / "file.bin"
    target.write_bytes(PAYLOAD)
    download.fetch(f"{base}/good", target, sha256=PAYLOAD_SHA, progress=False)
    assert state["requests"] == []


def test_wrong_checksum_keeps_nothing(server, tmp_path):
    base, _ = server
    target = tmp_path / "file.bin"
    with pytest.raises(download.ChecksumError, match="expected"):
        download.fetch(f"{base}/good", target, sha256="0" * 64, progress=False, backoff=0)
    assert not target.exists()
    assert _leftovers(tmp_path) == [], "a file with the wrong checksum must not be kept, not even as .part"


def test_connection_cut_mid_body_is_resumed_with_range(server, tmp_path):
    base, state = server
    target = tmp_path / "file.bin"
    download.fetch(f"{base}/cut-once", target, sha256=PAYLOAD_SHA, progress=False, backoff=0)
    assert target.read_bytes() == PAYLOAD
    ranges = [r for path, r in state["requests"] if path == "/cut-once"]
    assert len(ranges) == 2 and ranges[0] is None
    assert ranges[1] is not None and int(ranges[1][6:].rstrip("-")) > 0, "the retry should ask for the missing bytes"
    assert _leftovers(tmp_path) == ["file.bin"]


def test_cut_with_a_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    base, state = server
    target = tmp_path / "file.bin"
    download.fetch(f"{base}/cut-once-norange", target, sha256=PAYLOAD_SHA, progress=False, backoff=0)
    assert target.read_bytes() == PAYLOAD
    assert len(state["requests"]) == 2


def test_a_wrong_range_answer_restarts_the_file(server, tmp_path):
    base, state = server
    target = tmp_path / "file.bin"
    download.fetch(f"{base}/cut-once-badrange", target, sha256=PAYLOAD_SHA, progress=False, backoff=0)
    assert target.read_bytes() == PAYLOAD
    assert [r is None for _, r in state["requests"]] == [True, False, True]


def test_connection_always_cut_fails_without_partial_file(server, tmp_path):
    base, state = server
    target = tmp_path / "file.bin"
    with pytest.raises(download.DownloadError, match="after 3 attempt"):
        download.fetch(f"{base}/cut-always", target, retries=2, progress=False, backoff=0)
    assert len(state["requests"]) == 3
    assert _leftovers(tmp_path) == [], "a failed download must leave no partial file"


def test_not_found_is_not_retried(server, tmp_path):
    base, state = server
    with pytest.raises(download.DownloadError, match="404"):
        download.fetch(f"{base}/missing", tmp_path / "x.bin", retries=3, progress=False, backoff=0)
    assert len(state["requests"]) == 1
    assert _leftovers(tmp_path) == []


def test_plain_http_to_other_hosts_is_refused(tmp_path):
    with pytest.raises(ValueError, match="https"):
        download.fetch("http://example.com/file.bin", tmp_path / "file.bin", progress=False)
    with pytest.raises(ValueError, match="https"):
        download.fetch("ftp://127.0.0.1/file.bin", tmp_path / "file.bin", progress=False)


def test_mirror_is_used_before_the_network(server, tmp_path):
    base, state = server
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.bin").write_bytes(PAYLOAD)
    target = tmp_path / "out" / "file.bin"
    download.fetch(f"{base}/good", target, sha256=PAYLOAD_SHA, mirror_dirs=[None, mirror], progress=False)
    assert target.read_bytes() == PAYLOAD
    assert state["requests"] == [], "a valid mirror copy must avoid any download"


def test_mirror_copy_with_wrong_checksum_is_skipped(server, tmp_path):
    base, state = server
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.bin").write_bytes(b"stale copy")
    target = tmp_path / "out" / "file.bin"
    download.fetch(f"{base}/good", target, sha256=PAYLOAD_SHA, mirror_dirs=[mirror], progress=False)
    assert target.read_bytes() == PAYLOAD
    assert len(state["requests"]) == 1
    assert (mirror / "file.bin").read_bytes() == b"stale copy", "the mirror is read-only to the kit"


# ---------------------------------------------------------------- extraction


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(info, "/etc/passwd")
    return path


def _tar(path: Path, members: dict[str, bytes], *, link: tuple[str, str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        if link:
            name, target, kind = link
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            bundle.addfile(info)
    return path


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_zip_and_tar_gz_are_extracted(tmp_path):
    members = {"data/a/one.txt": b"1", "data/b/two.txt": b"22"}
    for archive in (_zip(tmp_path / "x.zip", members), _tar(tmp_path / "x.tar.gz", members)):
        target = tmp_path / f"out-{archive.name}"
        download.extract(archive, target)
        assert (target / "data/a/one.txt").read_bytes() == b"1"
        assert (target / "data/b/two.txt").read_bytes() == b"22"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folders must be cleaned up"


@pytest.mark.parametrize(
    "make",
    [
        lambda d: _zip(d / "evil.zip", {"ok.txt": b"ok", "../escaped.txt": b"x"}),
        lambda d: _zip(d / "evil.zip", {"ok.txt": b"ok", "a/../../escaped.txt": b"x"}),
        lambda d: _zip(d / "evil.zip", {"/tmp/absolute.txt": b"x"}),
        lambda d: _zip(d / "evil.zip", {"ok.txt": b"ok"}, symlink="link"),
        lambda d: _tar(d / "evil.tar.gz", {"ok.txt": b"ok", "../escaped.txt": b"x"}),
        lambda d: _tar(d / "evil.tar.gz", {"/abs/escaped.txt": b"x"}),
        lambda d: _tar(d / "evil.tar.gz", {"ok.txt": b"ok"}, link=("link", "/etc/passwd", tarfile.SYMTYPE)),
        lambda d: _tar(d / "evil.tar.gz", {"ok.txt": b"ok"}, link=("hard", "ok.txt", tarfile.LNKTYPE)),
    ],
    ids=["zip-dotdot", "zip-nested-dotdot", "zip-absolute", "zip-symlink", "tar-dotdot", "tar-absolute",
         "tar-symlink", "tar-hardlink"],
)
def test_unsafe_archives_are_rejected_before_writing(tmp_path, make):
    archive_dir = tmp_path / "archives"
    archive_dir.mkdir()
    archive = make(archive_dir)
    work = tmp_path / "work"
    work.mkdir()
    before = _files_under(tmp_path)
    with pytest.raises(download.UnsafeArchiveError, match="refusing"):
        download.extract(archive, work / "target")
    assert _files_under(tmp_path) == before, "nothing may be written, inside or outside the target"
    assert not Path("/tmp/absolute.txt").exists()


def test_extract_refuses_to_overwrite(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"one.txt": b"new"})
    target = tmp_path / "target"
    target.mkdir()
    (target / "one.txt").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        download.extract(archive, target)
    assert (target / "one.txt").read_bytes() == b"old"


def test_extract_merges_into_a_folder_without_clashes(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"new.txt": b"new"})
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.txt").write_bytes(b"old")
    download.extract(archive, target)
    assert sorted(os.listdir(target)) == ["new.txt", "old.txt"]


def test_extract_rejects_other_files(tmp_path):
    not_archive = tmp_path / "notes.zip"
    not_archive.write_text("this is not an archive")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        download.extract(not_archive, tmp_path / "out")
    with pytest.raises(download.UnsafeArchiveError, match="limit"):
        download.extract(_zip(tmp_path / "big.zip", {"a.txt": b"x" * 1000}), tmp_path / "out", max_bytes=100)


def test_downloaded_archive_end_to_end(server, tmp_path):
    base, state = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("set/cls/img.txt", "pixels")
    state["files"]["/set.zip"] = buffer.getvalue()
    archive = download.fetch(f"{base}/set.zip", tmp_path / "dl" / "set.zip",
                             sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), progress=False)
    download.extract(archive, tmp_path / "data")
    assert (tmp_path / "data/set/cls/img.txt").read_text() == "pixels"
