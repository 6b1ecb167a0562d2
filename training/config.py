"""One typed run configuration: every option of a training run with its bounds, default and help, defined once.

The command line (`training.train`) builds its options from these fields and a `TrainConfig` from
its arguments; the Training page builds one from its form (and takes its input bounds from here).
The launcher writes it to the run folder as `config.json`, training reads it from there, and a
resume reads it back. `from_stored` also loads the `config.json` of runs from before an option existed.

Nothing here imports TensorFlow; `resolve_inputs` is the only function that touches files.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from training.pretrained import LAST_BLOCK, BaseWeights, WeightsFileError, describe_file

Augment = Literal["none", "light", "standard", "strong"]
LrSchedule = Literal["plateau", "cosine"]
Split = Literal["train", "val", "test"]
AUGMENT_LEVELS: tuple[str, ...] = get_args(Augment)
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
SPLITS: tuple[str, ...] = get_args(Split)

DEFAULT_EPOCHS = 40
# Keras' default. Its docs suggest 0.1-1.0 for Inception on ImageNet: a larger epsilon damps the
# occasional huge Adam step on weights whose gradient history is near zero.
DEFAULT_ADAM_EPSILON = 1e-7
# Clean training faces the BatchNorm statistics are re-estimated on before each validation (about
# 25 s on the 2-core machine). On the 60.2% model this alone gave +2.1 val points: the moving statistics
# had followed the last ~10 strongly augmented batches.
DEFAULT_PRECISE_BN_IMAGES = 8192
# A partly pretrained base: its pretrained blocks learn at this share of the rate of the random ones.
# Measured on the shared mixed5 file (75 px, 8,000 faces, lr 1e-3 cosine, 3 epochs): factor 1.0 reached 50.2% on
# val, 0.3 48.9%, and 0.1 trailed both after 2 epochs (46.3% against 48.9% and 47.5%); so all blocks learn alike.
DEFAULT_PRETRAINED_LR_FACTOR = 1.0
# With distill_from: the teacher's share of each training target (the label keeps the rest).
DEFAULT_DISTILL_WEIGHT = 0.5
# Values a stored config.json lacks because the option did not exist yet: what those runs trained with.
LEGACY_DEFAULTS: dict[str, Any] = {"precise_bn": 0, "seed": 1234}
SCRATCH_WEIGHTS = ("none", "scratch", "")


def _new_seed() -> int:
    # A fixed default made every run (and every --init-from stage) replay the same shuffles and
    # augmentations epoch by epoch, so later stages kept seeing views they had already fitted.
    return secrets.randbelow(2**31)


def _option(default: Any = ..., *, help: str, metavar: str | None = None, **bounds: Any) -> Any:
    extra = {"metavar": metavar} if metavar else None
    return Field(default, description=help, json_schema_extra=extra, **bounds)


class TrainConfig(BaseModel):
    """The options of one training run, as stored in its config.json (field order is the file's key order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Path = _option(help="data set: a folder with train/ and val/ class folders, or fer2013.csv")
    epochs: int = _option(DEFAULT_EPOCHS, ge=1, le=1000, help="total epochs")
    batch_size: int = _option(64, ge=1, le=1024, help="images per training step")
    lr: float = _option(1e-3, gt=0, le=1, help="Adam learning rate")
    lr_schedule: LrSchedule = _option(
        "plateau", help="plateau: halve the rate when val accuracy stalls for 2 epochs; cosine: decay it to 1e-06 "
        "by the last epoch (a resume with a new --epochs stretches the curve)")
    adam_epsilon: float = _option(DEFAULT_ADAM_EPSILON, gt=0, help="Adam epsilon (larger = steadier, smaller steps)")
    weight_decay: float = _option(0.0, ge=0, le=1, metavar="DECAY",
                                  help="decoupled weight decay: each step shrinks the weights (not BatchNorm or "
                                  "biases) by learning rate x DECAY, e.g. 0.05 (0: off)")
    ema: float = _option(0.0, ge=0, lt=1, metavar="MOMENTUM",
                         help="validate, checkpoint and export a moving average of the weights with this momentum, "
                         "e.g. 0.999 (0: off)")
    precise_bn: int = _option(DEFAULT_PRECISE_BN_IMAGES, ge=0, metavar="N",
                              help="re-estimate BatchNorm statistics on N clean training faces before each "
                              "validation (0: off)")
    image_size: int = _option(75, ge=75, le=299, help="InceptionV3 input side in pixels (75 is its smallest)")
    init_from: Path | None = _option(None, metavar="MODEL", help="start from this model's weights (fine-tuning)")
    weights: str = _option("imagenet", help="base weights: 'imagenet' (Keras cache, else download), 'none' "
                           "(from scratch), or a .h5 path")
    # What the base holds (None: from scratch, Keras' ImageNet file, or init_from); the model card names it.
    # Not an option: resolve_inputs describes the weights file.
    base_weights: BaseWeights | None = None
    pretrained_lr_factor: float = _option(DEFAULT_PRETRAINED_LR_FACTOR, gt=0, le=1, metavar="F",
                                          help="partly pretrained base: the pretrained blocks learn at F x the "
                                          "learning rate of the random blocks and the head")
    augment: Augment = _option("standard", help="augmentation strength")
    label_smoothing: float = _option(0.0, ge=0, le=0.3, help="label smoothing")
    erasing: float = _option(0.0, ge=0, le=1, metavar="P",
                             help="chance that a training face also gets a random patch of noise (random erasing), "
                             "e.g. 0.5 (0: off)")
    mixup: float = _option(0.0, ge=0, le=1, metavar="ALPHA",
                           help="blend training faces and labels in pairs, weights from Beta(ALPHA, ALPHA), e.g. 0.2 "
                           "(0: off)")
    class_weights: bool = _option(False, help="weight classes by inverse frequency (capped)")
    distill_from: Path | None = _option(None, metavar="MODEL",
                                        help="self-distillation: train towards this model's predictions (calibrated, "
                                        "averaged with the mirror image) on the clean training faces, mixed with the "
                                        "labels; it may be the --init-from model")
    distill_also: tuple[Path, ...] = _option((), metavar="MODEL",
                                             help="with --distill-from: more teachers (one or more models); the "
                                             "student trains towards the mean of all teachers' predictions (an "
                                             "ensemble teacher)")
    distill_weight: float = Field(DEFAULT_DISTILL_WEIGHT, ge=0, le=1, validate_default=True,
                                  description="with --distill-from: the teacher's share of each training target, "
                                  "in (0, 1]", json_schema_extra={"metavar": "W", "range": "in (0, 1]"})
    dropout: float = _option(0.4, ge=0, lt=1, help="dropout before the softmax head")
    head_epochs: int = _option(3, ge=0, help="head-only epochs (fully pretrained base)")
    train_split: Split = _option("train", help="split to fit on")
    val_split: Split = _option("val", help="split to choose on")
    skip_corrupt: bool = _option(False, help="skip unreadable images with a warning")
    limit: int = _option(0, ge=0, help="use at most N training images (smoke tests; 0: all)")
    export: bool = _option(True, help="evaluate, export and calibrate the best model at the end")
    seed: int = Field(default_factory=_new_seed, ge=0,
                      description="random seed (default: a new one for each run, recorded in its config.json)")

    @field_validator("distill_also")
    @classmethod
    def _needs_first_teacher(cls, value: tuple[Path, ...], info: ValidationInfo) -> tuple[Path, ...]:
        if value and info.data.get("distill_from") is None:
            raise ValueError("needs --distill-from (the first teacher)")
        return value

    @field_validator("distill_weight")
    @classmethod
    def _teacher_share(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("distill_from") is None:
            return 0.0  # off: recorded as 0, as runs always have
        if value <= 0:
            raise ValueError("must be in (0, 1]")
        return value

    # --- reading and writing ------------------------------------------------------------------

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrainConfig:
        """A config from option values (missing ones take their defaults); ConfigError names each bad one."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigError.from_validation(exc) from None

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> TrainConfig:
        """A config.json as any version of ClassMood wrote it: options it predates get what those runs used."""
        known = {key: value for key, value in stored.items() if key in cls.model_fields}
        return cls.from_options({**LEGACY_DEFAULTS, **known})

    def stored(self) -> dict[str, Any]:
        """The JSON form written to config.json."""
        return self.model_dump(mode="json")

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with `changes`, validated like a new config."""
        return TrainConfig.from_options({**self.model_dump(), **changes})

    # --- what the options mean -------------------------------------------------------------------

    @property
    def from_scratch(self) -> bool:
        return self.init_from is None and self.weights.lower() in SCRATCH_WEIGHTS


def resolve_inputs(config: TrainConfig, pretrained_through: str | None = None) -> TrainConfig:
    """The config of a new run with its inputs checked: paths made absolute, a base-weights file described
    (how far it is pretrained, see training.pretrained) and the teacher model file found.

    So a missing or unusable file fails here, before a process starts or any data loads. Raises ConfigError.
    """
    from fer_core.model_io import KERAS_FILE, ModelError, resolve_model_file

    changes: dict[str, Any] = {"data": config.data.expanduser().resolve()}
    if config.init_from is not None:
        changes["init_from"] = config.init_from.expanduser().resolve()
    weights = config.weights.lower()
    if config.init_from is None and weights not in (*SCRATCH_WEIGHTS, "imagenet"):
        try:
            base = describe_file(config.weights, pretrained_through)
        except WeightsFileError as exc:
            message = str(exc)
            problem = (Problem("weights", message.removeprefix("--weights ")) if message.startswith("--weights ")
                       else Problem("weights", message, whole=True))
            raise ConfigError([problem]) from None
        changes.update(weights=base.path, base_weights=base)
    elif pretrained_through and pretrained_through != LAST_BLOCK:
        raise ConfigError([Problem("pretrained_through", "applies to a weights file only")])
    if config.distill_from is not None:
        try:
            changes["distill_from"] = resolve_model_file(config.distill_from, KERAS_FILE).resolve()
        except ModelError as exc:
            raise ConfigError([Problem("distill_from", str(exc), separator=": ")]) from None
    if config.distill_also:
        try:
            changes["distill_also"] = tuple(resolve_model_file(teacher, KERAS_FILE).resolve()
                                            for teacher in config.distill_also)
        except ModelError as exc:
            raise ConfigError([Problem("distill_also", str(exc), separator=": ")]) from None
    return config.with_changes(**changes)


# --- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """What is wrong with one option. `whole`: the message is a sentence of its own, not "<option> <message>"."""

    field: str
    message: str
    separator: str = " "
    whole: bool = False

    def describe(self, name: str) -> str:
        return self.message if self.whole else f"{name}{self.separator}{self.message}"


class ConfigError(ValueError):
    """Options that do not make a valid run; `describe` words it with the caller's names for the options."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.describe(cli_flag))

    def describe(self, name_of: Callable[[str], str]) -> str:
        return "; ".join(problem.describe(name_of(problem.field)) for problem in self.problems)

    @classmethod
    def from_validation(cls, error: ValidationError) -> ConfigError:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "config"
            problems.append(Problem(field, _reason(field, item)))
        return cls(problems)


def cli_flag(field: str) -> str:
    """The command-line name of an option: --batch-size."""
    return "--no-export" if field == "export" else "--" + field.replace("_", "-")


def _reason(field: str, item: Any) -> str:
    kind = item["type"]
    info = TrainConfig.model_fields.get(field)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and info is not None:
        return "must be " + describe_range(info)
    if kind == "literal_error" and info is not None:
        return f"must be one of {', '.join(map(str, get_args(info.annotation)))}; got {item['input']!r}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a training option"
    if kind in ("int_parsing", "int_from_float"):
        return "must be a whole number"
    if kind == "float_parsing":
        return "must be a number"
    return str(item["msg"]).removeprefix("Value error, ")[:200]


def option_help(field: str) -> str:
    """An option's help with its range and default: what the CLI's --help and the page's tooltips say."""
    info = TrainConfig.model_fields[field]
    notes = [] if describe_range(info) == "valid" else [describe_range(info)]
    if not info.is_required() and info.default_factory is None and info.default not in (None, ()):
        notes.append(f"default: {info.default}")
    return (info.description or "") + (f" ({'; '.join(notes)})" if notes else "")


def _rules(info: FieldInfo) -> dict[str, float]:
    """A field's bounds by kind: {"ge": 0, "lt": 1}."""
    kinds = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)
    rules: dict[str, float] = {}
    for rule in info.metadata:
        if isinstance(rule, kinds):
            kind = type(rule).__name__.lower()
            rules[kind] = getattr(rule, kind)
    return rules


def bounds(field: str) -> tuple[float | None, float | None]:
    """The lowest and highest value an option accepts (None: unbounded), whether inclusive or not."""
    rules = _rules(TrainConfig.model_fields[field])
    return rules.get("ge", rules.get("gt")), rules.get("le", rules.get("lt"))


def describe_range(info: FieldInfo) -> str:
    """"between 0 and 1", "in [0, 1)", "positive", "at least 75", ..."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "range" in extra:  # bounds the field's own validator narrows (distill_weight: 0 means off)
        return str(extra["range"])
    rules = _rules(info)
    low_key = "ge" if "ge" in rules else "gt" if "gt" in rules else None
    high_key = "le" if "le" in rules else "lt" if "lt" in rules else None
    if low_key and high_key:
        if (low_key, high_key) == ("ge", "le"):
            return f"between {rules['ge']:g} and {rules['le']:g}"
        opening, closing = "[(" [low_key == "gt"], "])" [high_key == "lt"]
        return f"in {opening}{rules[low_key]:g}, {rules[high_key]:g}{closing}"
    if low_key == "gt":
        return "positive" if rules["gt"] == 0 else f"greater than {rules['gt']:g}"
    if low_key == "ge":
        return "0 or more" if rules["ge"] == 0 else f"at least {rules['ge']:g}"
    if high_key:
        return f"{'at most' if high_key == 'le' else 'less than'} {rules[high_key]:g}"
    return "valid"
