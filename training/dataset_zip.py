"""Uploaded data sets: a zip is extracted only when it is safe and shaped like a FER2013 data set.

Refused: path traversal, absolute paths, links and special files, encrypted members; zip bombs by
member count and total size, checked on the declared sizes before extracting and on the bytes
actually written while extracting (headers can lie); and any layout other than
`[top folder/]train/<class>/<images>` with known class names. On any error nothing is left behind.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from fer_core.emotions import EMOTION_INDEX, EMOTIONS
from training.config import SPLITS
from training.data import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from fer_core.settings import Settings

class DatasetZipError(ValueError):
    """An uploaded zip is unsafe or not a data set; the message says which and why."""


_ZIP_JUNK_DIRS = frozenset({"__MACOSX"})
_ZIP_CHUNK = 1 << 20


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's safe relative path, None for entries we skip, or DatasetZipError."""
    raw = info.filename
    if "\x00" in raw:
        raise DatasetZipError(f"zip member name contains a NUL byte: {raw!r}")
    name = raw.replace("\\", "/")  # zips made on Windows sometimes use backslashes
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetZipError(f"zip member {raw!r} is a symbolic link; links are not allowed in uploads")
    # No type bits (DOS-made zips, Python's writestr) means a plain file; any other type is refused.
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetZipError(f"zip member {raw!r} is not a regular file")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DatasetZipError(f"zip member {raw!r} has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise DatasetZipError(f"zip member {raw!r} points outside the folder (path traversal)")
    if info.flag_bits & 0x1:
        raise DatasetZipError(f"zip member {raw!r} is encrypted; upload an unencrypted zip")
    if not parts or info.is_dir() or name.endswith("/"):
        return None
    if parts[0] in _ZIP_JUNK_DIRS or parts[-1] == ".DS_Store" or parts[-1].startswith("._"):
        return None  # macOS metadata
    return PurePosixPath(*parts)


def extract_dataset_zip(
    zip_path: str | Path,
    dest: str | Path,
    *,
    max_members: int = 100_000,
    max_uncompressed_bytes: int = 2_000 * 1024 * 1024,
    source_name: str | None = None,
) -> Path:
    """Safely extract an uploaded data-set zip into `dest` (new or empty) and return the data-set root.

    `source_name` is what messages call the file (the name it was uploaded as, not where it was spooled).
    Raises DatasetZipError saying what is wrong (see the module docstring).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    shown = source_name or zip_path.name
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetZipError(f"destination {dest} is not an empty folder")
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DatasetZipError(f"{shown} is not a zip file; upload the data set as a .zip archive") from None
    except OSError as exc:
        raise DatasetZipError(f"{shown} could not be read ({exc.strerror or type(exc).__name__})") from None
    created = not dest.exists()
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise DatasetZipError(f"zip has {len(infos):,} members; the limit is {max_members:,}")
        planned: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        declared = 0
        for info in infos:
            rel = _member_path(info)
            if rel is None:
                continue
            declared += info.file_size
            if declared > max_uncompressed_bytes:
                raise DatasetZipError(
                    f"zip would unpack to more than {max_uncompressed_bytes / 2**20:,.0f} MB; the limit is "
                    f"{max_uncompressed_bytes / 2**20:,.0f} MB (possible zip bomb)"
                )
            planned.append((info, rel))
        if not planned:
            raise DatasetZipError("zip contains no files")
        dest.mkdir(parents=True, exist_ok=True)
        root_resolved = dest.resolve()
        try:
            written = 0
            for info, rel in planned:
                target = dest.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(root_resolved):
                    raise DatasetZipError(f"zip member {info.filename!r} points outside the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                member_written = 0
                with archive.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(_ZIP_CHUNK):
                        member_written += len(chunk)
                        written += len(chunk)
                        if member_written > info.file_size or written > max_uncompressed_bytes:
                            raise DatasetZipError(
                                f"zip member {info.filename!r} unpacks to more than declared or past the "
                                f"{max_uncompressed_bytes / 2**20:,.0f} MB limit (possible zip bomb)"
                            )
                        out.write(chunk)
            return _dataset_root(dest)
        except FileExistsError as exc:
            _remove_extracted(dest, created)
            raise DatasetZipError(f"zip holds the same file twice: {exc.filename}") from exc
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
            _remove_extracted(dest, created)
            raise DatasetZipError(f"zip is damaged or uses an unsupported feature ({exc})") from exc
        except BaseException:
            _remove_extracted(dest, created)
            raise


def _remove_extracted(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _dataset_root(extracted: Path) -> Path:
    """`extracted` or its single top folder, whichever holds train/<class>/ images; validated."""
    candidates = [extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())]
    root = next((c for c in candidates if (c / "train").is_dir()), None)
    if root is None:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in extracted.iterdir())
        raise DatasetZipError(
            "the zip must hold train/<class>/ image folders (optionally inside one top folder), "
            f"with classes {', '.join(EMOTIONS)}; found at its top: {', '.join(top[:10]) or 'nothing'}"
        )
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        class_dirs = [p for p in split_dir.iterdir() if p.is_dir()]
        unknown = sorted(p.name for p in class_dirs if p.name.lower() not in EMOTION_INDEX)
        if unknown:
            raise DatasetZipError(
                f"unknown class folders in {split}/: {', '.join(unknown)}; expected only: {', '.join(EMOTIONS)}"
            )
        loose = [p.name for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DatasetZipError(f"{len(loose)} images directly in {split}/; put them in {split}/<class>/ folders")
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for d in class_dirs for f in d.iterdir()):
            raise DatasetZipError(f"{split}/ holds no .png/.jpg images in class folders")
    return root


def zip_limits(settings: Settings) -> dict[str, int]:
    """extract_dataset_zip's limits from the app settings (max_zip_members, max_zip_uncompressed_mb)."""
    return {
        "max_members": int(settings.max_zip_members),
        "max_uncompressed_bytes": int(settings.max_zip_uncompressed_mb) * 1024 * 1024,
    }
