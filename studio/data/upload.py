"""Make dataset folders from what a user uploads: image files, caption files, or a zip of them.

Only images and caption files (`.txt`, `.json`, `.jsonl`) are kept; everything else is skipped
with a reason. A zip is checked completely before anything is written: an entry with an absolute
path, a `..` or a symlink refuses the whole archive, and so does one that would unpack to more
files or bytes than the limits allow (checked against the sizes the archive declares and again
against the bytes actually inflated, since a zip bomb can lie). macOS debris (`__MACOSX/`, `._*`)
and hidden files are skipped. A zip unpacks into a temp folder beside the target, which is then
moved into place. Existing files are never overwritten.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from studio.core.atomic import new_temp_dir
from studio.core.names import check_folder_name
from studio.data.images import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS

CAPTION_EXTENSIONS = (".txt", ".json", ".jsonl")
MAX_FILES = 5000
MAX_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that is refused as a whole (bad name, unsafe or oversized zip); nothing was written."""


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)
    """Files written, relative to the dataset folder."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(name as uploaded, reason) for every file left out."""

    @property
    def images(self) -> int:
        return sum(Path(rel).suffix.lower() in IMAGE_EXTENSIONS for rel in self.added)

    def extend(self, other: AddResult) -> None:
        self.added += other.added
        self.skipped += other.skipped

    def summary(self) -> str:
        """One line for the user: what was added, what was skipped and why."""
        others = len(self.added) - self.images
        text = f"added {self.images} images" + (f" and {others} caption files" if others else "")
        if self.skipped:
            listed = "; ".join(f"{name} ({reason})" for name, reason in self.skipped[:8])
            more = f"; and {len(self.skipped) - 8} more" if len(self.skipped) > 8 else ""
            text += f"; skipped {len(self.skipped)}: {listed}{more}"
        return text


def check_dataset_name(name: str) -> str:
    """A dataset folder name: 1–100 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return check_folder_name((name or "").strip(), "dataset", UploadError)


def create_dataset(datasets_root: Path, name: str, *, exist_ok: bool = False) -> Path:
    """The folder `datasets_root/name`, created; an existing one is refused unless `exist_ok` (adding)."""
    folder = Path(datasets_root) / check_dataset_name(name)
    if folder.exists() and not exist_ok:
        raise UploadError(f"a dataset named {folder.name!r} already exists in {datasets_root}: pick another name, "
                          "or open it and add the files to it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def copy_demo_dataset(datasets_root: Path, name: str = "demo") -> Path:
    """A copy of the built-in demo dataset at `datasets_root/name` to edit (made once; an existing
    copy is returned as it is). The generated original stays untouched in the cache."""
    from studio.data.demo import demo_dataset_dir

    folder = Path(datasets_root) / check_dataset_name(name)
    if folder.exists():
        return folder
    tmp = new_temp_dir(Path(datasets_root), folder.name)
    try:
        copied = tmp / folder.name
        shutil.copytree(demo_dataset_dir(), copied, ignore=shutil.ignore_patterns(".*"))
        os.replace(copied, folder)
    finally:
        shutil.rmtree(tmp)
    return folder


def add_files(folder: Path, files: list[Path], *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> AddResult:
    """Add uploads to `folder`: zips are unpacked (`unpack_zip`), other files copied (`add_images`)."""
    zips = [Path(f) for f in files if Path(f).suffix.lower() == ".zip"]
    result = add_images(folder, [Path(f) for f in files if Path(f).suffix.lower() != ".zip"],
                        max_files=max_files, max_bytes=max_bytes)
    for archive in zips:
        result.extend(unpack_zip(archive, folder, max_files=max_files, max_bytes=max_bytes))
    return result


def add_images(folder: Path, files: list[Path], *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> AddResult:
    """Copy image and caption files into `folder` under their own names (each written atomically).

    Other files, hidden files, macOS resource forks and names already in the folder are skipped
    with a reason. More than `max_files` files or `max_bytes` bytes in all is refused as a whole.
    """
    folder = Path(folder)
    result = AddResult()
    accepted: dict[str, Path] = {}
    for path in map(Path, files):
        reason = _skip_reason(PurePosixPath(path.name))
        if reason is None and (path.name in accepted or (folder / path.name).exists()):
            reason = "a file with this name is already in the dataset"
        if reason is None and not path.is_file():
            reason = "not a file"
        if reason:
            result.skipped.append((path.name, reason))
        else:
            accepted[path.name] = path
    _check_limits(len(accepted), sum(p.stat().st_size for p in accepted.values()), max_files, max_bytes,
                  "the uploaded files")
    for name, source in accepted.items():
        tmp = folder / f".{name}.upload"
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        result.added.append(name)
    return result


def unpack_zip(zip_path: Path, folder: Path, *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> AddResult:
    """Unpack the images and caption files of `zip_path` into `folder` (created if missing).

    Raises `UploadError`, having written nothing, for an unsafe entry (absolute path, `..`,
    symlink), a corrupt archive, or more than `max_files` files / `max_bytes` bytes. A single
    folder that holds everything in the zip is dropped, so `photos/a.jpg` lands as `a.jpg`.
    """
    zip_path, folder = Path(zip_path), Path(folder)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UploadError(f"{zip_path.name} is not a readable zip file ({err})") from None
    with archive:
        # 1. Check every entry before writing anything.
        result = AddResult()
        entries: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in archive.infolist():
            path = _safe_entry_path(zip_path, info)
            if info.is_dir():
                continue
            reason = _skip_reason(path)
            if reason is None and info.flag_bits & 0x1:
                reason = "encrypted (password-protected) entry"
            if reason:
                result.skipped.append((info.filename, reason))
            else:
                entries.append((info, path))
        _check_limits(len(entries), sum(info.file_size for info, _ in entries), max_files, max_bytes, zip_path.name)
        targets = _strip_common_folder([path for _, path in entries])
        planned: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for (info, _), target in zip(entries, targets):
            if (folder / target).exists():
                result.skipped.append((info.filename, "a file with this name is already in the dataset"))
            else:
                planned.append((info, target))

        # 2. Inflate into a temp folder beside the target, counting the real bytes.
        parent = folder.parent
        tmp = new_temp_dir(parent, folder.name)
        try:
            total = 0
            for info, target in planned:
                out_path = tmp.joinpath(*target.parts)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                total = _inflate(archive, info, out_path, total, max_bytes, zip_path.name)
            # 3. Move into place: the whole folder when it is new, else file by file.
            if not folder.exists():
                os.replace(tmp, folder)
            else:
                for _, target in planned:
                    destination = folder.joinpath(*target.parts)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp.joinpath(*target.parts), destination)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result.added += [target.as_posix() for _, target in planned]
    return result


def _safe_entry_path(zip_path: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's path inside the dataset; raises `UploadError` for one that could escape it."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadError(f"{zip_path.name} is refused: entry {info.filename!r} is a symbolic link; nothing was "
                          "unpacked. Zip the files themselves, not links to them.")
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise UploadError(f"{zip_path.name} is refused: entry {info.filename!r} points outside the folder it "
                          "unpacks into (an absolute path or '..'); nothing was unpacked.")
    return path


def _skip_reason(path: PurePosixPath) -> str | None:
    """Why an uploaded file is left out, or None to keep it."""
    if "__MACOSX" in path.parts or path.name.startswith("._"):
        return "macOS resource fork"
    if any(part.startswith(".") for part in path.parts):
        return "hidden file"
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS or suffix in CAPTION_EXTENSIONS:
        return None
    if suffix in UNSUPPORTED_IMAGE_EXTENSIONS:
        return f"unsupported image format {suffix} (convert it to PNG or JPEG)"
    return f"not an image or caption file ({suffix or 'no extension'})"


def _check_limits(files: int, size: int, max_files: int, max_bytes: int, what: str) -> None:
    if files > max_files:
        raise UploadError(f"{what} hold {files} files, more than the limit of {max_files}; nothing was added. "
                          "Split it into smaller uploads.")
    if size > max_bytes:
        raise UploadError(f"{what} would take {size / 1024**2:.0f} MiB, more than the limit of "
                          f"{max_bytes / 1024**2:.0f} MiB; nothing was added.")


def _strip_common_folder(paths: list[PurePosixPath]) -> list[PurePosixPath]:
    firsts = {path.parts[0] for path in paths}
    if len(firsts) == 1 and all(len(path.parts) > 1 for path in paths):
        return [PurePosixPath(*path.parts[1:]) for path in paths]
    return paths


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out_path: Path, total: int, max_bytes: int,
             what: str) -> int:
    """Write one entry; returns the running total of inflated bytes (refusing past the limits).

    zipfile itself stops at the declared size and then fails the CRC check; counting here as well
    keeps the limit independent of that behaviour."""
    written = 0
    try:
        with archive.open(info) as source, out_path.open("wb") as out:
            for block in iter(lambda: source.read(_CHUNK), b""):
                written += len(block)
                if written > info.file_size or total + written > max_bytes:
                    raise UploadError(f"{what} is refused: {info.filename!r} inflates to more bytes than the "
                                      "archive declares or the size limit allows (a zip bomb?); nothing was added.")
                out.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as err:
        raise UploadError(f"{what}: entry {info.filename!r} cannot be unpacked ({err}); nothing was added.") from None
    return total + written
