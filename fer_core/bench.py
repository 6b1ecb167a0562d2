"""ClassMood's speed and the faces it finds, against `fer`'s detector settings on the same frames.

    python -m fer_core.bench [--model PATH] [--video PATH] [--photos DIR] [--frames 270] [--levers]
                             [--processes] [--naive] [--json out.json]

Prints (markdown):
- the classifier: ms per face at batch 1/8/32, each backend, LiteRT with 1 and 2 threads;
- against fer's settings (`fer_core.baseline`): analysed frames/s, frames with a face, faces found
  (and, on the photo clip, how many are real faces) for fer's detector settings (detection only:
  an upper bound of fer's own frames/s), ClassMood as configured, and ClassMood with a full scan on
  every frame (the pipeline before track-guided detection), on
  * the photo clip: 640x360, 30 fps, each group photo for `--per-photo` frames (1 s) while the
    view pans and zooms slowly, so faces move, enter and leave, and the scene cuts every second;
    the photos' annotated faces are mapped into every frame;
  * the same clip at 1280x720 (`--frames-hd` frames), and bald_guys.jpg at 1280x720 (~23 faces);
  * `--video`: a real video's frames at their own size;
  `--levers` adds the other settings measured for the README (pipelining, thread counts, coasting);
- `--processes`: `python -m fer_core.analyze` as a whole process at full frame rate (start-up
  included) against a process running fer's detector settings on every frame, on the photo clip
  written as a video (or `--video`), alternating, twice each;
- `--naive`: the seed's naive loop (full-resolution Haar at 1.1/5/30 px, one Keras `predict` per
  face) against ClassMood on the 1280x720 clip;
- peak resident memory of this process.

Every comparison runs its contenders frame by frame in turn in this one process, so a machine busy
with other work slows all of them alike: compare the ratios, not the absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_core.baseline import CAMERA_FPS, FerSettingsSide, PipelineSide, Side, Tally, compare
from fer_core.classify import EmotionClassifier, LiteRTClassifier, load_classifier
from fer_core.detect import FER_SETTINGS, DetectorParams, FaceBox, HaarFaceDetector, cascade_path
from fer_core.detector_eval import DEFAULT_DATASET, LabelledImage, load_ground_truth
from fer_core.emotions import FACE_SIZE
from fer_core.model_io import KERAS_FILE, TFLITE_FILE, ModelError
from fer_core.pipeline import STAGES, FramePipeline
from fer_core.preprocess import crop_faces, to_gray
from fer_core.registry import ModelRegistry
from fer_core.settings import Settings, get_settings
from fer_core.track import FaceTracker

BATCHES = (1, 8, 32)
CLIP_SIZE = (640, 360)
HD_SIZE = (1280, 720)
PER_PHOTO = 30  # frames each photo is shown: 1 s at 30 fps
NAIVE_SCALE_FACTOR = 1.1
NAIVE_MIN_NEIGHBORS = 5
NAIVE_MIN_SIZE = 30

Box = tuple[int, int, int, int]
Frames = Iterable[tuple[np.ndarray, Sequence[Box] | None]]


def pan_zoom_frames(images: Sequence[LabelledImage], size: tuple[int, int], frames: int,
                    per_photo: int | None = None) -> Iterator[tuple[np.ndarray, tuple[Box, ...]]]:
    """`frames` frames of `size` panning and zooming across the photos in turn (`per_photo` frames each,
    default: spread over all photos), with each photo's face boxes mapped into the frame (those at
    least 60% inside it). Generated lazily."""
    width, height = size
    loaded = [(cv2.imread(str(i.path)), i.boxes) for i in images]
    loaded = [(image, boxes) for image, boxes in loaded if image is not None]
    if not loaded:
        raise FileNotFoundError("no readable photos for the benchmark clip")
    per_photo = per_photo or max(1, frames // len(loaded))
    for n in range(frames):
        image, boxes = loaded[(n // per_photo) % len(loaded)]
        phase = (n % per_photo) / max(1, per_photo - 1)  # 0..1 within this photo
        ih, iw = image.shape[:2]
        zoom = 1.0 + 0.3 * phase  # zoom in by up to 30% ...
        ch = min(ih, round(iw * height / width)) / zoom  # ... on a window of the frame's aspect ratio
        cw = ch * width / height
        x0, y0 = int((iw - cw) * phase), int((ih - ch) / 2)  # ... while panning left to right
        crop = image[y0 : int(y0 + ch), x0 : int(x0 + cw)]
        sx, sy = width / crop.shape[1], height / crop.shape[0]
        truth = []
        for bx, by, bw, bh in boxes:
            fx0, fy0 = max(0.0, (bx - x0) * sx), max(0.0, (by - y0) * sy)
            fx1, fy1 = min(width, (bx + bw - x0) * sx), min(height, (by + bh - y0) * sy)
            if fx1 > fx0 and fy1 > fy0 and (fx1 - fx0) * (fy1 - fy0) >= 0.6 * bw * sx * bh * sy:
                truth.append((round(fx0), round(fy0), round(fx1 - fx0), round(fy1 - fy0)))
        yield cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR), tuple(truth)


def pan_zoom_clip(photos: Sequence[Path], size: tuple[int, int], frames: int) -> Iterator[np.ndarray]:
    """The frames of `pan_zoom_frames` for photos without ground truth."""
    for frame, _truth in pan_zoom_frames([LabelledImage(p, ()) for p in photos], size, frames):
        yield frame


def video_frames(path: Path, frames: int) -> Iterator[tuple[np.ndarray, None]]:
    """Up to `frames` frames of a video, every one, at its own size (no ground truth)."""
    from fer_core.analyze import VideoReader

    reader = VideoReader(path, max_fps=1000.0)
    for count, (_t, frame) in enumerate(reader.frames()):
        if count >= frames:
            return
        yield frame, None


def write_video(frames: Iterable[np.ndarray], out: Path, fps: float = CAMERA_FPS) -> Path:
    """Encode BGR frames as an H.264 .mp4 (for the whole-process comparison)."""
    import av

    with av.open(str(out), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=round(fps))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "20", "preset": "veryfast"}
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        if stream is not None:
            container.mux(stream.encode())
    return out


# --- contenders ------------------------------------------------------------------------------------


def pipeline_side(label: str, classifier: EmotionClassifier, params: DetectorParams, *, detect_every: int,
                  full_scan_every: int, pipelined: bool, cv_threads: int | None = None) -> PipelineSide:
    pipeline = FramePipeline(HaarFaceDetector(params), classifier, FaceTracker(), detect_every=detect_every,
                             full_scan_every=full_scan_every, pipelined=pipelined)
    side = PipelineSide(label, pipeline)
    side.cv_threads = cv_threads
    return side


def configured(settings: Settings) -> str:
    parts = [f"full scan every {settings.full_scan_every}" if settings.full_scan_every > 1 else "full scans"]
    if settings.detect_every > 1:
        parts.append(f"detect every {settings.detect_every}")
    parts.append("pipelined" if settings.pipelined else "one thread of stages")
    return ", ".join(parts)


def standard_sides(settings: Settings, classifier: EmotionClassifier, params: DetectorParams) -> list[Side]:
    """fer's settings, ClassMood as configured, and ClassMood scanning every frame whole."""
    return [
        FerSettingsSide("fer settings: full frame, scale 1.1, 5 neighbours, faces >= 50 px; detection only"),
        pipeline_side(f"ClassMood ({configured(settings)})", classifier, params, detect_every=settings.detect_every,
                      full_scan_every=settings.full_scan_every, pipelined=settings.pipelined),
        pipeline_side("ClassMood, full scan on every frame", classifier, params, detect_every=1, full_scan_every=1,
                      pipelined=False),
    ]


def lever_sides(settings: Settings, classifier: EmotionClassifier, one_thread: EmotionClassifier,
                params: DetectorParams) -> list[Side]:
    """The settings measured for the README, each changed on its own from the configured pipeline."""
    base = {"detect_every": settings.detect_every, "full_scan_every": settings.full_scan_every,
            "pipelined": settings.pipelined}
    sides = [
        pipeline_side("lever: " + ("not pipelined" if settings.pipelined else "pipelined"), classifier, params,
                      **(base | {"pipelined": not settings.pipelined})),
        pipeline_side("lever: OpenCV 1 thread", classifier, params, **base, cv_threads=1),
        pipeline_side("lever: OpenCV 1 thread, LiteRT 1 thread", one_thread, params, **base, cv_threads=1),
        pipeline_side("lever: pipelined, OpenCV 1 thread, LiteRT 1 thread", one_thread, params,
                      **(base | {"pipelined": True}), cv_threads=1),
        pipeline_side("lever: full scan every 5", classifier, params, **(base | {"full_scan_every": 5})),
        pipeline_side("lever: full scan every 20", classifier, params, **(base | {"full_scan_every": 20})),
        pipeline_side("lever: near search with the full scan's settings", classifier,
                      replace(params, region_margin=0.5, region_face_px=48, region_min_neighbors=None,
                              region_min_confidence=None), **base),
        pipeline_side("lever: coasting (detect every 2nd frame, full scans)", classifier, params, detect_every=2,
                      full_scan_every=1, pipelined=False),
    ]
    fer_one = FerSettingsSide("fer settings, OpenCV 1 thread")
    fer_one.cv_threads = 1
    return [*sides, fer_one]


class NaiveSide(Side):
    """The seed: Haar on the full-resolution frame (1.1, 5 neighbours, 30 px), one Keras `predict` per face."""

    def __init__(self, model: Any) -> None:
        super().__init__("naive seed loop (full-frame Haar, one Keras predict per face)")
        self.model = model
        self.cascade = cv2.CascadeClassifier(str(cascade_path()))

    def step(self, index: int, frame: np.ndarray) -> list[tuple[int, list[FaceBox]]]:
        gray = to_gray(frame)
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=NAIVE_SCALE_FACTOR, minNeighbors=NAIVE_MIN_NEIGHBORS,
                                              minSize=(NAIVE_MIN_SIZE, NAIVE_MIN_SIZE))
        for box in boxes:
            self.model.predict(crop_faces(gray, [tuple(int(v) for v in box)]), verbose=0)
        return [(index, [FaceBox(*(int(v) for v in box)) for box in boxes])]


# --- output ----------------------------------------------------------------------------------------------


def comparison_table(tallies: Sequence[Tally], sides: Sequence[Side]) -> str:
    """Markdown: one row per contender, speed relative to the first."""
    truth = any(t.truth for t in tallies)
    head = ("| run | analysed frames/s | vs row 1 | median / p95 ms per frame | frames with a face | faces found |"
            + (" real faces among them (precision) |" if truth else "") + " full scans | stage ms per frame |")
    lines = [head, "|---" * (8 + truth) + "|"]
    base = tallies[0].fps or float("nan")
    for tally, side in zip(tallies, sides, strict=True):
        stages = "-"
        if isinstance(side, PipelineSide):
            mean = side.pipeline.stats().mean_ms
            stages = ", ".join(f"{s} {mean[s]:.1f}" for s in STAGES)
        real = f" {tally.hits} of {tally.truth} ({tally.precision or 0:.2f}) |" if truth else ""
        full = "-" if tally.full_scans is None else f"{tally.full_scans}"
        lines.append(f"| {tally.label} | {tally.fps:.1f} | {tally.fps / base:.2f}x | {tally.ms_median:.0f} / "
                     f"{tally.ms_p95:.0f} | {tally.frames_with_face} of {tally.frames} | {tally.faces} |{real} "
                     f"{full} | {stages} |")
    return "\n".join(lines)


def run_case(title: str, frames: Frames, sides: list[Side], report: dict[str, Any]) -> list[Tally]:
    load = os.getloadavg()[0]
    print(f"\n### {title}\n", flush=True)
    tallies = compare(frames, sides)
    print(comparison_table(tallies, sides))
    print(f"\n(load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)", flush=True)
    report.setdefault("comparisons", []).append(
        {"case": title, "tallies": [asdict(t) | {"fps": t.fps} for t in tallies]})
    return tallies


# --- the classifier ----------------------------------------------------------------------------------------


def time_classifiers(classifiers: dict[str, EmotionClassifier], batches: Sequence[int] = BATCHES,
                     rounds: int = 8) -> dict[str, dict[int, float]]:
    """Median ms per face at each batch size, the classifiers taking turns (random faces: speed does not
    depend on pixels)."""
    rng = np.random.default_rng(0)
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in classifiers}
    inputs = {b: rng.integers(0, 256, (b, FACE_SIZE, FACE_SIZE, 1)).astype(np.float32) for b in batches}
    for classifier in classifiers.values():
        for faces in inputs.values():
            classifier.predict(faces)  # warm-up: tracing, tensor allocation
    for _ in range(rounds):
        for batch, faces in inputs.items():
            for name, classifier in classifiers.items():
                classifier.predict(faces)  # the batch size changed: the first call re-plans
                for _ in range(3):
                    start = time.perf_counter()
                    classifier.predict(faces)
                    samples[name][batch].append(time.perf_counter() - start)
    return {name: {b: 1000 * statistics.median(v) / b for b, v in per.items()} for name, per in samples.items()}


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


# --- whole processes ------------------------------------------------------------------------------------------


def fer_loop(video: Path) -> int:
    """A process doing what fer does per frame with its detector settings: decode every frame, detect."""
    from fer_core.analyze import VideoReader

    detector = HaarFaceDetector(FER_SETTINGS)
    frames = with_face = faces = 0
    for _t, frame in VideoReader(video, max_fps=1000.0).frames():
        found = detector.detect(frame)
        frames += 1
        with_face += int(bool(found))
        faces += len(found)
    print(json.dumps({"frames": frames, "frames_with_face": with_face, "faces": faces}))
    return 0


def time_processes(video: Path, rounds: int = 3) -> list[dict[str, Any]]:
    """Wall time of `fer_core.analyze` at full frame rate and of the fer-settings loop, alternating."""
    from fer_core.analyze import probe_video

    info = probe_video(video)
    rate = info.fps or CAMERA_FPS
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="classmood-bench-") as tmp:
        commands = {
            "fer settings loop (decode + detect every frame)": [sys.executable, "-m", "fer_core.bench",
                                                                "--fer-loop", str(video)],
            "python -m fer_core.analyze (full frame rate)": [
                sys.executable, "-m", "fer_core.analyze", str(video), "--max-fps", f"{rate:g}",
                "--db", f"sqlite:///{Path(tmp) / 'bench.db'}", "--session-name", "bench"],
        }
        env = os.environ | {"CLASSMOOD_DATA_DIR": tmp}
        for _ in range(rounds):
            for label, command in commands.items():
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    raise RuntimeError(f"{label} failed: {done.stderr.strip()[-500:]}")
                results.append({"process": label, "seconds": seconds, "output": done.stdout.strip().splitlines()[-1]})
    return results


def print_processes(results: list[dict[str, Any]], frames: int) -> list[float]:
    """The table, and per round ClassMood's frames/s over the fer loop's run just before it."""
    print("| round | process | wall time, start-up included (s) | frames/s | analyze vs the fer loop |\n"
          "|---|---|---|---|---|")
    ratios = []
    for k in range(0, len(results) - 1, 2):
        fer, ours = results[k], results[k + 1]
        ratios.append(fer["seconds"] / ours["seconds"])
        for r in (fer, ours):
            ratio = f"{ratios[-1]:.2f}x" if r is ours else ""
            print(f"| {k // 2 + 1} | {r['process']} | {r['seconds']:.1f} | {frames / r['seconds']:.1f} | {ratio} |")
    if ratios:
        print(f"\nMedian over the rounds: analyze at {statistics.median(ratios):.2f}x the fer loop's frames/s.")
    return ratios


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory or file (default: the active model)")
    parser.add_argument("--backend", choices=("auto", "keras", "litert", "all"), default="all",
                        help="classifier backends to time (the comparisons use LiteRT when there is one)")
    parser.add_argument("--video", type=Path, help="also compare on this video (and use it for --processes)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_DATASET, help="group photos folder")
    parser.add_argument("--frames", type=int, default=270, help="frames of the 640x360 photo clip (and --video)")
    parser.add_argument("--per-photo", type=int, default=PER_PHOTO, help="frames each photo is shown")
    parser.add_argument("--frames-hd", type=int, default=90, help="frames of the 1280x720 clip and of bald_guys")
    parser.add_argument("--levers", action="store_true", help="also run each measured setting on its own")
    parser.add_argument("--processes", action="store_true", help="also time whole analyze processes")
    parser.add_argument("--naive", action="store_true", help="also run the seed's naive loop (slow)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--fer-loop", type=Path, help=argparse.SUPPRESS)  # the baseline process of --processes
    args = parser.parse_args(argv)
    if args.fer_loop:
        return fer_loop(args.fer_loop)

    settings = get_settings()
    model = (args.model or ModelRegistry.from_settings(settings).active().path).expanduser()
    if not model.exists():
        print(f"error: model not found: {model} (pass --model PATH)", file=sys.stderr)
        return 2
    try:
        images = load_ground_truth(args.photos)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = DetectorParams.from_settings(settings)
    load1, load5, _ = os.getloadavg()
    print(f"# ClassMood benchmark\n\nmodel {model}; OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads); "
          f"{os.cpu_count()} cores; load average {load1:.1f}/{load5:.1f} (1/5 min); detector {params}; "
          f"detect_every {settings.detect_every}, full_scan_every {settings.full_scan_every}, "
          f"pipelined {settings.pipelined}\n")
    if load1 > (os.cpu_count() or 1) * 0.5:
        print("> The machine is busy: absolute figures are pessimistic; ratios within this run still hold.\n")
    report: dict[str, Any] = {"model": str(model), "load_average": [load1, load5], "settings": {
        "detect_every": settings.detect_every, "full_scan_every": settings.full_scan_every,
        "pipelined": settings.pipelined}}

    backends = available_backends(model, args.backend)
    if not backends:
        print(f"error: no {args.backend} model file in {model}", file=sys.stderr)
        return 2
    classifiers: dict[str, EmotionClassifier] = {}
    for backend in backends:
        try:
            classifiers[backend] = load_classifier(model, backend)
            if backend == "litert":
                classifiers["litert, 1 thread"] = LiteRTClassifier(model, num_threads=1)
        except (ModelError, ValueError, ImportError) as exc:
            print(f"{backend}: cannot load: {exc}")
    if not classifiers:
        return 1
    print("## Classifier: ms per face (median; the classifiers take turns)\n")
    print("| backend | " + " | ".join(f"batch {b}" for b in BATCHES) + " |\n" + "|---" * (len(BATCHES) + 1) + "|")
    per_face = time_classifiers(classifiers)
    report["ms_per_face"] = per_face
    for name, row in per_face.items():
        print(f"| {name} | " + " | ".join(f"{row[b]:.2f}" for b in BATCHES) + " |", flush=True)
    classifier = classifiers.get("litert") or next(iter(classifiers.values()))
    one_thread = classifiers.get("litert, 1 thread", classifier)

    def sides() -> list[Side]:
        return standard_sides(settings, classifier, params) + (
            lever_sides(settings, classifier, one_thread, params) if args.levers else [])

    print("\n## Against fer's detector settings, on the same frames\n")
    print("fer's row is its detector alone (an upper bound of fer's frames/s: fer also runs its CNN on every "
          "face); ClassMood's rows are the whole pipeline (detection, classification, tracking, drawing). "
          "Faces found: found on that very frame; real faces: matching an annotated face (IoU >= 0.3).")
    run_case(f"Photo clip, {CLIP_SIZE[0]}x{CLIP_SIZE[1]}, {args.frames} frames ({args.per_photo} per photo)",
             pan_zoom_frames(images, CLIP_SIZE, args.frames, args.per_photo), sides(), report)
    if args.video:
        run_case(f"{args.video.name}, {args.frames} frames at its own size", video_frames(args.video, args.frames),
                 sides(), report)
    run_case(f"Photo clip, {HD_SIZE[0]}x{HD_SIZE[1]}, {args.frames_hd} frames",
             pan_zoom_frames(images, HD_SIZE, args.frames_hd, args.per_photo), standard_sides(
                 settings, classifier, params), report)
    bald = args.photos / "bald_guys.jpg"
    if bald.is_file():
        still = cv2.resize(cv2.imread(str(bald)), HD_SIZE, interpolation=cv2.INTER_AREA)
        run_case(f"bald_guys.jpg at {HD_SIZE[0]}x{HD_SIZE[1]} (a gallery of faces), {args.frames_hd} frames",
                 ((still, None) for _ in range(args.frames_hd)), standard_sides(settings, classifier, params), report)

    if args.processes:
        print("\n## Whole processes, start-up included\n")
        with tempfile.TemporaryDirectory(prefix="classmood-clip-") as tmp:
            video = args.video or write_video(
                (f for f, _ in pan_zoom_frames(images, CLIP_SIZE, args.frames, args.per_photo)), Path(tmp) / "clip.mp4")
            frames = args.frames if args.video is None else sum(1 for _ in video_frames(video, 10**9))
            print(f"Video: {video.name if args.video else 'the photo clip as H.264'}, {frames} frames.\n")
            results = time_processes(video)
            report["processes"] = {"runs": results, "ratios": print_processes(results, frames)}

    if args.naive:
        keras_file = model if model.suffix == ".keras" else model / KERAS_FILE
        if not keras_file.is_file():
            print(f"\n(naive baseline skipped: it needs {KERAS_FILE})")
        else:
            from fer_core.model_io import load_keras_model

            print("\n## The seed's naive loop\n")
            naive_sides: list[Side] = [NaiveSide(load_keras_model(keras_file)), *standard_sides(
                settings, classifier, params)[1:2]]
            run_case(f"Photo clip, {HD_SIZE[0]}x{HD_SIZE[1]}, 20 frames",
                     pan_zoom_frames(images, HD_SIZE, 20, args.per_photo), naive_sides, report)
    report["peak_rss_mb"] = peak_rss_mb()
    print(f"\nPeak resident memory: {report['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
