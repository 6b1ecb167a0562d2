"""ClassMood's emotion model: InceptionV3 without its top plus a new softmax head.

The model takes 48x48 grayscale faces with pixel values 0..255 (FER2013's own
format, and what `fer_core.preprocess.crop_faces` produces) and does its own
resizing, channel replication and scaling. So training, evaluation and the live
pipeline cannot feed it differently.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers

from fer_core.emotions import FACE_SIZE, NUM_EMOTIONS
from training.pretrained import BLOCKS, WeightsFileError

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 75  # the smallest input InceptionV3 accepts
DEFAULT_IMAGE_SIZE = 75
DEFAULT_DROPOUT = 0.4
# BatchNorm momentum when training from scratch: Keras' default 0.99 lets the moving
# statistics lag for thousands of steps, which makes early validation scores erratic.
SCRATCH_BN_MOMENTUM = 0.9
IMAGENET_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Blocks opened for fine-tuning a pretrained base: the last two Inception modules.
FINE_TUNE_FROM_LAYER = "mixed9"
BASE_NAME = "inception_v3"
# Not decayed: BatchNorm scales and offsets and biases (shrinking them only fights the normalisation).
NO_DECAY_VARIABLES = ("gamma", "beta", "bias")


def resolve_imagenet_weights(weights: str | Path | None) -> str | None:
    """Return what to pass as InceptionV3's `weights`, or None to train from scratch.

    `weights` may be "imagenet" (Keras cache, else a download), "none", or a file path.
    """
    if weights is None or str(weights).lower() in ("none", "scratch", ""):
        return None
    if str(weights).lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--weights file not found: {path}")
        return str(path)
    cached = Path(keras.config.keras_home() if hasattr(keras.config, "keras_home") else "~/.keras").expanduser()
    cached_file = cached / "models" / IMAGENET_NOTOP_FILE
    if cached_file.is_file():
        return str(cached_file)
    try:
        keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + IMAGENET_NOTOP_FILE,
            cache_subdir="models",
        )
    except Exception as exc:  # no network, proxy, DNS...: all mean "not available"
        log.warning("ImageNet weights unavailable (%s); training InceptionV3 from scratch.", type(exc).__name__)
        return None
    return str(cached_file)


def build_model(
    image_size: int = DEFAULT_IMAGE_SIZE,
    weights: str | None = None,
    dropout: float = DEFAULT_DROPOUT,
    num_classes: int = NUM_EMOTIONS,
    *,
    partly_pretrained: bool = False,
) -> keras.Model:
    """InceptionV3 (no top) + global average pooling + dropout + Dense(softmax).

    `weights` is a resolved value from `resolve_imagenet_weights` (a path or None). A
    `partly_pretrained` base (random top blocks) gets the from-scratch BatchNorm momentum throughout:
    its statistics are relearnt for faces anyway. Raises WeightsFileError for a file that is not
    InceptionV3's.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {image_size} is below InceptionV3's minimum of {MIN_IMAGE_SIZE}")
    faces = keras.Input(shape=(FACE_SIZE, FACE_SIZE, 1), name="faces")
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(faces)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)  # InceptionV3's [-1, 1] range
    try:
        base = keras.applications.InceptionV3(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3), name=BASE_NAME
        )
    except (ValueError, OSError, KeyError, TypeError) as exc:  # Keras/h5py say "does not fit" in several ways
        raise WeightsFileError(
            f"--weights {weights}: not an InceptionV3 (include_top=False) weights file: {type(exc).__name__}: "
            f"{str(exc)[:300]}"
        ) from exc
    if weights is None or partly_pretrained:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="emotion", dtype="float32")(x)
    return keras.Model(faces, outputs, name="classmood_inceptionv3")


def base_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE_NAME)


def freeze_base(model: keras.Model) -> None:
    """Head-only training of a pretrained base."""
    base_of(model).trainable = False


def unfreeze(model: keras.Model, from_layer: str = FINE_TUNE_FROM_LAYER) -> None:
    """Open the base from `from_layer` on for fine-tuning; BatchNorm stays frozen."""
    base = base_of(model)
    base.trainable = True
    names = [layer.name for layer in base.layers]
    if from_layer not in names:
        raise ValueError(f"layer {from_layer!r} is not in InceptionV3")
    cut = names.index(from_layer)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut and not isinstance(layer, layers.BatchNormalization)


def all_layers(model: keras.Model) -> list[keras.Layer]:
    """Every layer of `model`, those of nested models (the InceptionV3 base) included."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += all_layers(layer)
    return found


def recalibrate_batch_norm(model: keras.Model, faces: np.ndarray, batch_size: int = 128) -> int:
    """Re-estimate the moving mean and variance of every trainable BatchNorm layer on `faces`.

    "Precise BatchNorm": during training the moving statistics follow the last few (augmented)
    batches of raw weights, so they are noisy and do not describe clean faces or averaged (--ema)
    weights. Here they become the plain average over `faces` (clean training images) of each
    batch's statistics, for the weights the model holds now. Frozen layers keep theirs (Keras runs
    them in inference mode). Returns the number of layers re-estimated.
    """
    norms = [layer for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization) and layer.trainable]
    if not norms or len(faces) == 0:
        return 0
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, dtype="float32"))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, dtype="float32"))
    try:
        for step, start in enumerate(range(0, len(faces), batch_size)):
            for layer in norms:
                layer.momentum = step / (step + 1)  # a running mean: every batch counts the same
            model(np.asarray(faces[start : start + batch_size], dtype="float32"), training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return len(norms)


def pretrained_rate_multipliers(model: keras.Model, through: str, factor: float) -> dict[str, float]:
    """{variable path: `factor`} for the base's variables from the stem up to and including block `through`.

    Discriminative rates for a partly pretrained base: the pretrained blocks move `factor` times as
    fast as the random blocks and the head, so the ImageNet features adapt to faces without being
    washed out while the layers above them are still random.
    """
    if through not in BLOCKS:
        raise ValueError(f"{through!r} is not an InceptionV3 block")
    base = base_of(model)
    names = [layer.name for layer in base.layers]
    cut = names.index(through)
    return {variable.path: factor for layer in base.layers[: cut + 1] for variable in layer.trainable_weights}


@keras.saving.register_keras_serializable(package="classmood")
class LayerwiseAdam(keras.optimizers.Adam):
    """Adam with a learning-rate multiplier per variable, keyed by the variable's path (1.0 when absent).

    The schedule callbacks set the one base rate; each variable steps at base rate x its multiplier.
    """

    def __init__(self, *args: object, rate_multipliers: dict[str, float] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.rate_multipliers = dict(rate_multipliers or {})
        self._factor_by_id: dict[int, float] = {}

    def build(self, var_list: list) -> None:
        super().build(var_list)
        # The TensorFlow backend hands update_step the backend variable (`.value`), not the Keras one.
        self._factor_by_id = {
            id(variable.value): self.rate_multipliers[variable.path]
            for variable in var_list if variable.path in self.rate_multipliers
        }

    def update_step(self, gradient: object, variable: object, learning_rate: object) -> None:
        key = id(variable.value) if isinstance(variable, keras.Variable) else id(variable)
        factor = self._factor_by_id.get(key)
        super().update_step(gradient, variable, learning_rate if factor is None else learning_rate * factor)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate_multipliers": self.rate_multipliers}


def unfreeze_all(model: keras.Model) -> None:
    """From scratch everything trains, BatchNorm included."""
    base = base_of(model)
    base.trainable = True
    for layer in base.layers:
        layer.trainable = True


def make_optimizer(lr: float, epsilon: float, ema: float, weight_decay: float,
                   rate_multipliers: dict[str, float] | None = None) -> keras.optimizers.Optimizer:
    """Adam, with a moving average of the weights if `ema`, decoupled weight decay if `weight_decay`,
    and per-variable learning-rate multipliers if `rate_multipliers` (a partly pretrained base)."""
    options = {"epsilon": epsilon, "weight_decay": weight_decay or None, "use_ema": ema > 0,
               "ema_momentum": ema or 0.99}
    if rate_multipliers:
        optimizer: keras.optimizers.Optimizer = LayerwiseAdam(lr, rate_multipliers=rate_multipliers, **options)
    else:
        optimizer = keras.optimizers.Adam(lr, **options)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_VARIABLES))
    return optimizer
