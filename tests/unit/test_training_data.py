"""training.data: both data-set formats load the same faces, and every bad input gets a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_core.emotions import EMOTION_INDEX, EMOTIONS, FER2013_CSV_ORDER
from tests.conftest import fake_face
from training.data import (
    ERASING_SCALE,
    DatasetError,
    SplitData,
    balanced_class_weights,
    build_augmenter,
    load_split,
    make_dataset,
)


def test_folder_split_loads_every_class_by_name(folder_dataset) -> None:
    root = folder_dataset({"train": 3, "val": 2})
    data = load_split(root, "train")
    assert data.images.shape == (21, 48, 48) and data.images.dtype == np.uint8
    assert data.classes_present == list(EMOTIONS)
    assert data.class_counts() == dict.fromkeys(EMOTIONS, 3)
    # Labels follow folder names: the first "happy" image is exactly fake_face(happy, 0).
    happy = EMOTION_INDEX["happy"]
    first_happy = data.images[np.flatnonzero(data.labels == happy)[0]]
    np.testing.assert_array_equal(first_happy, fake_face(happy, 0))


def test_class_folder_names_are_case_insensitive(folder_dataset) -> None:
    root = folder_dataset({"train": 2})
    (root / "train" / "happy").rename(root / "train" / "Happy")
    data = load_split(root, "train")
    assert data.class_counts()["happy"] == 2


def test_csv_uses_its_own_label_order_and_matches_the_folders(folder_dataset, csv_dataset) -> None:
    folders = load_split(folder_dataset({"val": 2}), "val")
    csv = load_split(csv_dataset({"val": 2}), "val")
    assert csv.classes_present == list(EMOTIONS)
    # CSV label 4 is "sad" and 6 is "neutral"; both must land on their canonical indices.
    assert FER2013_CSV_ORDER[4] == "sad" and FER2013_CSV_ORDER[6] == "neutral"
    for name in ("sad", "neutral", "angry"):
        from_csv = csv.images[csv.labels == EMOTION_INDEX[name]]
        from_folder = folders.images[folders.labels == EMOTION_INDEX[name]]
        np.testing.assert_array_equal(from_csv, from_folder)


def test_csv_folder_path_and_file_path_both_work(csv_dataset) -> None:
    csv_path = csv_dataset({"train": 1})
    assert len(load_split(csv_path, "train")) == 7
    assert len(load_split(csv_path.parent, "train")) == 7


def test_missing_class_folders_are_named(folder_dataset) -> None:
    root = folder_dataset({"train": 2}, classes=("angry", "happy", "sad"))
    with pytest.raises(DatasetError, match="no images of: disgust, fear, neutral, surprise"):
        load_split(root, "train")
    subset = load_split(root, "train", require_all_classes=False)
    assert subset.classes_present == ["angry", "happy", "sad"]


def test_unknown_class_folder_is_named(folder_dataset) -> None:
    root = folder_dataset({"train": 1})
    (root / "train" / "contempt").mkdir()
    with pytest.raises(DatasetError, match=r"unknown class folders .*contempt"):
        load_split(root, "train")


def test_hidden_folders_are_not_classes(folder_dataset) -> None:
    root = folder_dataset({"train": 1})
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "__MACOSX").mkdir()
    assert len(load_split(root, "train")) == 7


def test_empty_class_folder_is_named(folder_dataset) -> None:
    root = folder_dataset({"train": 1})
    for f in (root / "train" / "fear").iterdir():
        f.unlink()
    (root / "train" / "fear" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"empty class folders .*fear"):
        load_split(root, "train")


def test_corrupt_image_is_named_and_skip_corrupt_skips_it(folder_dataset) -> None:
    root = folder_dataset({"train": 2})
    bad = root / "train" / "sad" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "train" / "sad" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"2 unreadable or corrupt images .*broken\.png.*--skip-corrupt"):
        load_split(root, "train")
    data = load_split(root, "train", skip_corrupt=True)
    assert len(data) == 14
    assert sorted(Path(p).name for p in data.skipped) == ["broken.png", "empty.jpg"]


def test_class_whose_images_are_all_corrupt_is_absent_when_skipped(folder_dataset) -> None:
    root = folder_dataset({"train": 1})
    for f in (root / "train" / "disgust").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no images of: disgust"):
        load_split(root, "train", skip_corrupt=True)
    data = load_split(root, "train", skip_corrupt=True, require_all_classes=False)
    assert "disgust" not in data.classes_present and len(data) == 6


def test_nonexistent_split_and_unknown_split_name(folder_dataset, csv_dataset) -> None:
    root = folder_dataset({"train": 1})
    with pytest.raises(DatasetError, match=r"split 'val' not found: expected the folder .*found: train"):
        load_split(root, "val")
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        load_split(root, "training")
    with pytest.raises(DatasetError, match=r"split 'test' not found: .*Usage=PrivateTest"):
        load_split(csv_dataset({"train": 1}), "test")


def test_missing_data_set(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data set not found"):
        load_split(tmp_path / "nowhere", "train")


def _csv_with_row(tmp_path: Path, row: str) -> Path:
    good = " ".join(["0"] * 48 * 48)
    path = tmp_path / "fer2013.csv"
    path.write_text(f"emotion,pixels,Usage\n3,{good},Training\n{row}\n0,{good},Training\n", encoding="utf-8")
    return path


def test_csv_row_with_wrong_pixel_count_names_its_line(tmp_path: Path) -> None:
    path = _csv_with_row(tmp_path, "2," + " ".join(["7"] * 100) + ",Training")
    with pytest.raises(DatasetError, match=r"not 2304 values .*line numbers\): 3 \(100 values\).*--skip-corrupt"):
        load_split(path, "train", require_all_classes=False)
    data = load_split(path, "train", require_all_classes=False, skip_corrupt=True)
    assert len(data) == 2 and data.classes_present == ["angry", "happy"]
    assert data.skipped == ["3 (100 values)"]


def test_csv_non_numeric_pixels_and_bad_labels(tmp_path: Path) -> None:
    path = _csv_with_row(tmp_path, "2," + " ".join(["x"] * 2304) + ",Training")
    with pytest.raises(DatasetError, match=r"3 \(not numbers\)"):
        load_split(path, "train", require_all_classes=False)
    path = _csv_with_row(tmp_path, "9," + " ".join(["1"] * 2304) + ",Training")
    with pytest.raises(DatasetError, match=r"emotion label outside 0..6 on lines 3"):
        load_split(path, "train", require_all_classes=False)


def test_csv_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "fer2013.csv"
    path.write_text("label,pixels\n1,0 0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="lacks the columns Usage, emotion"):
        load_split(path, "train")


def test_balanced_class_weights_are_capped_and_zero_for_absent_classes() -> None:
    labels = np.array([3] * 90 + [0] * 9 + [1], dtype=np.int32)
    weights = balanced_class_weights(labels, max_weight=5.0)
    assert weights[1] == 5.0  # 100 / (7 * 1) = 14.3, capped
    assert weights[3] == pytest.approx(100 / (7 * 90))
    assert weights[2] == 0.0


def _two_class_split(n: int = 64) -> SplitData:
    """Black `angry` faces and grey (200) `happy` ones: a blend's pixels tell its mixing weight."""
    labels = np.array([EMOTION_INDEX["angry"], EMOTION_INDEX["happy"]] * (n // 2), dtype=np.int32)
    images = np.where(labels == EMOTION_INDEX["happy"], 200, 0).astype(np.uint8)[:, None, None]
    return SplitData(np.broadcast_to(images, (n, 48, 48)).copy(), labels, ["angry", "happy"])


def test_mixup_blends_faces_and_labels_with_the_same_weight() -> None:
    split = _two_class_split()
    faces, labels = next(iter(make_dataset(split, 64, training=True, mixup=0.4, seed=3)))
    faces, labels = faces.numpy(), labels.numpy()
    assert np.allclose(labels.sum(axis=1), 1.0)
    happy_share = labels[:, EMOTION_INDEX["happy"]]
    # Each face is one flat grey: 200 x its happy share, the same weight its label got.
    assert np.allclose(faces.std(axis=(1, 2, 3)), 0.0, atol=1e-3)
    assert np.allclose(faces[:, 0, 0, 0], 200.0 * happy_share, atol=1e-2)
    assert np.allclose(labels[:, EMOTION_INDEX["angry"]], 1.0 - happy_share, atol=1e-6)
    blended = (happy_share > 0.01) & (happy_share < 0.99)
    assert blended.sum() >= 8  # pairs across the two classes really mix


def test_mixup_leaves_validation_and_the_default_alone() -> None:
    split = _two_class_split()
    for dataset in (make_dataset(split, 64, training=False, mixup=0.4), make_dataset(split, 64, training=True)):
        faces, labels = next(iter(dataset))
        assert set(np.unique(labels.numpy())) == {0.0, 1.0}  # one-hot
        assert set(np.unique(faces.numpy())) == {0.0, 200.0}


def test_given_targets_replace_the_one_hot_labels_and_must_fit_the_faces() -> None:
    split = _two_class_split()
    targets = np.full((len(split), len(EMOTIONS)), 0.05, np.float32)
    targets[:, EMOTION_INDEX["sad"]] = 0.7  # unlike any one-hot label of the split
    faces, labels = next(iter(make_dataset(split, 64, training=True, targets=targets, seed=3)))
    assert np.allclose(labels.numpy(), targets[: len(labels)])
    assert len(faces) == len(labels)
    with pytest.raises(ValueError, match=r"targets must be \(64, 7\)"):
        make_dataset(split, 64, training=True, targets=targets[:10])


def _erased_masks(erasing: float, *, training: bool = True, n: int = 256) -> np.ndarray:
    """Which pixels of n flat grey (128) faces a batch changed, with no other augmentation."""
    split = SplitData(np.full((n, 48, 48), 128, np.uint8), np.zeros(n, np.int32), ["angry"])
    faces, _ = next(iter(make_dataset(split, n, training=training, erasing=erasing, seed=5)))
    return faces.numpy()[..., 0] != 128.0


def test_random_erasing_puts_one_noise_rectangle_on_the_chosen_faces() -> None:
    masks = _erased_masks(1.0)
    low, high = ERASING_SCALE
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        # The changed pixels fill their bounding box (noise rarely hits 128 exactly): one rectangle.
        assert mask.sum() >= 0.97 * height * width
        for side in (height, width):
            assert np.sqrt(low) * 48 - 2 <= side <= np.sqrt(high) * 48 + 2
    assert np.std([m.sum() for m in masks]) > 20  # patch sizes vary


def test_random_erasing_hits_about_its_share_of_faces_and_never_validation() -> None:
    assert 0.35 < _erased_masks(0.5).any(axis=(1, 2)).mean() < 0.65  # 256 faces: about 5 sd either side
    assert not _erased_masks(1.0, training=False).any()
    assert not _erased_masks(0.0).any()
    with pytest.raises(ValueError, match="erasing probability must be between 0 and 1"):
        build_augmenter("standard", erasing=1.5)
    assert build_augmenter("none") is None
