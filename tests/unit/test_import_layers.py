"""The architecture: imports go one way, downward. No module imports its caller, and nothing imports in a circle.

Every import counts, also one inside a function or under TYPE_CHECKING: a lazy import is still a dependency.
A new module gets a layer here, where it belongs.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fer_core", "training", "pages")
# Packages may import only the ones before them: the engine knows nothing of training or the UI.
PACKAGE_ORDER = {"fer_core": 0, "training": 1, "pages": 2, "dashboard": 3}

# Bottom (0) to top. A module may import modules of its own layer or below, never above.
LAYERS: dict[str, dict[str, int]] = {
    "fer_core": {
        "__init__": 0, "emotions": 0, "settings": 0, "join_code": 0,
        "model_io": 1, "preprocess": 1, "access": 1, "schema": 1,
        "calibration": 2, "detect": 2,
        "classify": 3, "track": 3,
        "registry": 4, "aggregate": 4, "batching": 4,
        "pipeline": 5, "store": 5, "classroom": 5,
        "session": 6, "live": 6, "class_store": 6,
        # entry points: the video-analysis CLI, the benchmarks, the soak test
        "analyze": 7, "detector_eval": 7, "class_view": 7, "class_hub": 7, "baseline": 7,
        "bench": 8, "soak": 8, "class_bench": 8,
    },
    "training": {
        # run-folder layout and atomic I/O; metrics; the config
        "__init__": 0, "pretrained": 0, "schedules": 0, "metrics": 0, "config": 0,
        "runs": 1,
        # data, model, inference and callbacks
        "data": 2, "model": 2, "inference": 2, "callbacks": 2, "quantize": 2,
        # evaluate, export, calibrate, the model card, distillation targets
        "evaluate": 3, "export": 3, "card": 3, "calibrate": 3, "distill": 3,
        "trainer": 4,
        # entry points: train, publish and launch, the page's promotion and dataset-zip safety, the benchmark
        "train": 5, "publish": 5, "launch": 5, "promotion": 5, "dataset_zip": 5, "bench": 5, "requantize": 5,
    },
}


def project_modules() -> dict[str, Path]:
    modules = {"dashboard": ROOT / "dashboard.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            modules[f"{package}.{path.stem}"] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from training import runs` imports training.runs; `from training.runs import X` imports training.runs.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)  # a bare package name: its empty __init__
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_no_module_imports_in_a_circle() -> None:
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_every_engine_and_training_module_has_a_layer() -> None:
    unplaced = [name for name in project_modules()
                if name.split(".")[0] in LAYERS and name.split(".", 1)[1] not in LAYERS[name.split(".")[0]]]
    assert not unplaced, f"give these modules a layer in {Path(__file__).name}: {unplaced}"


def test_imports_go_down_the_layers_and_the_packages() -> None:
    upward = []
    for source, targets in import_graph().items():
        source_package, _, source_module = source.partition(".")
        for target in targets:
            target_package, _, target_module = target.partition(".")
            if PACKAGE_ORDER[target_package] > PACKAGE_ORDER[source_package]:
                upward.append(f"{source} imports {target} (package {target_package} is above {source_package})")
            elif target_package == source_package in LAYERS:
                layers = LAYERS[source_package]
                if layers.get(target_module, 99) > layers.get(source_module, 99):
                    upward.append(f"{source} (layer {layers.get(source_module)}) imports {target} "
                                  f"(layer {layers.get(target_module)})")
    assert not upward, "imports that go up:\n" + "\n".join(sorted(upward))


def test_the_walk_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from training.runs import RunInfo\n"
                      "def f():\n    from training import launch\n    import fer_core.settings\n")
    modules = {"training.runs": source, "training.launch": source, "fer_core.settings": source}
    assert imports_of(source, modules) == {"training.runs", "training.launch", "fer_core.settings"}
