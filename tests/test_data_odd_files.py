"""Odd files in a dataset folder: links that leave it are skipped unread and said to be links, and a
file name with a newline in it stays one entry of the report's lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from studio.data.dataset import scan_dataset
from studio.data.report import build_report, format_report

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks")


def _image(path: Path, colour=(200, 40, 40)) -> Path:
    Image.new("RGB", (64, 64), colour).save(path)
    return path


@needs_symlinks
def test_a_link_out_of_the_folder_is_skipped_as_a_link_and_a_link_inside_is_used(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _image(data / "good.png")
    outside = _image(tmp_path / "elsewhere.png", (10, 200, 10))
    (data / "x.png").symlink_to("/etc/passwd")
    (data / "photo.png").symlink_to(outside)
    (data / "again.png").symlink_to(data / "good.png")
    (data / "gone.png").symlink_to(tmp_path / "deleted.png")

    scan = scan_dataset(data)
    reasons = {skip.rel: skip.reason for skip in scan.skipped}
    for name in ("x.png", "photo.png"):
        assert reasons[name].startswith("a link to a file outside the dataset folder: skipped, not read"), reasons
    assert "text file" not in reasons["x.png"]
    assert reasons["gone.png"].startswith("a link to a missing file")
    assert sorted(item.rel for item in scan.items) == ["again.png", "good.png"]
    text = format_report(build_report(scan, resolution=64))
    assert "  x.png: a link to a file outside the dataset folder" in text


def test_a_file_name_with_a_newline_stays_one_entry_of_each_list(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _image(data / "good.png")
    (data / "good.txt").write_text("a photo of ohwx robot")
    _image(data / "two\nlines.png", (40, 40, 200))  # usable, but no caption
    (data / "fake\nimage.png").write_text("not an image")

    report = build_report(scan_dataset(data), resolution=64)
    assert "two\nlines.png" in report["missing_captions"]  # the JSON keeps the real name
    text = format_report(report)
    lines = text.splitlines()
    assert "  fake\\nimage.png: not an image (a text file)" in lines
    assert "  missing: two\\nlines.png" in lines
    assert not any(line.startswith(("image.png", "lines.png")) for line in lines), text
