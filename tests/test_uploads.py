"""Uploads: files from the upload button saved safely, archives of class folders unpacked once and safely."""

from __future__ import annotations

import zipfile

import pytest

from helpers import download, uploads


def _value(*files):
    """What ipywidgets 8's FileUpload.value holds."""
    return tuple({"name": name, "content": memoryview(content), "size": len(content)} for name, content in files)


def test_save_uploads_cleans_names_and_never_overwrites(tmp_path):
    saved = uploads.save_uploads(_value(("../../evil.jpg", b"a"), (".bashrc", b"b"), ("cat.jpg", b"c")), tmp_path)
    assert [p.name for p in saved] == ["evil.jpg", "bashrc", "cat.jpg"]
    assert all(p.parent == tmp_path for p in saved)
    again = uploads.save_uploads(_value(("cat.jpg", b"c"), ("cat.jpg", b"other")), tmp_path)
    assert [p.name for p in again] == ["cat.jpg", "cat-2.jpg"], "same content reused, other content kept apart"
    assert (tmp_path / "cat.jpg").read_bytes() == b"c" and (tmp_path / "cat-2.jpg").read_bytes() == b"other"
    assert uploads.save_uploads((), tmp_path) == []
    assert uploads.uploaded_files({"x.png": {"content": b"1"}}) == [("x.png", b"1")], "ipywidgets 7's dict"


def test_unpack_images_once_into_a_content_named_folder_and_finds_the_class_folders(tmp_path):
    archive = tmp_path / "birds.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("birds/robin/1.jpg", b"r")
        bundle.writestr("birds/wren/1.jpg", b"w")
        bundle.writestr("__MACOSX/birds/._robin", b"junk")
    root = uploads.unpack_images(archive, tmp_path / "unpacked")
    assert root.name == "birds" and sorted(p.name for p in root.iterdir()) == ["robin", "wren"]
    assert uploads.unpack_images(archive, tmp_path / "unpacked") == root, "the same archive is unpacked once"
    assert len(list((tmp_path / "unpacked").iterdir())) == 1


def test_unpack_images_refuses_unsafe_archives_and_writes_nothing(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../outside.jpg", b"x")
    with pytest.raises(download.UnsafeArchiveError):
        uploads.unpack_images(archive, tmp_path / "unpacked")
    assert not (tmp_path / "outside.jpg").exists()
    assert not (tmp_path / "unpacked").exists() or not any((tmp_path / "unpacked").iterdir())
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as bundle:
        bundle.writestr("a/1.jpg", b"0" * 1000)
    with pytest.raises(download.UnsafeArchiveError, match="limit"):
        uploads.unpack_images(big, tmp_path / "unpacked", max_bytes=10)
    with pytest.raises(FileNotFoundError):
        uploads.unpack_images(tmp_path / "missing.zip", tmp_path / "unpacked")


def test_upload_widget_kinds():
    assert uploads.upload_widget("zip").multiple is False
    assert uploads.upload_widget("images").multiple is True
    with pytest.raises(ValueError, match="kind"):
        uploads.upload_widget("movies")
