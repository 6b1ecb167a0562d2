"""Measure training throughput (images/s) with the real model, pipeline and optimizer.

    python -m training.bench                          # synthetic faces, batch 64, 75x75, 30 steps
    python -m training.bench --data ../shared/datasets/fer2013 --steps 20 --image-size 96

The first `--warmup` steps (graph tracing, allocator warm-up) are excluded. The figure is
only as good as the machine is quiet: check for other training runs first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.emotions import FACE_SIZE, NUM_EMOTIONS
from training.config import AUGMENT_LEVELS
from training.data import SplitData, load_split, make_dataset

DEFAULT_STEPS = 30
DEFAULT_WARMUP = 3


def synthetic_split(n: int, seed: int = 0) -> SplitData:
    """Random faces with balanced labels: throughput does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    labels = (np.arange(n) % NUM_EMOTIONS).astype(np.int32)
    return SplitData(images, labels, [])


def run_bench(
    data: str | Path | None = None,
    *,
    batch_size: int = 64,
    image_size: int = 75,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    augment: str = "standard",
) -> dict[str, Any]:
    """Train `warmup + steps` batches from scratch and time the last `steps`."""
    import keras

    from training.model import build_model, unfreeze_all

    if steps < 1 or warmup < 1 or batch_size < 1:
        raise ValueError("steps, warmup and batch size must be positive")
    total = steps + warmup
    if data is None:
        split = synthetic_split(min(total * batch_size, 4096))
    else:
        split = load_split(data, "train", require_all_classes=False)
    ds = make_dataset(split, batch_size, training=True, augment=augment).repeat()

    model = build_model(image_size, None)
    unfreeze_all(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            float((logs or {}).get("loss", 0.0))  # waits for the step to finish, so the clock is honest
            times.append(time.perf_counter())

    t_start = time.perf_counter()
    model.fit(ds, steps_per_epoch=total, epochs=1, callbacks=[Clock()], verbose=0, shuffle=False)
    timed = times[warmup - 1 :]  # intervals after the warm-up steps
    seconds = timed[-1] - timed[0]
    images_per_s = steps * batch_size / seconds
    return {
        "images_per_s": round(images_per_s, 1),
        "ms_per_batch": round(1000.0 * seconds / steps, 1),
        "warmup_s": round(times[warmup - 1] - t_start, 1),
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "warmup_steps": warmup,
        "augment": augment,
        "data": "synthetic" if data is None else str(data),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.bench",
        description="Training throughput of ClassMood's InceptionV3 (from scratch, Adam).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, help="data set whose train/ split to use (default: synthetic faces)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=75)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="timed steps")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed steps first")
    parser.add_argument("--augment", choices=AUGMENT_LEVELS, default="standard")
    args = parser.parse_args(argv)
    try:
        r = run_bench(args.data, batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                      warmup=args.warmup, augment=args.augment)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"training throughput: {r['images_per_s']:.1f} images/s ({r['ms_per_batch']:.0f} ms per batch of "
        f"{r['batch_size']}, {r['image_size']}x{r['image_size']}, augment {r['augment']}, {r['steps']} timed steps "
        f"after {r['warmup_steps']} warm-up steps taking {r['warmup_s']:.0f} s; data {r['data']})"
    )
    print(f"machine: {r['cpus']} CPUs, load average (1 min) {r['load_average_1m']}: other work slows this figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
