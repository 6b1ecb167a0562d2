"""Learning-rate schedules as pure functions of the global step (no Keras), so they are unit-testable
and a resumed run goes on exactly where it stopped. `training.callbacks` applies them batch by batch.
"""

from __future__ import annotations

import math

# ReduceLROnPlateau's floor, and where the cosine schedule ends.
MIN_LR = 1e-6
# plateau: halve the rate when val accuracy stalls for this many epochs.
REDUCE_LR_FACTOR = 0.5
REDUCE_LR_PATIENCE = 2
WARMUP_EPOCHS = 1


def warmup_lr(step: int, target_lr: float, warmup_steps: int) -> float | None:
    """From target/10 at step 0 to `target_lr` at `warmup_steps`; None after it (the schedule owns the rate).

    Adam's first steps move every weight by about the learning rate, whatever its gradient: a
    freshly initialised InceptionV3 diverges easily, and a trained one (--init-from, no warm-up)
    lost 6-7 val points in its first epoch.
    """
    if step > warmup_steps:
        return None
    if step == warmup_steps:
        return target_lr
    return target_lr * (0.1 + 0.9 * step / warmup_steps)


def cosine_lr(step: int, base_lr: float, min_lr: float, start_step: int, end_step: int) -> float | None:
    """A half cosine from `base_lr` at `start_step` down to `min_lr` at `end_step` (and after it).

    None before `start_step`: the steps of a warm-up belong to it.
    """
    if step < start_step:
        return None
    span = end_step - start_step  # <= 0: a phase no longer than its warm-up
    progress = min(1.0, (step - start_step) / span) if span > 0 else 1.0
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
