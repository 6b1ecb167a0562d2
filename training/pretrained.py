"""What a base-weights file holds: which InceptionV3 blocks are pretrained, and where they come from.

A weights file for `--weights PATH` may be pretrained only in part: the file in `../shared/weights/`
holds ImageNet weights in the stem and `mixed0`...`mixed5` and Keras' default initialisation in
`mixed6`...`mixed10`. The training recipe differs (see `training.model.layerwise_rates`), so a run
must know. In order of precedence it learns it from:
1. `--pretrained-through BLOCK` on the command line;
2. a sidecar `<file>.json` next to the weights: {"pretrained_through": "mixed5", "source": "..."};
3. the file's SHA-256, for the files listed in KNOWN_FILES;
4. otherwise the whole base is taken as pretrained (Keras' own ImageNet file).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# InceptionV3's blocks in order; a base is pretrained from the stem up to and including one of them.
BLOCKS = tuple(f"mixed{i}" for i in range(11))
LAST_BLOCK = BLOCKS[-1]

IMAGENET_SOURCE = "Keras Applications' ImageNet InceptionV3 weights (no top)"

_SHARED_PARTIAL_SOURCE = (
    "Keras Applications' ImageNet InceptionV3 weights for the stem and mixed0-mixed5, stored at 8-bit "
    "precision; copied from the layers that the npm package nsfwjs 4.4.0 (MIT) kept frozen (trainable: false) "
    "when it fine-tuned InceptionV3 from mixed6 on, so nothing trained on that package's data is included. "
    "mixed6-mixed10 hold Keras' default initialisation (seed 0)"
)


@dataclass(frozen=True)
class KnownWeights:
    pretrained_through: str
    source: str


KNOWN_FILES: dict[str, KnownWeights] = {
    # ../shared/weights/inceptionv3-imagenet-to-mixed5.weights.h5 (see its README)
    "99197508a3c5f1a2bab957a1179c119cd2b719a825b0cda609c8de9321631138": KnownWeights("mixed5", _SHARED_PARTIAL_SOURCE),
}


class WeightsFileError(ValueError):
    """A base-weights file (or what is said about it) cannot be used; the message says why."""


@dataclass(frozen=True)
class BaseWeights:
    """Resolved base weights of a run: the file, how far it is pretrained, and its provenance."""

    path: str
    pretrained_through: str  # the last pretrained block, "mixed10" for a fully pretrained base
    source: str
    sha256: str | None = None

    @property
    def partial(self) -> bool:
        return self.pretrained_through != LAST_BLOCK

    def describe(self) -> str:
        """One line for the model card: what was pretrained, what was not, and where it came from."""
        if not self.partial:
            return f"transfer learning from ImageNet: every InceptionV3 block pretrained ({self.source})"
        cut = BLOCKS.index(self.pretrained_through)
        first_random = BLOCKS[cut + 1]
        return (
            f"transfer learning from ImageNet: the stem and mixed0-{self.pretrained_through} pretrained, "
            f"{first_random}-{LAST_BLOCK} and the head trained from scratch ({self.source})"
        )


def check_block(name: str) -> str:
    if name not in BLOCKS:
        raise WeightsFileError(f"--pretrained-through must name an InceptionV3 block ({BLOCKS[0]} ... {LAST_BLOCK}), "
                               f"not {name!r}")
    return name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> dict | None:
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsFileError(f"{sidecar}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("pretrained_through"), str):
        raise WeightsFileError(f'{sidecar}: expected {{"pretrained_through": "mixedN", "source": "..."}}')
    return data


def describe_file(path: str | Path, pretrained_through: str | None = None) -> BaseWeights:
    """How far the weights file at `path` is pretrained (see the module docstring for the order)."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise WeightsFileError(f"--weights file not found: {file}")
    sha = file_sha256(file)
    known = KNOWN_FILES.get(sha)
    sidecar = _sidecar(file)
    if pretrained_through is not None:
        through = check_block(pretrained_through)
    elif sidecar is not None:
        through = check_block(sidecar["pretrained_through"])
    elif known is not None:
        through = known.pretrained_through
    else:
        through = LAST_BLOCK
    if sidecar is not None and isinstance(sidecar.get("source"), str):
        source = sidecar["source"]
    elif known is not None:
        source = known.source
    else:
        source = f"weights file {file.name} (sha256 {sha[:12]}...)"
    return BaseWeights(str(file), through, source, sha)
