"""Glue for the Live page: opening a session, WebRTC configuration, upload checks.

No analysis here: it composes `fer_core`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pandas as pd

from fer_core.aggregate import LiveNow, NowFace
from fer_core.settings import Settings
from pages.formatting import format_epoch


def sensitivity_levels(settings: Settings) -> dict[str, int]:
    """Detector sensitivity shown to the instructor -> Haar min_neighbors (fewer = more sensitive).

    "normal" is the measured default; on the group photos neighbours 5 found 109/129 faces
    with 1 false box, 3 found 113 with 2, and 2 found 3 more faces for 4x the false boxes.
    """
    normal = settings.min_neighbors
    return {"low": normal + 2, "normal": normal, "high": max(1, normal - 1)}
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


def rtc_configuration(settings: Settings) -> dict[str, Any]:
    """ICE servers passed explicitly: an empty dict would fall back to Google's STUN server."""
    if settings.loopback_only:
        _use_loopback_ice()
    return {"iceServers": list(settings.ice_servers)}


def _use_loopback_ice() -> None:
    # Test-only: in a network namespace with only `lo`, aioice must offer 127.0.0.1.
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def open_live_session(settings: Settings, name: str, class_label: str, min_neighbors: int, smoothing: float):
    from fer_core.session import LiveSession

    return LiveSession.open(
        settings,
        name=name.strip() or "Live session",
        class_label=class_label.strip(),
        source="live",
        min_neighbors=min_neighbors,
        smoothing=smoothing,
    )


def face_rows(faces: Sequence[NowFace], in_view: Mapping[int, float] | None = None) -> pd.DataFrame:
    """Per-face table of "now": anonymous number, label with its confidence, seconds seen, time in view.

    `in_view`: track id -> seconds since it was first seen, for faces still in the newest frame.
    """
    in_view = in_view or {}
    return pd.DataFrame(
        {
            "Face #": [f.track_id for f in faces],
            "Expression": [f.label for f in faces],
            "Confidence": [f"{f.confidence:.0%}" for f in faces],
            "In view": [f"{in_view[f.track_id]:.0f} s" if f.track_id in in_view else "left" for f in faces],
        }
    )


def now_caption(now: LiveNow, tz: str = "UTC") -> str:
    """The page's statement of what "now" is, with the seconds it covers."""
    if now.t_start is None or now.t_end is None:
        return f"Figures cover the last {now.window_s} complete seconds; the first is not complete yet."
    start = format_epoch(now.t_start, tz).split(" ")[-1]
    end = format_epoch(now.t_end + 1, tz).split(" ")[-1]
    return (f"Every figure here and every label on the video covers the same last {now.window_s} complete "
            f"seconds ({start}–{end}): faces in view is the most faces in one analysed frame, the mood shares "
            "count each face in each analysed frame, and each face's label is its average over those seconds.")


def confidence_note(temperature: float, flip_average: bool = False) -> str:
    """What the Confidence column means for a model with this calibration temperature (1.0: none)."""
    meaning = (
        "calibrated on FER2013 validation faces: labels shown at 70% were right about 7 times in 10 there"
        if temperature != 1.0
        else "the model's raw probability (this model has no calibration, so it may be over- or under-confident)"
    )
    flipped = " Each face is read together with its mirror image and the two are averaged." * flip_average
    return (f"Confidence is how sure the model is of the expression label, {meaning}.{flipped} "
            "It is not a measure of how anyone feels.")


def check_upload(upload: Any, settings: Settings) -> str | None:
    """A clear message for an upload that must not be analysed, else None."""
    if upload is None:
        return "Choose a video file first."
    suffix = Path(upload.name).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        return f"{upload.name!s} is not a supported video type ({', '.join(sorted(VIDEO_SUFFIXES))})."
    if upload.size == 0:
        return f"{upload.name!s} is empty."
    if upload.size > settings.max_upload_mb * 1024 * 1024:
        return f"{upload.name!s} is {upload.size / 2**20:.0f} MB; the limit is {settings.max_upload_mb} MB."
    return None


def recording_date_problem(day: date | None, at: dt_time | None) -> str | None:
    """A recording date needs both parts (or neither: not known)."""
    if (day is None) != (at is None):
        return "Give both the date and the time the class was recorded, or leave both empty."
    return None


@dataclass
class RecordingResult:
    session_id: int | None
    seconds: int
    buckets: pd.DataFrame
    error: str | None = None
    origin: float = 0.0  # epoch second of the video's first frame in `buckets["t"]`


def analyse_upload(upload: Any, name: str, class_label: str, settings: Settings, progress_bar: Any,
                   recorded_at: datetime | None = None) -> RecordingResult:
    """Analyse an uploaded video into a session, straight from memory (never written to disk)."""
    from fer_core.analyze import InMemoryVideo, VideoError, analyze_video
    from fer_core.model_io import ModelError
    from fer_core.store import StoreError, store_for

    try:
        store = store_for(settings)
        session_id = analyze_video(
            InMemoryVideo(str(upload.name), upload.getbuffer()),
            store,
            settings=settings,
            session_name=name.strip() or Path(upload.name).stem,
            class_label=class_label.strip(),
            progress_callback=lambda done: progress_bar.progress(min(1.0, done), text=f"Analysing… {done:.0%}"),
            recorded_at=recorded_at,
        )
        buckets = store.session_buckets(session_id)
        origin = math.floor(store.get_session(session_id)["started_at"].timestamp())
        return RecordingResult(session_id, len(buckets), buckets, origin=float(origin))
    except VideoError as exc:
        return RecordingResult(None, 0, pd.DataFrame(), f"Cannot analyse {upload.name!s}: {exc.reason}.")
    except ModelError as exc:
        return RecordingResult(None, 0, pd.DataFrame(), f"The emotion model is not available: {exc}")
    except StoreError as exc:
        return RecordingResult(None, 0, pd.DataFrame(), f"The database is not available: {exc}")
