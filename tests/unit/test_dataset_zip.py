"""training.dataset_zip.extract_dataset_zip: uploads are extracted only when safe and shaped like a data set."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import cv2
import pytest

from tests.conftest import fake_face
from training.data import load_split
from training.dataset_zip import DatasetZipError, extract_dataset_zip

PNG = cv2.imencode(".png", fake_face(0, 0))[1].tobytes()
LIMITS = {"max_members": 100, "max_uncompressed_bytes": 1_000_000}


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return path


def dataset_members(prefix: str = "", classes: tuple[str, ...] = ("angry", "happy")) -> dict[str, bytes]:
    members = {f"{prefix}train/{c}/{i}.png": PNG for c in classes for i in range(2)}
    members.update({f"{prefix}val/{c}/0.png": PNG for c in classes})
    return members


def test_good_zip_with_a_top_folder(tmp_path: Path) -> None:
    members = dataset_members("fer2013/")
    members["__MACOSX/fer2013/._x.png"] = b"resource fork"  # macOS junk is skipped
    members["fer2013/train/.DS_Store"] = b"junk"
    zp = make_zip(tmp_path / "data.zip", members)
    root = extract_dataset_zip(zp, tmp_path / "out", **LIMITS)
    assert root == tmp_path / "out" / "fer2013"
    assert not (tmp_path / "out" / "__MACOSX").exists()
    data = load_split(root, "train", require_all_classes=False)
    assert data.classes_present == ["angry", "happy"] and len(data) == 4


def test_good_zip_without_a_top_folder(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "data.zip", dataset_members())
    assert extract_dataset_zip(zp, tmp_path / "out", **LIMITS) == tmp_path / "out"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../escape.png", "path traversal"),
        ("train/../../escape.png", "path traversal"),
        ("..\\escape.png", "path traversal"),
        ("/etc/escape.png", "absolute path"),
        ("C:/escape.png", "absolute path"),
    ],
)
def test_path_traversal_and_absolute_paths_are_rejected(tmp_path: Path, name: str, message: str) -> None:
    members = dataset_members()
    members[name] = PNG
    zp = make_zip(tmp_path / "evil.zip", members)
    with pytest.raises(DatasetZipError, match=message):
        extract_dataset_zip(zp, tmp_path / "a" / "out", **LIMITS)
    assert not (tmp_path / "a" / "out").exists()  # rejected before anything is written
    assert not (tmp_path / "a" / "escape.png").exists() and not (tmp_path / "escape.png").exists()


def test_symlink_member_is_rejected(tmp_path: Path) -> None:
    zp = tmp_path / "link.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for name, payload in dataset_members().items():
            zf.writestr(name, payload)
        link = zipfile.ZipInfo("train/angry/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetZipError, match="symbolic link"):
        extract_dataset_zip(zp, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()


def test_too_many_members_is_rejected_before_extracting(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "many.zip", {f"train/angry/{i}.png": b"x" for i in range(30)})
    with pytest.raises(DatasetZipError, match="30 members; the limit is 20"):
        extract_dataset_zip(zp, tmp_path / "out", max_members=20, max_uncompressed_bytes=10**9)
    assert not (tmp_path / "out").exists()


def test_zip_bomb_by_declared_size_is_rejected_before_extracting(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "bomb.zip", {"train/angry/big.png": b"\0" * 5_000_000})
    assert zp.stat().st_size < 50_000  # compresses ~1000:1
    with pytest.raises(DatasetZipError, match=r"more than 1 MB.*zip bomb"):
        extract_dataset_zip(zp, tmp_path / "out", max_members=10, max_uncompressed_bytes=1_000_000)
    assert not (tmp_path / "out").exists()


def test_zip_whose_headers_understate_the_size_fails_while_extracting(tmp_path: Path) -> None:
    payload = b"\0" * 200_000
    zp = make_zip(tmp_path / "liar.zip", {**dataset_members(), "train/angry/liar.png": payload})
    raw = bytearray(zp.read_bytes())
    # Rewrite the declared uncompressed size (local header and central directory) from 200000 to 100.
    true_size, fake_size = (200_000).to_bytes(4, "little"), (100).to_bytes(4, "little")
    assert raw.count(true_size) == 2
    zp.write_bytes(bytes(raw).replace(true_size, fake_size))
    with pytest.raises(DatasetZipError, match=r"zip bomb|damaged"):
        extract_dataset_zip(zp, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()  # the partial extraction was removed


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"angry/0.png": PNG}, r"must hold train/<class>/ image folders .*found at its top: angry/"),
        ({"data/train/contempt/0.png": PNG}, "unknown class folders in train/: contempt"),
        ({"train/0.png": PNG, "train/angry/1.png": PNG}, r"1 images directly in train/"),
        ({"train/angry/readme.txt": b"hi"}, "train/ holds no .png/.jpg images"),
    ],
)
def test_wrong_layout_gets_a_clear_message(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    zp = make_zip(tmp_path / "layout.zip", members)
    with pytest.raises(DatasetZipError, match=message):
        extract_dataset_zip(zp, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()


def test_not_a_zip_and_non_empty_destination(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip")
    with pytest.raises(DatasetZipError, match=r"fake\.zip is not a zip file"):
        extract_dataset_zip(fake, tmp_path / "out", **LIMITS)
    # An upload spooled to a temporary file is named as the user named it, never by the temporary name.
    spooled = tmp_path / ".upload-k2j4h1.zip"
    spooled.write_bytes(b"%PDF-1.7 a document, not a zip")
    with pytest.raises(DatasetZipError) as err:
        extract_dataset_zip(spooled, tmp_path / "out", source_name="faces.pdf", **LIMITS)
    assert str(err.value) == "faces.pdf is not a zip file; upload the data set as a .zip archive"
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    zp = make_zip(tmp_path / "ok.zip", dataset_members())
    with pytest.raises(DatasetZipError, match="not an empty folder"):
        extract_dataset_zip(zp, dest, **LIMITS)
    assert (dest / "keep.txt").read_text() == "mine"


def test_duplicate_member_names_are_rejected(tmp_path: Path) -> None:
    zp = tmp_path / "dup.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("train/angry/0.png", PNG)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("train/angry/0.png", b"second copy")
    with pytest.raises(DatasetZipError, match="same file twice"):
        extract_dataset_zip(zp, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()
