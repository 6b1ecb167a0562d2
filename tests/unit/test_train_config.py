"""training.config: one typed run configuration, from the CLI, the page and config.json files of every version."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from training import runs
from training.config import ConfigError, TrainConfig, bounds, describe_range, option_help
from training.train import build_parser, prepare_run

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"


def stored(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def test_a_config_from_the_first_version_loads_with_what_those_runs_trained_with() -> None:
    config = TrainConfig.from_stored(stored("first-version.json"))
    assert (config.epochs, config.lr, config.label_smoothing, config.seed) == (20, 3e-4, 0.1, 1234)
    # Options added later take the value the run really had, not today's default: no precise BatchNorm then.
    assert config.precise_bn == 0
    assert (config.lr_schedule, config.adam_epsilon, config.ema, config.weight_decay) == ("plateau", 1e-7, 0.0, 0.0)
    assert (config.mixup, config.erasing, config.distill_from, config.distill_weight) == (0.0, 0.0, None, 0.0)
    assert config.base_weights is None and config.pretrained_lr_factor == 1.0


def test_the_shipped_models_last_stage_and_this_weeks_runs_load_unchanged() -> None:
    for name in ("shipped-last-stage-2026-12.json", "partly-pretrained-2026-12-04.json",
                 "ema-distill-partly-pretrained-2026-12-04.json"):
        original = stored(name)
        config = TrainConfig.from_stored(original)
        again = config.stored()
        assert {key: again[key] for key in original} == original, name  # every stored value kept as it was
    pilot = TrainConfig.from_stored(stored("partly-pretrained-2026-12-04.json"))
    assert pilot.base_weights is not None and pilot.base_weights.pretrained_through == "mixed5"
    assert pilot.base_weights.partial and pilot.pretrained_lr_factor == 0.3 and pilot.limit == 8000
    running = TrainConfig.from_stored(stored("ema-distill-partly-pretrained-2026-12-04.json"))
    assert (running.ema, running.distill_weight, running.erasing) == (0.999, 0.5, 0.25)
    assert running.distill_from == Path("/root/classmood-train/models/fer-inceptionv3/model.keras")


def test_a_stored_config_round_trips_and_unknown_keys_from_elsewhere_are_ignored() -> None:
    config = TrainConfig(data=Path("/d"), epochs=3, ema=0.999, distill_from=Path("/m.keras"), distill_weight=0.7)
    assert TrainConfig.from_stored(config.stored()) == config
    assert TrainConfig.from_stored({**config.stored(), "future_option": 1}) == config


def test_resume_reads_an_older_runs_config_back_and_a_new_total_keeps_the_rest(tmp_path: Path) -> None:
    run_dir = tmp_path / "pilot"
    run_dir.mkdir()
    shutil.copy(CONFIGS / "partly-pretrained-2026-12-04.json", run_dir / runs.CONFIG_FILE)
    runs.write_json_atomic(run_dir / runs.STATUS_FILE, {"status": "stopped", "epoch": 2})
    same_dir, config = prepare_run(build_parser().parse_args(["--resume", str(run_dir)]))
    assert same_dir == run_dir.resolve()
    assert config == TrainConfig.from_stored(stored("partly-pretrained-2026-12-04.json"))
    _, longer = prepare_run(build_parser().parse_args(["--resume", str(run_dir), "--epochs", "6"]))
    assert longer == config.with_changes(epochs=6)
    rewritten = runs.read_json(run_dir / runs.CONFIG_FILE)
    # Options added since are written with the value that run trains with (no extra teacher).
    assert rewritten == {**stored("partly-pretrained-2026-12-04.json"), "epochs": 6, "distill_also": []}


def test_errors_name_each_option_in_the_callers_words() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_options({"data": "d", "epochs": 0, "lr": 0, "augment": "extreme"})
    assert str(err.value) == ("--epochs must be between 1 and 1000; --lr must be in (0, 1]; "
                              "--augment must be one of none, light, standard, strong; got 'extreme'")
    labels = {"epochs": "Epochs", "lr": "Learning rate", "augment": "Augmentation"}
    assert err.value.describe(labels.__getitem__).startswith("Epochs must be between 1 and 1000; Learning rate")
    with pytest.raises(ConfigError, match="--epochz is not a training option"):
        TrainConfig.from_options({"data": "d", "epochz": 3})


def test_the_cli_and_the_page_take_their_bounds_from_one_definition(tmp_path: Path) -> None:
    parser = build_parser()
    for field in TrainConfig.model_fields:
        low = bounds(field)[0] if field != "base_weights" else None
        if low is None:
            continue
        below = low - 1 if isinstance(low, int) and not isinstance(low, bool) else low - 0.5
        flag = "--" + field.replace("_", "-")
        args = parser.parse_args(["--data", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), flag, str(below)])
        expected = f"{flag} must be {describe_range(TrainConfig.model_fields[field])}"
        with pytest.raises(SystemExit, match=re.escape(expected)):
            prepare_run(args)
        assert describe_range(TrainConfig.model_fields[field]) in option_help(field)  # what --help shows
    assert bounds("epochs") == (1, 1000) and bounds("image_size") == (75, 299) and bounds("lr") == (0, 1)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
