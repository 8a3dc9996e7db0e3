"""Making datasets from uploads: names, copied files, and zips unpacked safely (no path outside the
target, no symlinks, no macOS debris, size limits that a lying zip cannot get around)."""

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from studio.data.dataset import scan_dataset
from studio.data.upload import (
    UploadError,
    add_files,
    add_images,
    check_dataset_name,
    copy_demo_dataset,
    create_dataset,
    unpack_zip,
)


def png_bytes(colour=(200, 40, 40), size=(24, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_dataset_names_are_checked_and_existing_ones_refused(tmp_path):
    assert check_dataset_name(" my-set_1.v2 ") == "my-set_1.v2"
    for bad in ("", "../up", "a/b", ".hidden", "sp ace", "x" * 101):
        with pytest.raises(UploadError, match="must be 1–100 letters"):
            check_dataset_name(bad)
    folder = create_dataset(tmp_path, "shoes")
    assert folder == tmp_path / "shoes" and folder.is_dir()
    with pytest.raises(UploadError, match="a dataset named 'shoes' already exists"):
        create_dataset(tmp_path, "shoes")
    assert create_dataset(tmp_path, "shoes", exist_ok=True) == folder


def test_add_images_copies_images_and_captions_and_says_what_it_skipped(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    files = {"a.png": png_bytes(), "a.txt": b"ohwx shoe\n", "captions.json": b"{}", "photo.HEIC": b"x",
             "notes.pdf": b"%PDF", ".DS_Store": b"", "._a.png": b"\x00"}
    for name, data in files.items():
        (uploads / name).write_bytes(data)
    folder = create_dataset(tmp_path / "datasets", "shoes")
    (folder / "old.png").write_bytes(png_bytes((0, 0, 255)))
    (uploads / "old.png").write_bytes(png_bytes())

    result = add_images(folder, [uploads / n for n in [*files, "old.png"]])
    assert sorted(result.added) == ["a.png", "a.txt", "captions.json"] and result.images == 1
    assert dict(result.skipped) == {
        "photo.HEIC": "unsupported image format .heic (convert it to PNG or JPEG)",
        "notes.pdf": "not an image or caption file (.pdf)",
        ".DS_Store": "hidden file",
        "._a.png": "macOS resource fork",
        "old.png": "a file with this name is already in the dataset",
    }
    assert tree(folder) == ["a.png", "a.txt", "captions.json", "old.png"]
    assert (folder / "old.png").read_bytes() == png_bytes((0, 0, 255)), "never overwritten"
    assert result.summary().startswith("added 1 images and 2 caption files; skipped 5: photo.HEIC (unsupported")
    assert scan_dataset(folder).items[0].caption == "ohwx shoe"


def test_zip_unpacks_images_and_captions_without_macos_debris(tmp_path):
    archive = make_zip(tmp_path / "photos.zip", {
        "photos/": b"",
        "photos/a.png": png_bytes(),
        "photos/a.txt": b"ohwx shoe, red",
        "photos/sub/b.png": png_bytes((0, 200, 0)),
        "photos/.hidden.png": png_bytes(),
        "photos/readme.md": b"hi",
        "__MACOSX/photos/._a.png": b"\x00\x05\x16\x07",
    })
    target = tmp_path / "datasets" / "shoes"
    result = unpack_zip(archive, target)
    assert tree(target) == ["a.png", "a.txt", "sub/b.png"], "the one top folder is dropped"
    assert result.images == 2
    assert dict(result.skipped) == {"photos/.hidden.png": "hidden file",
                                    "photos/readme.md": "not an image or caption file (.md)",
                                    "__MACOSX/photos/._a.png": "macOS resource fork"}
    assert [p.name for p in target.parent.iterdir()] == ["shoes"], "no temp folder left behind"
    assert {i.rel: i.caption for i in scan_dataset(target).items} == {"a.png": "ohwx shoe, red", "sub/b.png": None}

    # unpacking into an existing dataset adds new files and never replaces existing ones
    (target / "a.png").write_bytes(png_bytes((1, 2, 3)))
    more = make_zip(tmp_path / "more.zip", {"a.png": png_bytes(), "c.png": png_bytes((9, 9, 9))})
    again = unpack_zip(more, target)
    assert again.added == ["c.png"] and again.skipped == [("a.png", "a file with this name is already in the dataset")]
    assert (target / "a.png").read_bytes() == png_bytes((1, 2, 3))


@pytest.mark.parametrize("bad", ["../evil.png", "photos/../../evil.png", "/etc/evil.png", "C:/evil.png",
                                 "..\\evil.png"])
def test_zip_with_a_path_outside_the_target_is_refused_and_writes_nothing(tmp_path, bad):
    archive = make_zip(tmp_path / "bad.zip", {"ok.png": png_bytes(), bad: png_bytes()})
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    with pytest.raises(UploadError, match="points outside the folder it unpacks into.*nothing was unpacked"):
        unpack_zip(archive, datasets / "set")
    assert list(datasets.iterdir()) == [] and not (tmp_path / "evil.png").exists()


def test_zip_with_a_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", png_bytes())
        link = zipfile.ZipInfo("secret.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    with pytest.raises(UploadError, match="'secret.png' is a symbolic link"):
        unpack_zip(archive, tmp_path / "set")
    assert not (tmp_path / "set").exists()


def test_zip_limits_on_files_and_declared_bytes(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"{i}.png": png_bytes() for i in range(5)})
    with pytest.raises(UploadError, match="hold 5 files, more than the limit of 4"):
        unpack_zip(archive, tmp_path / "set", max_files=4)
    big = make_zip(tmp_path / "big.zip", {"a.png": png_bytes() + b"\x00" * 2_000_000})
    with pytest.raises(UploadError, match="would take 2 MiB, more than the limit of 1 MiB"):
        unpack_zip(big, tmp_path / "set", max_bytes=1024**2)
    assert not (tmp_path / "set").exists()


def test_a_zip_that_lies_about_its_sizes_is_refused(tmp_path):
    """A bomb declares small sizes and inflates to much more: it stops at the declared size and is refused."""
    archive = make_zip(tmp_path / "bomb.zip", {"a.png": png_bytes(), "b.png": b"\x00" * 3_000_000})
    data = bytearray(archive.read_bytes())
    # rewrite b.png's uncompressed size to 100 bytes, in its local header and its central directory entry
    with zipfile.ZipFile(archive) as z:
        struct.pack_into("<I", data, z.getinfo("b.png").header_offset + 22, 100)
    central = data.rindex(b"b.png") - 46  # the last "b.png" is the name in the central directory
    assert data[central:central + 4] == b"PK\x01\x02"
    struct.pack_into("<I", data, central + 24, 100)
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo("b.png").file_size == 100

    target = tmp_path / "datasets" / "set"
    with pytest.raises(UploadError, match="b.png.*nothing was added"):
        unpack_zip(archive, target, max_bytes=1024**2)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(UploadError, match="fake.zip is not a readable zip file"):
        unpack_zip(tmp_path / "fake.zip", tmp_path / "set")


def test_add_files_takes_images_and_zips_together(tmp_path):
    (tmp_path / "loose.png").write_bytes(png_bytes())
    archive = make_zip(tmp_path / "more.zip", {"z.png": png_bytes((5, 5, 5)), "z.txt": b"ohwx z"})
    folder = create_dataset(tmp_path / "datasets", "mix")
    result = add_files(folder, [tmp_path / "loose.png", archive])
    assert sorted(result.added) == ["loose.png", "z.png", "z.txt"] and result.images == 2
    assert tree(folder) == ["loose.png", "z.png", "z.txt"]


def test_copy_of_the_demo_is_made_once(tmp_path):
    folder = copy_demo_dataset(tmp_path)
    assert folder == tmp_path / "demo"
    assert len(list(folder.glob("*.png"))) == 16 and len(list(folder.glob("*.txt"))) == 16
    assert not list(folder.glob(".*")), "the cache's version marker stays behind"
    (folder / "robot_00.txt").write_text("edited\n", encoding="utf-8")
    assert copy_demo_dataset(tmp_path) == folder
    assert (folder / "robot_00.txt").read_text(encoding="utf-8") == "edited\n", "an existing copy is kept"
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
