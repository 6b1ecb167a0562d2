"""FER2013 data in either format users have, validated, as arrays and `tf.data` pipelines.

Formats:
- folders: `<root>/<split>/<class>/*.png|jpg` (the Kaggle layout; splits train, val, test);
- CSV: the original `fer2013.csv` (`emotion,pixels,Usage`), given as the file or its folder.

Classes are mapped by name to `fer_core.emotions.EMOTIONS`. Every image comes out as a
48x48 grayscale uint8 array, the model's input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer_core.emotions import EMOTION_INDEX, EMOTIONS, FACE_SIZE, FER2013_CSV_ORDER
from fer_core.preprocess import to_face_input
from training.config import AUGMENT_LEVELS, SPLITS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
CSV_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
CSV_NAME = "fer2013.csv"
MAX_LISTED = 20  # how many bad files an error message names


class DatasetError(ValueError):
    """The data set cannot be used as given; the message says why and what to do."""


@dataclass
class SplitData:
    images: np.ndarray  # (n, 48, 48) uint8
    labels: np.ndarray  # (n,) int32 indices into EMOTIONS
    classes_present: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(EMOTIONS))
        return {name: int(counts[i]) for i, name in enumerate(EMOTIONS)}


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def find_csv(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    candidate = root / CSV_NAME
    return candidate if candidate.is_file() else None


def load_split(
    root: str | Path,
    split: str,
    *,
    require_all_classes: bool = True,
    skip_corrupt: bool = False,
) -> SplitData:
    """Load and validate one split. Raises DatasetError naming the problem."""
    root = Path(root).expanduser()
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if not root.exists():
        raise DatasetError(f"data set not found: {root}")
    csv_path = find_csv(root)
    data = (
        _load_csv_split(csv_path, split, skip_corrupt=skip_corrupt)
        if csv_path
        else _load_folder_split(root, split, skip_corrupt=skip_corrupt)
    )
    missing = [name for name in EMOTIONS if name not in data.classes_present]
    if missing and require_all_classes:
        raise DatasetError(
            f"split {split!r} of {root} has no images of: {', '.join(missing)}. "
            f"Training needs all 7 classes ({', '.join(EMOTIONS)})."
        )
    return data


def _load_folder_split(root: Path, split: str, *, skip_corrupt: bool) -> SplitData:
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(
            f"split {split!r} not found: expected the folder {split_dir} "
            f"(found: {', '.join(found) or 'no folders'}; or give a {CSV_NAME})"
        )
    # Hidden folders (.ipynb_checkpoints) and macOS zip metadata are not classes.
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not _is_junk(p.name))
    unknown = [p.name for p in class_dirs if p.name.lower() not in EMOTION_INDEX]
    if unknown:
        raise DatasetError(
            f"unknown class folders in {split_dir}: {', '.join(unknown)}; "
            f"expected only: {', '.join(EMOTIONS)}"
        )
    if not class_dirs:
        raise DatasetError(f"no class folders in {split_dir}; expected: {', '.join(EMOTIONS)}")

    images: list[np.ndarray] = []
    labels: list[int] = []
    corrupt: list[str] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not _is_junk(p.name)
        )
        if not files:
            empty.append(class_dir.name)
            continue
        label = EMOTION_INDEX[class_dir.name.lower()]
        for path in files:
            image = _read_gray(path)
            if image is None:
                corrupt.append(str(path))
                continue
            images.append(image)
            labels.append(label)
    if empty:
        raise DatasetError(f"empty class folders in {split_dir}: {', '.join(empty)} (no .png/.jpg images)")
    if corrupt:
        if not skip_corrupt:
            raise DatasetError(
                f"{len(corrupt)} unreadable or corrupt images in {split_dir}: {_listing(corrupt)}. "
                "Fix or remove them, or pass --skip-corrupt to skip them with a warning."
            )
        log.warning("skipping %d unreadable images: %s", len(corrupt), _listing(corrupt))
    if not images:
        raise DatasetError(f"no readable images in {split_dir}")
    # Classes present are those with readable images: a class whose every file was skipped is absent.
    present = [EMOTIONS[i] for i in sorted(set(labels))]
    return SplitData(np.stack(images), np.asarray(labels, dtype=np.int32), present, corrupt)


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _read_gray(path: Path) -> np.ndarray | None:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0:
        return None
    image = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        return None
    return to_face_input(image)


def _load_csv_split(csv_path: Path, split: str, *, skip_corrupt: bool = False) -> SplitData:
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, dtype={"emotion": "Int64", "pixels": str, "Usage": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path} is not a readable fer2013 CSV: {exc}") from exc
    needed = {"emotion", "pixels", "Usage"}
    if not needed <= set(table.columns):
        raise DatasetError(
            f"{csv_path} lacks the columns {', '.join(sorted(needed - set(table.columns)))}; "
            "expected emotion,pixels,Usage"
        )
    usage = CSV_USAGE[split]
    rows = table[table["Usage"].str.strip() == usage]
    if rows.empty:
        raise DatasetError(f"split {split!r} not found: {csv_path} has no rows with Usage={usage}")
    bad_labels = rows.index[~rows["emotion"].isin(range(len(FER2013_CSV_ORDER)))].tolist()
    if bad_labels:
        lines = _listing([str(i + 2) for i in bad_labels])
        raise DatasetError(f"{csv_path}: emotion label outside 0..6 on lines {lines}")
    pixel_count = FACE_SIZE * FACE_SIZE
    images = np.empty((len(rows), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    good = np.ones(len(rows), dtype=bool)
    bad_rows: list[str] = []
    for i, (row_index, pixels) in enumerate(zip(rows.index, rows["pixels"].fillna(""), strict=True)):
        line = row_index + 2  # header, then 1-based (assumes no quoted newlines, as in fer2013.csv)
        try:
            values = np.array(pixels.split(), dtype=np.float64)
        except ValueError:
            bad_rows.append(f"{line} (not numbers)")
            good[i] = False
            continue
        if values.size != pixel_count or np.any((values < 0) | (values > 255)):
            bad_rows.append(f"{line} ({values.size} values)")
            good[i] = False
            continue
        images[i] = values.reshape(FACE_SIZE, FACE_SIZE).astype(np.uint8)
    if bad_rows:
        message = (
            f"{csv_path}: {len(bad_rows)} rows whose pixels are not {pixel_count} values in 0..255 "
            f"(line numbers): {_listing(bad_rows)}"
        )
        if not skip_corrupt:
            raise DatasetError(message + ". Fix them, or pass --skip-corrupt to skip them with a warning.")
        log.warning("skipping %s", message)
        if not good.any():
            raise DatasetError(f"{csv_path}: no usable rows with Usage={usage}")
        images = images[good]
        rows = rows[good]
    csv_labels = rows["emotion"].to_numpy(dtype=np.int64)
    to_canonical = np.array([EMOTION_INDEX[name] for name in FER2013_CSV_ORDER], dtype=np.int32)
    labels = to_canonical[csv_labels]
    present = [EMOTIONS[i] for i in sorted(set(labels.tolist()))]
    return SplitData(images, labels, present, bad_rows if skip_corrupt else [])


# --- tf.data ----------------------------------------------------------------------------

_AUGMENT_STRENGTH = {"light": 0.5, "standard": 1.0, "strong": 1.5}
# Random erasing (Zhong et al. 2020): each side of the patch is sqrt(U(a, b)) of the face's side.
ERASING_SCALE = (0.02, 0.33)


def build_augmenter(level: str = "standard", erasing: float = 0.0):
    """Augmentation as Keras layers, for training batches only.

    `erasing` > 0 is the chance that a face also gets a random rectangle of noise after the geometric
    changes: a hand, a microphone or the frame's edge hides part of many live faces, and the model
    should not hang its label on one region (the mouth, say) alone.
    """
    import keras
    from keras import layers

    if level not in AUGMENT_LEVELS:
        raise ValueError(f"augmentation level must be one of {AUGMENT_LEVELS}")
    if not 0.0 <= erasing <= 1.0:
        raise ValueError("the erasing probability must be between 0 and 1")
    steps = []
    if level != "none":
        k = _AUGMENT_STRENGTH[level]
        steps = [
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.04 * k, fill_mode="reflect"),
            layers.RandomZoom(0.1 * k, fill_mode="reflect"),
            layers.RandomTranslation(0.08 * k, 0.08 * k, fill_mode="reflect"),
            layers.RandomContrast(0.25 * k),
        ]
    if erasing > 0:
        # A (p, p) factor makes p the chance itself; a single float would draw the chance from U(0, p).
        steps.append(layers.RandomErasing(factor=(erasing, erasing), scale=ERASING_SCALE, value_range=(0, 255)))
    if not steps:
        return None
    return keras.Sequential(steps, name="augment")  # runs in tf.data only; never saved with a model


def make_dataset(
    data: SplitData,
    batch_size: int,
    *,
    training: bool,
    augment: str = "none",
    erasing: float = 0.0,
    mixup: float = 0.0,
    targets: np.ndarray | None = None,
    label_smoothing_classes: int = len(EMOTIONS),
    seed: int = 1234,
):
    """(faces float32 (b,48,48,1) 0..255, one-hot labels) batches: cache, shuffle, batch, augment, prefetch.

    `erasing` is `build_augmenter`'s chance of a noise patch per face. `mixup` > 0 blends each
    training face and its label with another face of the batch, the weight drawn from
    Beta(mixup, mixup) (Zhang et al. 2018); FER2013's labels are noisy, and soft targets
    between two faces keep the model from fitting single noisy labels with full confidence.
    `targets`, (n, 7) distributions, replace the one-hot labels (distillation).
    """
    import tensorflow as tf

    faces = data.images[..., None]
    if targets is None:
        targets = np.eye(label_smoothing_classes, dtype=np.float32)[data.labels]
    elif targets.shape != (len(data), label_smoothing_classes):
        raise ValueError(f"targets must be ({len(data)}, {label_smoothing_classes}); got {targets.shape}")
    ds = tf.data.Dataset.from_tensor_slices((faces, targets.astype(np.float32))).cache()
    if training:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    augmenter = build_augmenter(augment, erasing) if training else None
    if augmenter is not None:
        ds = ds.map(
            lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if training and mixup > 0:
        from keras import layers

        mix = layers.MixUp(alpha=mixup, seed=seed)

        def blend(x, y):
            mixed = mix({"images": x, "labels": y}, training=True)
            return mixed["images"], mixed["labels"]

        ds = ds.map(blend, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def balanced_class_weights(labels: np.ndarray, max_weight: float = 5.0) -> dict[int, float]:
    """Inverse-frequency weights (mean 1), capped so `disgust` does not dominate."""
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(EMOTIONS) * np.maximum(counts, 1)), 0.0)
    return {i: float(min(w, max_weight)) for i, w in enumerate(weights)}
