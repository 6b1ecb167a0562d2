"""Soak and load benchmarks of the live path (numbers to read, not timed tests).

    python -m fer_core.soak soak [--class-minutes 60] [--fps 4]   # one long class, faster than real time
    python -m fer_core.soak load [--streams 4] [--seconds 30]      # several live sessions at once
    python -m fer_core.soak writers --streams 100 --database-url postgresql+psycopg://...   # the database side

`soak` replays real-face frames (a pan over the group photos) into one LiveSession
with simulated timestamps covering a whole class, and prints memory over time (it must
stay flat: every in-memory buffer is bounded) and the rows stored. `load` runs several
sessions in parallel threads, as several browser streams would, and prints each one's
analysed frames/s. `writers` leaves out the video: each simulated stream stores one
second of a class (a bucket and one sample per face) every second through its own
BackgroundWriter, as a live session does, and prints how far the database keeps up and
how many pooled connections the process used. `--database-url` points any of them at
a database (default: a temporary SQLite file).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

from fer_core.aggregate import Bucket, Drained, TrackSample
from fer_core.bench import pan_zoom_clip
from fer_core.emotions import EMOTIONS
from fer_core.registry import classifier_for
from fer_core.session import LiveSession
from fer_core.settings import PROJECT_ROOT, Settings
from fer_core.store import BackgroundWriter, Store

GROUP_PHOTOS = PROJECT_ROOT.parent / "shared" / "datasets" / "group-photos"
CLIP_FRAMES = 150  # decoded once, replayed in a loop: memory growth can't come from the source
FRAME_SIZE = (640, 480)
MEMORY_SAMPLES = 12


def real_face_frames(photos_dir: Path = GROUP_PHOTOS, count: int = CLIP_FRAMES) -> list[np.ndarray]:
    photos = sorted(p for p in photos_dir.glob("20*.jpg"))
    if not photos:
        raise SystemExit(f"error: no photos in {photos_dir}")
    return list(pan_zoom_clip(photos, FRAME_SIZE, count))


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def open_store(tmp: str, url: str | None, name: str, settings: Settings) -> Store:
    """The given database, else a new SQLite file in `tmp`."""
    return Store(url or f"sqlite:///{Path(tmp) / name}", pool_size=settings.db_pool_size,
                 max_overflow=settings.db_max_overflow)


def soak(class_minutes: float, fps: float, settings: Settings, backend: str, url: str | None = None) -> int:
    frames = real_face_frames()
    classifier = classifier_for(settings.model_copy(update={"classifier_backend": backend}))
    with tempfile.TemporaryDirectory(prefix="classmood-soak-") as tmp:
        store = open_store(tmp, url, "soak.db", settings)
        session = LiveSession(store, classifier, name="soak", source="live", settings=settings)
        total = int(class_minutes * 60 * fps)
        start_clock = time.time()
        t0 = time.monotonic()
        print(f"soak: {class_minutes:.0f} min of class at {fps:g} analysed frames/s = {total} frames")
        print(f"{'class time':>10} {'frames':>8} {'RSS MB':>8} {'wall s':>7}")
        every = max(1, total // MEMORY_SAMPLES)
        samples: list[float] = []
        for i in range(total):
            session.process_frame(frames[i % len(frames)], start_clock + i / fps)
            if i % every == 0 or i == total - 1:
                samples.append(rss_mb())
                print(f"{i / fps / 60:>8.1f} m {i:>8} {samples[-1]:>8.1f} {time.monotonic() - t0:>7.1f}", flush=True)
        summary = session.stop()
        rows = {
            "buckets": len(store.session_buckets(session.session_id)),
            "track samples": int(store.session_tracks(session.session_id)["seconds"].sum()),
            "events": len(store.session_events(session.session_id)),
        }
    half = len(samples) // 2
    growth = np.mean(samples[half:]) - np.mean(samples[1:half]) if half > 1 else float("nan")
    print(f"stored: {rows}; frames analysed {summary.frames_analysed}; peak faces {summary.faces_seen}")
    print(f"RSS first half {np.mean(samples[1:half]):.1f} MB, second half {np.mean(samples[half:]):.1f} MB, "
          f"growth {growth:+.1f} MB; wall time {time.monotonic() - t0:.0f} s "
          f"({class_minutes * 60 / (time.monotonic() - t0):.1f}x real time)")
    return 0


def load(streams: int, seconds: float, settings: Settings, backend: str, url: str | None = None) -> int:
    frames = real_face_frames()
    classifier = classifier_for(settings.model_copy(update={"classifier_backend": backend}))
    counts = [0] * streams
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="classmood-load-") as tmp:
        store = open_store(tmp, url, "load.db", settings)
        sessions = [
            LiveSession(store, classifier, name=f"stream {i + 1}", source="live", settings=settings)
            for i in range(streams)
        ]

        def run(index: int) -> None:
            i = index * 17  # streams start at different points of the clip
            while not stop.is_set():
                sessions[index].process_frame(frames[i % len(frames)], time.time())
                counts[index] += 1
                i += 1

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(streams)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        for session in sessions:
            session.stop()
        stored = [len(store.session_buckets(s.session_id)) for s in sessions]
    per_stream = [c / elapsed for c in counts]
    print(f"load: {streams} streams for {elapsed:.0f} s on {psutil.cpu_count()} cores, backend {classifier.backend}")
    for i, (fps, rows) in enumerate(zip(per_stream, stored, strict=True)):
        print(f"  stream {i + 1}: {fps:5.1f} analysed frames/s, {rows} buckets stored")
    print(f"  total {sum(per_stream):.1f} frames/s; mean per stream {np.mean(per_stream):.1f}")
    return 0


def one_second(t: int, faces: int) -> Drained:
    """What a live session drains for one second of a class with `faces` faces."""
    probs = tuple(0.7 if e == "happy" else 0.05 for e in EMOTIONS)
    shares = tuple(1.0 if e == "happy" else 0.0 for e in EMOTIONS)
    return Drained(buckets=(Bucket(t, faces, 4, 4 * faces, probs, shares, False),),
                   samples=tuple(TrackSample(t, track, probs, "happy", 0.7) for track in range(1, faces + 1)))


def writers(streams: int, seconds: float, faces: int, settings: Settings, url: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="classmood-writers-") as tmp:
        store = open_store(tmp, url, "writers.db", settings)
        session_ids = [store.create_session(f"writer {i + 1}", "soak writers") for i in range(streams)]
        pipes = [BackgroundWriter(store, flush_interval_s=settings.flush_interval_s) for _ in range(streams)]
        t0 = int(time.time())
        peak_connections = 0  # open in the pool: checked out plus idle
        behind: list[int] = []  # per second: stream-seconds submitted but not yet stored
        for k in range(int(seconds)):
            for session_id, pipe in zip(session_ids, pipes, strict=True):
                pipe.submit(session_id, one_second(t0 + k, faces))
            time.sleep(max(0.0, t0 + k + 1 - time.time()))
            pool = store.engine.pool
            peak_connections = max(peak_connections, pool.checkedout() + pool.checkedin())  # type: ignore[attr-defined]
            behind.append(sum(pipe.backlog for pipe in pipes))
        began_close = time.monotonic()
        for pipe in pipes:
            pipe.close()
        close_s = time.monotonic() - began_close
        stored = [len(store.session_buckets(sid)) for sid in session_ids]
        errors = {p.last_error for p in pipes if p.last_error}
        store.dispose()
    print(f"writers: {streams} streams x {faces} faces for {int(seconds)} s into {store.url_text}; "
          f"pool {settings.db_pool_size}+{settings.db_max_overflow}")
    print(f"  stored {sum(stored)} of {streams * int(seconds)} stream-seconds "
          f"({streams * (faces + 1)} rows/s); batches waiting at a second's end: "
          f"median {int(np.median(behind))}, max {max(behind)}; final flush {close_s:.1f} s")
    print(f"  connections open in the pool: max {peak_connections}; errors: {errors or 'none'}")
    return 0 if sum(stored) == streams * int(seconds) and not errors else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_core.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    soak_p = sub.add_parser("soak", help="one long class, faster than real time; memory over time")
    soak_p.add_argument("--class-minutes", type=float, default=60.0, help="simulated class length")
    soak_p.add_argument("--fps", type=float, default=4.0, help="analysed frames per simulated second")
    load_p = sub.add_parser("load", help="several live sessions at once; frames/s per stream")
    load_p.add_argument("--streams", type=int, default=4)
    load_p.add_argument("--seconds", type=float, default=30.0)
    writers_p = sub.add_parser("writers", help="many sessions' per-second writes, no video; database keeping up")
    writers_p.add_argument("--streams", type=int, default=50)
    writers_p.add_argument("--seconds", type=float, default=30.0)
    writers_p.add_argument("--faces", type=int, default=30, help="faces per class (track samples per second)")
    for p in (soak_p, load_p):
        p.add_argument("--backend", choices=("auto", "keras", "litert"), default="auto")
    for p in (soak_p, load_p, writers_p):
        p.add_argument("--database-url", help="store into this database (default: a temporary SQLite file)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "soak":
        return soak(args.class_minutes, args.fps, settings, args.backend, args.database_url)
    if args.command == "writers":
        return writers(args.streams, args.seconds, args.faces, settings, args.database_url)
    return load(args.streams, args.seconds, settings, args.backend, args.database_url)


if __name__ == "__main__":
    sys.exit(main())
