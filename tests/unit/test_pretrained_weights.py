"""training.pretrained: how far a base-weights file is pretrained, and where that is learnt from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import pretrained
from training.pretrained import LAST_BLOCK, BaseWeights, WeightsFileError, describe_file, file_sha256

SHARED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared/weights/inceptionv3-imagenet-to-mixed5.weights.h5"


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "base.weights.h5"
    path.write_bytes(b"not really weights, but a file with a hash")
    return path


def test_an_unknown_file_is_taken_as_fully_pretrained_and_named_by_its_hash(weights_file: Path) -> None:
    base = describe_file(weights_file)
    assert base.pretrained_through == LAST_BLOCK and not base.partial
    assert base.sha256 == file_sha256(weights_file)
    assert base.sha256[:12] in base.source
    assert "every InceptionV3 block pretrained" in base.describe()


def test_a_known_file_is_recognised_by_its_content(weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known = pretrained.KnownWeights("mixed5", "the shared partial file")
    monkeypatch.setitem(pretrained.KNOWN_FILES, file_sha256(weights_file), known)
    base = describe_file(weights_file)
    assert base.partial and base.pretrained_through == "mixed5"
    assert base.describe() == (
        "transfer learning from ImageNet: the stem and mixed0-mixed5 pretrained, mixed6-mixed10 and the head "
        "trained from scratch (the shared partial file)"
    )


def test_a_sidecar_says_how_far_and_where_from_and_the_option_overrides_it(weights_file: Path) -> None:
    sidecar = weights_file.with_name(weights_file.name + ".json")
    sidecar.write_text(json.dumps({"pretrained_through": "mixed7", "source": "our lab's ImageNet run"}))
    base = describe_file(weights_file)
    assert (base.pretrained_through, base.source) == ("mixed7", "our lab's ImageNet run")
    assert describe_file(weights_file, "mixed2").pretrained_through == "mixed2"


@pytest.mark.parametrize("content", ["{not json", '{"source": "no block"}', '{"pretrained_through": "mixed11"}'])
def test_a_broken_sidecar_is_a_clear_error(weights_file: Path, content: str) -> None:
    weights_file.with_name(weights_file.name + ".json").write_text(content)
    with pytest.raises(WeightsFileError, match=r"\.json|mixed11"):
        describe_file(weights_file)


def test_a_missing_file_or_a_block_that_does_not_exist_is_refused(tmp_path: Path, weights_file: Path) -> None:
    with pytest.raises(WeightsFileError, match="not found"):
        describe_file(tmp_path / "nowhere.h5")
    with pytest.raises(WeightsFileError, match="InceptionV3 block"):
        describe_file(weights_file, "conv2d_7")


def test_the_description_round_trips_through_a_run_config() -> None:
    base = BaseWeights("/w.h5", "mixed5", "src", "abc")
    assert BaseWeights(**json.loads(json.dumps(base.__dict__))) == base


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="the shared ImageNet weights file is not on this machine")
def test_the_shared_partial_file_is_known_as_pretrained_to_mixed5() -> None:
    base = describe_file(SHARED_WEIGHTS)
    assert base.pretrained_through == "mixed5"
    assert "nsfwjs 4.4.0" in base.source and "8-bit" in base.source
