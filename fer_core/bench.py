"""End-to-end speed of the live pipeline, per stage, against the naive seed approach.

    python -m fer_core.bench [--model PATH] [--backend auto|keras|litert|all] [--video PATH]
                             [--frames 40] [--photos DIR] [--no-naive] [--json out.json]

Prints (markdown):
- classifier ms per face at batch 1/8/32 for each backend the model directory has;
- analysed frames/s and per-stage ms at 640x480 and 1280x720, on a clip that pans and zooms
  over the group photos (or on `--video`), with the configured detect_every and with 1;
- the same for bald_guys.jpg at 1280x720 (~30 faces, one classifier call per frame);
- the naive seed baseline: Haar on the full-resolution frame (scaleFactor 1.1, minNeighbors 5,
  minSize 30) and a separate Keras `model.predict` per face, and the speed-up over it;
- peak resident memory of this process.

Shared machines are noisy: compare figures from the same run (the ratios), not across runs.
Per run: analysed frames/s = frames / summed per-frame wall time (after warm-up frames), the
mean and 95th-percentile ms per frame (detection frames are the slow ones), and each stage's
mean ms per frame (a stage that did not run on a frame counts 0, so stages add up to the mean).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_core.aggregate import SessionAggregator
from fer_core.classify import EmotionClassifier, load_classifier
from fer_core.detect import DetectorParams, HaarFaceDetector, cascade_path
from fer_core.detector_eval import DEFAULT_DATASET, load_ground_truth
from fer_core.emotions import FACE_SIZE
from fer_core.model_io import KERAS_FILE, TFLITE_FILE, ModelError
from fer_core.pipeline import STAGES, FramePipeline
from fer_core.preprocess import crop_faces, to_gray
from fer_core.registry import ModelRegistry
from fer_core.settings import get_settings
from fer_core.track import FaceTracker

RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720))
BATCHES = (1, 8, 32)
WARMUP_FRAMES = 3
NAIVE_SCALE_FACTOR = 1.1
NAIVE_MIN_NEIGHBORS = 5
NAIVE_MIN_SIZE = 30


@dataclass
class RunResult:
    label: str
    frames: int
    fps: float  # frames / sum of per-frame wall times
    ms_p95: float  # slow frames (detection frames) are what a live stream feels
    stage_ms: dict[str, float] = field(default_factory=dict)
    faces_per_frame: float = 0.0


def pan_zoom_clip(photos: Sequence[Path], size: tuple[int, int], frames: int) -> Iterator[np.ndarray]:
    """`frames` frames of `size`, panning and zooming across the photos in turn (generated lazily)."""
    width, height = size
    images = [cv2.imread(str(p)) for p in photos]
    images = [i for i in images if i is not None]
    if not images:
        raise FileNotFoundError("no readable photos for the benchmark clip")
    per_photo = max(1, frames // len(images))
    for n in range(frames):
        image = images[(n // per_photo) % len(images)]
        phase = (n % per_photo) / max(1, per_photo - 1)  # 0..1 within this photo
        ih, iw = image.shape[:2]
        zoom = 1.0 + 0.3 * phase  # zoom in by up to 30% ...
        ch = min(ih, round(iw * height / width)) / zoom  # ... on a window of the frame's aspect ratio
        cw = ch * width / height
        x0 = (iw - cw) * phase  # ... while panning left to right
        y0 = (ih - ch) / 2
        crop = image[int(y0) : int(y0 + ch), int(x0) : int(x0 + cw)]
        yield cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)


def video_clip(path: Path, size: tuple[int, int], frames: int) -> Iterator[np.ndarray]:
    from fer_core.analyze import VideoReader

    reader = VideoReader(path, max_fps=1000.0)
    for count, (_t, frame) in enumerate(reader.frames()):
        if count >= frames:
            return
        yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def run_pipeline(label: str, frames: Iterator[np.ndarray], classifier: EmotionClassifier, detect_every: int,
                 params: DetectorParams) -> RunResult:
    pipeline = FramePipeline(HaarFaceDetector(params), classifier, FaceTracker(), detect_every=detect_every)
    aggregator = SessionAggregator()
    times: list[float] = []
    faces = 0
    stage_sum = dict.fromkeys(STAGES, 0.0)
    for i, frame in enumerate(frames):
        now = i / 15.0  # a 15 fps camera
        before = pipeline.stats()
        start = time.perf_counter()
        _annotated, observed = pipeline.process(frame, now)
        aggregator.add(now, observed)
        elapsed = time.perf_counter() - start
        if i < WARMUP_FRAMES:
            continue
        after = pipeline.stats()
        for stage in STAGES:  # this frame's stage time, recovered from the running means
            stage_sum[stage] += after.mean_ms[stage] * after.frames - before.mean_ms[stage] * before.frames
        times.append(elapsed)
        faces += len(observed)
    n = len(times)
    if n == 0:
        return RunResult(label, 0, 0.0, 0.0)
    return RunResult(
        label, n, n / sum(times), _p95_ms(times), {s: v / n for s, v in stage_sum.items()}, faces / n,
    )


def run_naive(label: str, frames: Iterator[np.ndarray], model: Any) -> RunResult:
    """The seed: Haar at full resolution, then one Keras `predict` call per face."""
    cascade = cv2.CascadeClassifier(str(cascade_path()))
    times: list[float] = []
    detect_ms: list[float] = []
    faces = 0
    for i, frame in enumerate(frames):
        start = time.perf_counter()
        gray = to_gray(frame)
        boxes = cascade.detectMultiScale(gray, scaleFactor=NAIVE_SCALE_FACTOR, minNeighbors=NAIVE_MIN_NEIGHBORS,
                                         minSize=(NAIVE_MIN_SIZE, NAIVE_MIN_SIZE))
        detected = time.perf_counter()
        for box in boxes:
            face = crop_faces(gray, [tuple(int(v) for v in box)])
            model.predict(face, verbose=0)
        elapsed = time.perf_counter() - start
        if i < WARMUP_FRAMES:  # the same frames as ours are timed; the first predict builds the graph
            continue
        times.append(elapsed)
        detect_ms.append(1000 * (detected - start))
        faces += len(boxes)
    n = len(times)
    if n == 0:
        return RunResult(label, 0, 0.0, 0.0)
    detect = statistics.fmean(detect_ms)
    return RunResult(label, n, n / sum(times), _p95_ms(times),
                     {"detect": detect, "classify": 1000 * sum(times) / n - detect}, faces / n)


def _p95_ms(times: Sequence[float]) -> float:
    return 1000 * float(np.percentile(times, 95))


def time_classifier(classifier: EmotionClassifier, batches: Sequence[int] = BATCHES,
                    budget_s: float = 3.0) -> dict[int, float]:
    """Median ms per face at each batch size (random faces; speed does not depend on pixels)."""
    rng = np.random.default_rng(0)
    out: dict[int, float] = {}
    for batch in batches:
        faces = rng.integers(0, 256, (batch, FACE_SIZE, FACE_SIZE, 1)).astype(np.float32)
        for _ in range(2):
            classifier.predict(faces)  # warm-up: tracing, tensor allocation
        samples: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < 50):
            start = time.perf_counter()
            classifier.predict(faces)
            samples.append(time.perf_counter() - start)
        out[batch] = 1000 * statistics.median(samples) / batch
    return out


def available_backends(model: Path, wanted: str) -> list[str]:
    if model.is_file():
        found = ["litert"] if model.suffix == ".tflite" else ["keras"]
    else:
        found = [b for b, f in (("keras", KERAS_FILE), ("litert", TFLITE_FILE)) if (model / f).is_file()]
    if wanted in ("all", "auto"):
        return found if wanted == "all" else found[-1:]  # auto prefers litert, like load_classifier
    return [wanted] if wanted in found else []


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _table(rows: list[RunResult], baseline: RunResult | None = None) -> str:
    head = "| run | frames | analysed fps | mean ms/frame | p95 ms/frame | " + \
        " | ".join(f"{s} ms" for s in STAGES) + " | faces/frame |" + (" speed-up |" if baseline else "")
    sep = "|---" * (6 + len(STAGES) + (1 if baseline else 0)) + "|"
    lines = [head, sep]
    for r in rows:
        stages = " | ".join(f"{r.stage_ms.get(s, float('nan')):.1f}" for s in STAGES)
        ratio = f" {r.fps / baseline.fps:.1f}x |" if baseline and baseline.fps else ""
        mean = 1000 / r.fps if r.fps else float("nan")
        lines.append(f"| {r.label} | {r.frames} | {r.fps:.1f} | {mean:.0f} | {r.ms_p95:.0f} | {stages} | "
                     f"{r.faces_per_frame:.1f} |{ratio}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory or file (default: the active model)")
    parser.add_argument("--backend", choices=("auto", "keras", "litert", "all"), default="all")
    parser.add_argument("--video", type=Path, help="use this video's frames instead of the photo clip")
    parser.add_argument("--photos", type=Path, default=DEFAULT_DATASET, help="group photos folder")
    parser.add_argument("--frames", type=int, default=40, help="frames per end-to-end run")
    parser.add_argument("--naive-frames", type=int, default=6)
    parser.add_argument("--no-naive", action="store_true", help="skip the (slow) seed baseline")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    settings = get_settings()
    model = (args.model or ModelRegistry.from_settings(settings).active().path).expanduser()
    if not model.exists():
        print(f"error: model not found: {model} (pass --model PATH)", file=sys.stderr)
        return 2
    try:
        photos = [i.path for i in load_ground_truth(args.photos)]
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bald = args.photos / "bald_guys.jpg"
    params = DetectorParams.from_settings(settings)
    load1, load5, _ = os.getloadavg()
    print(f"# ClassMood benchmark\n\nmodel {model}; OpenCV {cv2.__version__}; {os.cpu_count()} cores; "
          f"load average {load1:.1f}/{load5:.1f} (1/5 min); detector {params}; detect_every "
          f"{settings.detect_every}\n")
    if load1 > (os.cpu_count() or 1) * 0.5:
        print("> The machine is busy: absolute figures are pessimistic; ratios within this run still hold.\n")
    report: dict[str, Any] = {"model": str(model), "load_average": [load1, load5]}

    backends = available_backends(model, args.backend)
    if not backends:
        print(f"error: no {args.backend} model file in {model}", file=sys.stderr)
        return 2
    classifiers: dict[str, EmotionClassifier] = {}
    print("## Classifier: ms per face\n\n| backend | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---" * (len(BATCHES) + 1) + "|")
    for backend in backends:
        try:
            classifiers[backend] = load_classifier(model, backend)
        except (ModelError, ValueError, ImportError) as exc:
            print(f"| {backend} | cannot load: {exc} |")
            continue
        per_face = time_classifier(classifiers[backend])
        report.setdefault("ms_per_face", {})[backend] = per_face
        print(f"| {backend} | " + " | ".join(f"{per_face[b]:.2f}" for b in BATCHES) + " |", flush=True)
    if not classifiers:
        return 1
    backend = "litert" if "litert" in classifiers else next(iter(classifiers))
    classifier = classifiers[backend]

    def clip(size: tuple[int, int], frames: int) -> Iterator[np.ndarray]:
        return video_clip(args.video, size, frames) if args.video else pan_zoom_clip(photos, size, frames)

    rows: list[RunResult] = []
    bald_frame = None
    if bald.is_file():
        bald_frame = cv2.resize(cv2.imread(str(bald)), (1280, 720), interpolation=cv2.INTER_AREA)
    print(f"\n## End to end ({backend} classifier; clip: {args.video or 'pan/zoom over the group photos'})\n")
    for size in RESOLUTIONS:
        for every in sorted({settings.detect_every, 1}, reverse=True):
            label = f"{size[0]}x{size[1]}, detect every {every}"
            rows.append(run_pipeline(label, clip(size, args.frames + WARMUP_FRAMES), classifier, every, params))
    if bald_frame is not None:
        for every in sorted({settings.detect_every, 1}, reverse=True):
            frames = (bald_frame for _ in range(max(10, args.frames // 2) + WARMUP_FRAMES))
            rows.append(run_pipeline(f"bald_guys 1280x720, detect every {every}", frames, classifier, every, params))

    print(_table(rows))
    report["runs"] = [r.__dict__ for r in rows]

    if not args.no_naive:
        keras_file = model if model.suffix == ".keras" else model / KERAS_FILE
        if not keras_file.is_file():
            print(f"\n(naive baseline skipped: it needs {KERAS_FILE})")
        else:
            from fer_core.model_io import load_keras_model

            keras_model = load_keras_model(keras_file)
            cases = [("1280x720 clip", lambda: clip((1280, 720), args.naive_frames + WARMUP_FRAMES))]
            if bald_frame is not None:
                n_bald = min(3, args.naive_frames) + WARMUP_FRAMES
                cases.append(("bald_guys 1280x720", lambda: (bald_frame for _ in range(n_bald))))
            print("\n## Naive seed baseline vs ours, on the same frames\n")
            print(f"Naive: Haar on the full frame (scaleFactor {NAIVE_SCALE_FACTOR}, minNeighbors "
                  f"{NAIVE_MIN_NEIGHBORS}, minSize {NAIVE_MIN_SIZE}) and one Keras `model.predict` per face.\n")
            for name, frames in cases:
                naive = run_naive(f"naive, {name}", frames(), keras_model)
                compared = [naive]
                for b_name, b_classifier in classifiers.items():
                    for every in sorted({settings.detect_every, 1}, reverse=True):
                        compared.append(run_pipeline(f"ours {b_name}, detect every {every}, {name}", frames(),
                                                     b_classifier, every, params))
                print(_table(compared, baseline=naive) + "\n", flush=True)
                report.setdefault("naive", []).append({
                    "case": name, "naive_fps": naive.fps,
                    "ours": {r.label: r.fps for r in compared[1:]},
                    "speedup": {r.label: (r.fps / naive.fps if naive.fps else None) for r in compared[1:]},
                })
    report["peak_rss_mb"] = peak_rss_mb()
    print(f"\nPeak resident memory: {report['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
