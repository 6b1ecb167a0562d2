"""Analyse a recorded class video into a stored session (source 'recording').

    python -m fer_core.analyze VIDEO [--session-name N] [--class-label L] [--out results.csv|.parquet]
                               [--backend auto|keras|litert] [--model PATH] [--max-fps 5] [--db URL]
                               [--recorded-at 2026-11-03T09:00]

Frames are decoded with PyAV and analysed at most `max_fps` times per second of
video (timestamps come from the video, so results do not depend on how fast this
machine is). Exit codes: 0 done, 2 the video cannot be read (one-line error), 1 any
other failure (model, database).

The Streamlit page calls `analyze_video()` directly.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np

from fer_core.classify import EmotionClassifier
from fer_core.model_io import ModelError
from fer_core.registry import classifier_for
from fer_core.session import LiveSession
from fer_core.settings import Settings, get_settings
from fer_core.store import Store, StoreError, store_for

log = logging.getLogger(__name__)

DEFAULT_MAX_FPS = 5.0
OUT_SUFFIXES = (".csv", ".parquet")
ProgressCallback = Callable[[float], None]  # fraction of the video done, 0..1


class VideoError(ValueError):
    """The file is not a readable video (missing, empty, not a video, truncated, no frames).

    `str()` names the file (for the CLI); `reason` does not (for a page that names it already).
    """

    def __init__(self, source: object, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float | None
    fps: float | None
    width: int
    height: int
    frames: int  # from the container header; 0 when unknown


@dataclass(frozen=True)
class AnalysisResult:
    session_id: int
    video_seconds: float
    frames_analysed: int
    complete: bool  # False: decoding stopped early (truncated file)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@dataclass(frozen=True)
class InMemoryVideo:
    """An uploaded video analysed straight from memory: it is never written to disk."""

    name: str
    data: bytes | memoryview

    def __str__(self) -> str:
        return self.name

    @property
    def stem(self) -> str:
        return Path(self.name).stem


VideoSource = Path | InMemoryVideo


def _open(source: VideoSource) -> av.container.InputContainer:
    if isinstance(source, InMemoryVideo):
        return av.open(io.BytesIO(source.data), mode="r")
    return av.open(str(source))


def probe_video(path: VideoSource) -> VideoInfo:
    """Open the container and check it has a video stream; VideoError otherwise."""
    if isinstance(path, InMemoryVideo):
        if len(path.data) == 0:
            raise VideoError(path, "the file is empty")
    elif not path.exists():
        raise VideoError(path, "no such file")
    elif path.is_dir():
        raise VideoError(path, "is a folder, not a video file")
    elif path.stat().st_size == 0:
        raise VideoError(path, "the file is empty")
    try:
        with _open(path) as container:
            if not container.streams.video:
                raise VideoError(path, "has no video stream")
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            fps = float(stream.average_rate) if stream.average_rate else None
            return VideoInfo(duration, fps, stream.codec_context.width, stream.codec_context.height,
                             int(stream.frames or 0))
    except av.FFmpegError as exc:
        raise VideoError(path, f"not a readable video ({_reason(exc)})") from exc


class VideoReader:
    """Decodes a video at most `max_fps` frames per video second; remembers how decoding went."""

    def __init__(self, path: VideoSource, max_fps: float = DEFAULT_MAX_FPS) -> None:
        if max_fps <= 0:
            raise ValueError("max_fps must be > 0")
        self.path = path
        self.step = 1.0 / max_fps
        self.decoded = 0  # every decoded frame, analysed or not
        self.yielded = 0
        self.last_time = 0.0  # of the last decoded frame, seconds from the first
        self.frame_duration: float | None = None
        self.error: str | None = None  # why decoding stopped early, if it did

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """(seconds from the first frame, BGR frame). VideoError if not a single frame decodes."""
        try:
            with _open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame-threaded decoding
                rate = float(stream.average_rate) if stream.average_rate else None
                self.frame_duration = 1.0 / rate if rate else None
                first: float | None = None
                next_t = 0.0
                for frame in container.decode(stream):
                    t = frame.time if frame.time is not None else self.decoded * (self.frame_duration or 0.04)
                    first = t if first is None else first
                    rel = t - first
                    self.decoded += 1
                    self.last_time = max(self.last_time, rel)
                    if rel + 1e-6 < next_t:
                        continue  # decoded but never converted: the conversion is the cost
                    next_t = max(next_t + self.step, rel + self.step / 2)  # keep the cadence after gaps
                    self.yielded += 1
                    yield rel, frame.to_ndarray(format="bgr24")
        except av.FFmpegError as exc:
            if self.yielded == 0:
                raise VideoError(self.path, f"cannot decode the video ({_reason(exc)})") from exc
            self.error = _reason(exc)
            log.warning("%s: decoding stopped after %d frames: %s", self.path, self.decoded, self.error)
        if self.yielded == 0:
            raise VideoError(self.path, "no video frames could be decoded")

    @property
    def seconds(self) -> float:
        """Video time covered by the decoded frames."""
        return self.last_time + (self.frame_duration or self.step) if self.decoded else 0.0


def iter_frames(path: Path, max_fps: float = DEFAULT_MAX_FPS) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds from the first frame, BGR frame), at most `max_fps` per second of video."""
    yield from VideoReader(path, max_fps).frames()


def analyze_video(path: str | Path | InMemoryVideo, store: Store | None = None, **options: Any) -> int:
    """Analyse a video into a new 'recording' session and return its id (options: `analyze_video_result`)."""
    return analyze_video_result(path, store, **options).session_id


def analyze_video_result(
    path: str | Path | InMemoryVideo,
    store: Store | None = None,
    *,
    settings: Settings | None = None,
    session_name: str | None = None,
    class_label: str = "",
    classifier: EmotionClassifier | None = None,
    backend: str | None = None,
    model_path: Path | None = None,
    max_fps: float = DEFAULT_MAX_FPS,
    detect_every: int = 1,
    progress_callback: ProgressCallback | None = None,
    recorded_at: datetime | None = None,
) -> AnalysisResult:
    """Like `analyze_video`, with details. Raises VideoError (bad file; nothing stored) or StoreError.

    Recordings detect on every analysed frame by default (`detect_every=1`), scanning the whole
    frame as the `full_scan_every` setting says and searching near the tracked faces in between;
    no boxes are drawn. Bucket times are a whole-second epoch base plus
    video time, so bucket k holds video second k and `elapsed_s` in the store is video time.
    The session's `started_at` is that base (when it was analysed, which the retention limit counts
    from); `recorded_at` is when the class really took place, if the caller knows it.
    """
    path = path if isinstance(path, InMemoryVideo) else Path(path)
    if max_fps <= 0:
        raise ValueError("max_fps must be > 0")
    info = probe_video(path)  # before anything is created: a bad file leaves no trace
    settings = settings or get_settings()
    store = store or store_for(settings)
    if classifier is None:
        overrides = {"model_path": model_path, "classifier_backend": backend}
        classifier = classifier_for(settings.model_copy(update={k: v for k, v in overrides.items() if v}))
    base = float(math.floor(time.time()))
    started_at = datetime.fromtimestamp(base, UTC)
    session = LiveSession(
        store, classifier, name=session_name or path.stem, class_label=class_label, source="recording",
        settings=settings, detect_every=detect_every, started_at=started_at, recorded_at=recorded_at,
        annotate=False,
    )
    reader = VideoReader(path, max_fps)
    frames = 0
    try:
        for rel, frame in reader.frames():
            session.process_frame(frame, base + rel)
            frames += 1
            if progress_callback is not None and info.duration_s:
                progress_callback(min(1.0, rel / info.duration_s))
    except VideoError:
        session.stop(status="failed")
        store.delete_session(session.session_id)  # nothing was analysed: leave no empty session
        raise
    except BaseException:
        session.stop(status="failed")
        raise
    video_seconds = reader.seconds
    # A decode error, or fewer frames than the header promised, is a truncated file: keep what was read.
    complete = reader.error is None and (info.frames == 0 or reader.decoded >= 0.98 * info.frames - 1)
    session.stop(status="completed" if complete else "partial", ended_at=started_at + timedelta(seconds=video_seconds))
    if session.last_error:
        raise StoreError(session.last_error)
    if progress_callback is not None:
        progress_callback(1.0)
    return AnalysisResult(session.session_id, video_seconds, frames, complete)


def recording_time(text: str) -> datetime:
    """ISO date and time -> aware UTC datetime; without an offset it is this machine's local time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date and time: {text!r} (use e.g. 2026-11-03T09:00)") from None
    return (when if when.tzinfo else when.astimezone()).astimezone(UTC)


def write_table(frame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_core.analyze", description="Analyse a class video.")
    parser.add_argument("video", type=Path)
    parser.add_argument("--session-name", help="default: the file name")
    parser.add_argument("--class-label", default="")
    parser.add_argument("--out", type=Path, help="write the per-second table (.csv or .parquet)")
    parser.add_argument("--backend", choices=("auto", "keras", "litert"), default=None)
    parser.add_argument("--model", type=Path, help="model directory or file (default: the active model)")
    parser.add_argument("--max-fps", type=float, default=DEFAULT_MAX_FPS, help="analysed frames per video second")
    parser.add_argument("--db", help="SQLAlchemy URL (default: settings)")
    parser.add_argument("--recorded-at", type=recording_time, metavar="WHEN",
                        help="when the class was recorded, e.g. 2026-11-03T09:00 (this machine's time zone "
                             "unless it says +01:00 or Z); History dates and sorts the session by it")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix.lower() not in OUT_SUFFIXES:
        parser.error(f"--out must end in {' or '.join(OUT_SUFFIXES)}")
    if args.max_fps <= 0:
        parser.error("--max-fps must be > 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        info = probe_video(args.video)
    except VideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = get_settings()
    from tqdm import tqdm

    total = round(info.duration_s, 1) if info.duration_s else None
    with tqdm(total=total, unit="s", desc=args.video.name, bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s "
              "[{elapsed}<{remaining}]") as bar:

        def progress(fraction: float) -> None:
            if total:
                bar.n = round(fraction * total, 1)
                bar.refresh()

        try:
            store = Store(args.db) if args.db else store_for(settings)
            result = analyze_video_result(
                args.video, store, settings=settings, session_name=args.session_name, class_label=args.class_label,
                backend=args.backend, model_path=args.model, max_fps=args.max_fps, progress_callback=progress,
                recorded_at=args.recorded_at,
            )
        except VideoError as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (ModelError, StoreError, ValueError) as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 1

    buckets = store.session_buckets(result.session_id)
    row = store.get_session(result.session_id)
    events = store.session_events(result.session_id)
    if args.out is not None:
        write_table(buckets, args.out)
    flagged = int(buckets["needs_attention"].sum()) if len(buckets) else 0
    figures = store.session_figures([result.session_id])  # the dominant mood as History shows it
    dominant = figures["dominant"].iloc[0] if len(figures) and isinstance(figures["dominant"].iloc[0], str) else "-"
    print(
        f"Session {result.session_id} \"{row['name']}\": {result.video_seconds:.1f} s of video, "
        f"{result.frames_analysed} frames analysed, up to {row['faces_seen']} faces, "
        f"dominant mood {dominant}, {flagged} s flagged for attention "
        f"({len(events)} event(s)); stored in {store.url_text}."
    )
    if not result.complete:
        print(f"warning: the video ended early (truncated?): analysed {result.video_seconds:.1f} s of "
              f"{info.duration_s:.1f} s.", file=sys.stderr)
    if args.out is not None:
        print(f"Per-second table ({len(buckets)} rows): {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
