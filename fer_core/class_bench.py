"""Capacity of one server for online classes: simulated students through the real per-student path.

    python -m fer_core.class_bench [--students 50] [--minutes 10] [--no-batching] [--database URL]
    python -m fer_core.class_bench --join CODE --database URL --students 3 --seconds 20   # join a class

Each simulated student is a thread, as each streamlit-webrtc stream is: it delivers webcam frames
(320x240, a real face cut from the annotated group photos, moving slightly) at --camera-fps, and its
`StudentStream` analyses at most --analysis-fps of them (Haar -> the shared classifier -> tracker ->
the class sums), exactly as a joined browser's frames are. A late student drops frames like
streamlit-webrtc's async processing does. The process's hub writes the class's seconds to the database;
a reader builds the instructor's class view every second, as the Live page does. Every camera frame is
VP8-encoded once up front and decoded in the student's thread as it arrives, as aiortc's receiver does
(--no-decode leaves that cost out).

It prints, for the run: each student's analysed frames/s (the target: every student >= 1 for the whole
run), the delay from a frame to the instructor's view (p50/p95), memory over time, CPU use, and the
shared classifier's batch sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import psutil

from fer_core.batching import BatchingClassifier
from fer_core.class_hub import ClassHub, StreamSettings, StudentStream
from fer_core.class_store import ClassInfo, ClassStore
from fer_core.class_view import read_class_view
from fer_core.classify import EmotionClassifier
from fer_core.detect import DetectorParams, HaarFaceDetector
from fer_core.detector_eval import DEFAULT_DATASET, load_ground_truth
from fer_core.join_code import normalise
from fer_core.preprocess import to_gray
from fer_core.registry import classifier_for
from fer_core.settings import Settings
from fer_core.store import Store

FRAME_SIZE = (320, 240)
FRAMES_PER_STUDENT = 24
MIN_FACE_PX = 40
MEMORY_EVERY_S = 10.0
VIEW_EVERY_S = 1.0


def student_faces(count: int, dataset: Path = DEFAULT_DATASET) -> list[list[np.ndarray]]:
    """`count` webcam-like clips of FRAMES_PER_STUDENT frames, each around one real annotated face
    (after all faces are used, students share them)."""
    faces: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for labelled in load_ground_truth(dataset):
        image = cv2.imread(str(labelled.path))
        if image is None:
            continue
        faces.extend((image, box) for box in labelled.boxes if min(box[2:]) >= MIN_FACE_PX)
    if not faces:
        raise SystemExit(f"error: no annotated faces of at least {MIN_FACE_PX} px in {dataset}")
    width, height = FRAME_SIZE
    detector = HaarFaceDetector(DetectorParams())
    clips: list[list[np.ndarray]] = []
    spare: list[list[np.ndarray]] = []  # turned heads Haar misses: used only when there are too few others
    for k in range(len(faces)):
        if len(clips) >= count:
            break
        image, (x, y, w, h) = faces[k]
        frames = []
        for i in range(FRAMES_PER_STUDENT):
            # A webcam view: the face a third of the frame high, drifting a little from frame to frame.
            side = h * 3.0
            cx = x + w / 2 + 0.08 * w * np.sin(2 * np.pi * (i / FRAMES_PER_STUDENT + k / 7))
            cy = y + h / 2 + 0.05 * h * np.cos(2 * np.pi * i / FRAMES_PER_STUDENT)
            half_w, half_h = side * width / height / 2, side / 2
            x0, y0 = int(max(0, cx - half_w)), int(max(0, cy - half_h))
            crop = image[y0 : int(cy + half_h), x0 : int(cx + half_w)]
            frames.append(cv2.resize(crop, FRAME_SIZE, interpolation=cv2.INTER_AREA))
        # A student faces their own webcam: keep the faces the detector finds, as a webcam would show them.
        (clips if detector.detect(to_gray(frames[0])) else spare).append(frames)
    clips.extend(spare[: count - len(clips)])
    return [clips[k % len(clips)] for k in range(count)]


@dataclass
class StudentLog:
    analysed_at: list[float] = field(default_factory=list)  # capture times of the frames analysed
    delivered: int = 0
    dropped: int = 0


class EncodedClip:
    """A student's clip as VP8 packets, decoded frame by frame as the server's WebRTC receiver does."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        import av

        encoder = av.CodecContext.create("libvpx", "w")
        encoder.width, encoder.height, encoder.pix_fmt = *FRAME_SIZE, "yuv420p"
        encoder.options = {"deadline": "realtime", "cpu-used": "8"}
        self.packets = []
        for frame in frames:
            self.packets.extend(encoder.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")
                                               .reformat(format="yuv420p")))
        self.packets.extend(encoder.encode(None))
        self.decoder = av.CodecContext.create("vp8", "r")
        self.position = 0

    def next_frame(self) -> np.ndarray | None:
        packet = self.packets[self.position % len(self.packets)]
        self.position += 1
        frames = self.decoder.decode(packet)
        return frames[-1].to_ndarray(format="bgr24") if frames else None


def drive_student(stream: StudentStream, frames: list[np.ndarray], camera_fps: float, until: float,
                  log: StudentLog, phase: float, clip: EncodedClip | None = None) -> None:
    """A browser's stream: a frame every 1/camera_fps; a late thread skips to the newest frame.

    With an encoded `clip`, every frame that arrives is VP8-decoded first (a WebRTC receiver decodes them
    all, analysed or not); only the processing skips frames."""
    period = 1.0 / camera_fps
    start = time.time() + phase * period
    index = 0
    while True:
        due = start + index * period
        if due >= until or stream.left:
            return
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        behind = int((time.time() - due) / period)
        if behind > 0:  # frames that arrived while we were busy: decoded, but only the newest is processed
            log.dropped += behind
            for _ in range(behind if clip is not None else 0):
                clip.next_frame()
            index += behind
            due = start + index * period
        frame = clip.next_frame() if clip is not None else frames[index % len(frames)]
        if frame is None:
            index += 1
            continue
        before = stream.frames_analysed
        stream.process(frame, due)
        log.delivered += 1
        if stream.frames_analysed > before:
            log.analysed_at.append(due)
        index += 1


@dataclass
class BenchResult:
    students: int
    seconds: float
    batching: bool
    decode: bool
    analysed_fps_min: float
    analysed_fps_median: float
    students_at_1fps: int
    delay_p50_s: float | None
    delay_p95_s: float | None
    rss_mb: list[float]
    cpu_cores_used: float
    faces_per_batch: float | None
    calls_per_batch: float | None
    frames_dropped: int
    seconds_written: int
    hub_error: str | None

    def table(self) -> str:
        rows = [
            ("students", f"{self.students}"),
            ("run", f"{self.seconds / 60:.1f} min"),
            ("cross-student batching", "on" if self.batching else "off"),
            ("VP8 decoding of every camera frame", "included" if self.decode else "not included"),
            ("analysed frames/s per student, min / median", f"{self.analysed_fps_min:.2f} / "
                                                             f"{self.analysed_fps_median:.2f}"),
            ("students at >= 1 analysed frame/s", f"{self.students_at_1fps} of {self.students}"),
            ("frame -> instructor view delay, p50 / p95", _seconds(self.delay_p50_s) + " / "
                                                            + _seconds(self.delay_p95_s)),
            ("memory (RSS), start / end / max", f"{self.rss_mb[0]:.0f} / {self.rss_mb[-1]:.0f} / "
                                                 f"{max(self.rss_mb):.0f} MB"),
            ("CPU used", f"{self.cpu_cores_used:.2f} cores"),
            ("faces per classifier call", "–" if self.faces_per_batch is None else f"{self.faces_per_batch:.1f}"),
            ("student frames per classifier call",
             "–" if self.calls_per_batch is None else f"{self.calls_per_batch:.1f}"),
            ("camera frames dropped (late)", f"{self.frames_dropped}"),
        ]
        return "| | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def run_students(hub: ClassHub, clips: list[list[np.ndarray]], seconds: float, camera_fps: float,
                 view_reader: ViewReader | None = None, decode: bool = True,
                 ) -> tuple[list[StudentLog], list[float], float]:
    """Join len(clips) students to `hub` and stream for `seconds`; returns logs, RSS samples and CPU cores used."""
    encoded = [EncodedClip(c) if decode else None for c in clips]  # before the clock starts
    streams = [hub.join(f"bench-student-{id(hub)}-{k}") for k in range(len(clips))]
    logs = [StudentLog() for _ in streams]
    until = time.time() + seconds
    process = psutil.Process()
    cpu_start, wall_start = process.cpu_times(), time.monotonic()
    threads = [threading.Thread(target=drive_student, args=(s, c, camera_fps, until, log, k / len(clips), e),
                                daemon=True)
               for k, (s, c, log, e) in enumerate(zip(streams, clips, logs, encoded, strict=True))]
    for thread in threads:
        thread.start()
    if view_reader is not None:
        view_reader.start()
    rss = [process.memory_info().rss / 2**20]
    while time.time() < until:
        time.sleep(min(MEMORY_EVERY_S, max(0.0, until - time.time())))
        rss.append(process.memory_info().rss / 2**20)
    for thread in threads:
        thread.join(30)
    cpu_end = process.cpu_times()
    cores = ((cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)) / (time.monotonic() - wall_start)
    for stream in streams:
        stream.leave()
    return logs, rss, cores


class ViewReader(threading.Thread):
    """The instructor's page: reads the class view every second and notes when each second first shows."""

    def __init__(self, class_store: ClassStore, class_id: int, settings: Settings, until: float) -> None:
        super().__init__(daemon=True)
        self.class_store, self.class_id, self.settings, self.until = class_store, class_id, settings, until
        self.first_seen: dict[int, float] = {}
        self.errors = 0

    def run(self) -> None:
        while time.time() < self.until + 6:
            try:
                view = read_class_view(self.class_store, self.class_id, window_s=30,
                                       negative_share=self.settings.attention_negative_share,
                                       attention_seconds=self.settings.attention_seconds,
                                       member_timeout_s=self.settings.class_member_timeout_s)
                now = time.time()
                for t in view.buckets["t"]:
                    self.first_seen.setdefault(int(t), now)
            except Exception:  # a busy database: the next read counts the delay
                self.errors += 1
            time.sleep(VIEW_EVERY_S)


def frame_delays(logs: list[StudentLog], first_seen: dict[int, float]) -> list[float]:
    return [first_seen[int(np.floor(c))] - c for log in logs for c in log.analysed_at if int(np.floor(c)) in first_seen]


def make_hub(class_store: ClassStore, info: ClassInfo, classifier: EmotionClassifier, settings: Settings,
             analysis_fps: float) -> ClassHub:
    return ClassHub(class_store, info, classifier,
                    StreamSettings.from_settings(settings, analysis_fps),
                    flush_interval_s=settings.flush_interval_s, member_timeout_s=settings.class_member_timeout_s)


def bench(students: int, seconds: float, batching: bool, database: str, settings: Settings,
          camera_fps: float, analysis_fps: float, decode: bool = True) -> BenchResult:
    clips = student_faces(students)
    model = classifier_for(settings)
    classifier: EmotionClassifier = BatchingClassifier(model, settings.class_batch_window_ms) if batching else model
    class_store = ClassStore(Store(database))
    info = class_store.open_class("capacity benchmark", "bench", min_students=min(5, students),
                                  max_students=students, code_ttl_s=3600.0)
    hub = make_hub(class_store, info, classifier, settings, analysis_fps)
    reader = ViewReader(class_store, info.id, settings, time.time() + seconds)
    logs, rss, cores = run_students(hub, clips, seconds, camera_fps, reader, decode)
    reader.join(15)
    hub.close()
    fps = [len(log.analysed_at) / seconds for log in logs]
    delays = frame_delays(logs, reader.first_seen)
    stats = classifier.stats() if isinstance(classifier, BatchingClassifier) else None
    if isinstance(classifier, BatchingClassifier):
        classifier.close()
    return BenchResult(
        students=students, seconds=seconds, batching=batching, decode=decode,
        analysed_fps_min=min(fps), analysed_fps_median=statistics.median(fps),
        students_at_1fps=sum(f >= 1.0 for f in fps),
        delay_p50_s=float(np.percentile(delays, 50)) if delays else None,
        delay_p95_s=float(np.percentile(delays, 95)) if delays else None,
        rss_mb=rss, cpu_cores_used=cores,
        faces_per_batch=stats.mean_faces_per_batch if stats else None,
        calls_per_batch=stats.mean_requests_per_batch if stats else None,
        frames_dropped=sum(log.dropped for log in logs), seconds_written=hub.seconds_written,
        hub_error=hub.last_error,
    )


def join_existing(code: str, students: int, seconds: float, database: str, settings: Settings,
                  camera_fps: float, analysis_fps: float) -> int:
    """This process as one more server of a running class: its students stream for `seconds`."""
    class_store = ClassStore(Store(database))
    info = class_store.find_class(normalise(code))
    if info is None:
        raise SystemExit(f"error: no class has the code {code}")
    model = classifier_for(settings)
    hub = make_hub(class_store, info, BatchingClassifier(model, settings.class_batch_window_ms), settings,
                   analysis_fps)
    logs, _, _ = run_students(hub, student_faces(students), seconds, camera_fps)
    hub.close()
    print(json.dumps({"students": students, "analysed": [len(log.analysed_at) for log in logs],
                      "seconds_written": hub.seconds_written, "error": hub.last_error}), flush=True)
    return 0 if hub.last_error is None else 1


def decode_check(frames: int = 200) -> str:
    """What WebRTC's VP8 decoding of student frames costs here (PyAV; the bench feeds decoded frames)."""
    import av

    clip = student_faces(1)[0]
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = *FRAME_SIZE, "yuv420p"
    packets = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(clip[i % len(clip)], format="bgr24").reformat(format="yuv420p")
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    decoder = av.CodecContext.create("vp8", "r")
    start = time.perf_counter()
    decoded = 0
    for packet in packets:
        for frame in decoder.decode(packet):
            frame.to_ndarray(format="bgr24")
            decoded += 1
    ms = 1000 * (time.perf_counter() - start) / max(1, decoded)
    return f"VP8 decode + BGR conversion of a {FRAME_SIZE[0]}x{FRAME_SIZE[1]} frame: {ms:.2f} ms ({decoded} frames)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_core.class_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, help="run length in seconds (overrides --minutes)")
    parser.add_argument("--no-batching", action="store_true", help="one classifier call per student frame")
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--camera-fps", type=float, help="frames each student's camera sends (default: settings)")
    parser.add_argument("--analysis-fps", type=float, help="analysed frames/s per student (default: settings)")
    parser.add_argument("--join", metavar="CODE", help="join this running class as another server process")
    parser.add_argument("--no-decode", action="store_true", help="feed decoded frames (leave WebRTC's decoding out)")
    parser.add_argument("--decode-check", action="store_true", help="also time VP8 decoding of one student frame")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.students < 1:
        parser.error("--students must be at least 1")
    settings = Settings()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60.0
    camera_fps = args.camera_fps or float(settings.class_video_fps)
    analysis_fps = args.analysis_fps or settings.class_analysis_fps
    with tempfile.TemporaryDirectory(prefix="classmood-class-bench-") as tmp:
        database = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        if args.join:
            return join_existing(args.join, args.students, seconds, database, settings, camera_fps, analysis_fps)
        print(f"{args.students} simulated students, {seconds / 60:.1f} min, camera {camera_fps:g} frames/s, "
              f"analysis {analysis_fps:g} frames/s each, batching {'off' if args.no_batching else 'on'} ...",
              flush=True)
        result = bench(args.students, seconds, not args.no_batching, database, settings, camera_fps, analysis_fps,
                       decode=not args.no_decode)
    print(result.table())
    if result.hub_error:
        print(f"database problem during the run: {result.hub_error}")
    if args.decode_check:
        print(decode_check())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
