"""What the History page and the session report show of stored sessions. Pure: frames in, frames and text out.

One session's figures come from one place (`SessionData` and `Store.session_figures`), so the
table, the detail view, Compare, the class trend and the report never disagree: the dominant mood
everywhere is the largest faces-weighted share (`aggregate.overall_distribution`).

Clocks: a live session's times are wall-clock times in the viewer's time zone; a recording's are
video time from its first frame (`charts.on_video_clock`), whatever date it was recorded on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from fer_core.aggregate import overall_distribution
from fer_core.emotions import EMOTIONS
from fer_core.store import Provenance, Store
from pages import charts
from pages.formatting import as_timestamp, format_duration, format_time

NO_CLASS = "(no class)"
SETTING_NAMES = {  # how the stored analysis settings read on the page, in this order
    "backend": "classifier",
    "temperature": "temperature",
    "flip_average": "flip-averaged",
    "detector_scale_factor": "scale factor",
    "detector_min_neighbors": "neighbours",
    "detector_min_face_fraction": "min face",
    "detector_min_confidence": "min level weight",
    "detector_detect_width": "detect width",
    "detector_equalize": "equalised",
    "detect_every": "detect every",
    "smoothing": "smoothing",
}


@dataclass(frozen=True)
class SessionData:
    """Everything stored about one session, read at once."""

    row: pd.Series
    buckets: pd.DataFrame
    tracks: pd.DataFrame
    events: pd.DataFrame
    markers: pd.DataFrame

    @property
    def session_id(self) -> int:
        return int(self.row["id"])

    @property
    def is_recording(self) -> bool:
        return self.row["source"] == "recording"

    @property
    def clock(self) -> charts.Clock:
        return "video" if self.is_recording else "wall"

    @property
    def origin(self) -> float:
        """Epoch second of video time 0:00 for a recording: the whole second its analysis started at
        (`fer_core.analyze` puts video second k into bucket origin + k)."""
        started = as_timestamp(self.row["started_at"])
        return float(math.floor(started.timestamp())) if started is not None else 0.0

    @property
    def provenance(self) -> Provenance | None:
        return Provenance.from_row(self.row.to_dict())

    @property
    def distribution(self) -> pd.Series:
        return overall_distribution(self.buckets)

    @property
    def faces_seen(self) -> bool:
        return bool(len(self.buckets)) and float(pd.to_numeric(self.buckets["faces"]).sum()) > 0

    @property
    def dominant(self) -> str | None:
        return str(self.distribution.idxmax()) if self.faces_seen else None

    def on_clock(self, frame: pd.DataFrame, columns: Sequence[str] = ("t",)) -> pd.DataFrame:
        """Times of `frame` as the charts draw this session (video time for recordings)."""
        return charts.on_video_clock(frame, self.origin, columns) if self.is_recording else frame


def load_session(store: Store, row: pd.Series) -> SessionData:
    session_id = int(row["id"])  # numpy ints would bind as blobs in SQLite and match nothing
    return SessionData(row, store.session_buckets(session_id), store.session_tracks(session_id),
                       store.session_events(session_id), store.session_markers(session_id))


# --- words and numbers -----------------------------------------------------------------------------


def clock_text(epoch: Any, data: SessionData, tz: str) -> str:
    """An epoch second of the session as the page says it: H:MM:SS of video, or HH:MM:SS local time."""
    if epoch is None or pd.isna(epoch):
        return "–"
    if data.is_recording:
        seconds = max(0, round(float(epoch) - data.origin))
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return pd.Timestamp(float(epoch), unit="s", tz="UTC").tz_convert(tz).strftime("%H:%M:%S")


def held_text(row: pd.Series, tz: str) -> str:
    """When the class took place; a recording whose date nobody gave says so."""
    if row["source"] == "recording" and pd.isna(row.get("recorded_at")):
        return "date not given"
    return format_time(row.get("held_at", row["started_at"]), tz)


def duration_seconds(row: pd.Series) -> float | None:
    started, ended = as_timestamp(row["started_at"]), as_timestamp(row["ended_at"])
    return None if started is None or ended is None else (ended - started).total_seconds()


def duration_text(row: pd.Series) -> str:
    seconds = duration_seconds(row)
    return str(row.get("status") or "running") if seconds is None else format_duration(seconds)


def short_duration(seconds: float | None) -> str:
    """A duration short enough for a metric: '45 s', '12 min', '1 h 05'."""
    if seconds is None or seconds < 0:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d}"


def model_text(provenance: Provenance | None) -> str:
    if provenance is None:
        return "not recorded (stored before ClassMood recorded it)"
    return f"{provenance.model_name or 'unnamed'} · {provenance.short_hash or 'no file hash'}"


def settings_text(provenance: Provenance | None) -> str:
    if provenance is None or not provenance.settings:
        return "not recorded"
    parts = []
    for key, name in SETTING_NAMES.items():
        if key in provenance.settings:
            value = provenance.settings[key]
            if key == "detector_min_face_fraction":
                value = f"{float(value):.0%}"
            elif isinstance(value, bool):
                value = "yes" if value else "no"
            parts.append(f"{name} {value}")
    text = ", ".join(parts)
    return text + " (changed while it ran; the last values)" if provenance.settings.get("changed_while_running") \
        else text


def same_model(a: SessionData, b: SessionData) -> bool | None:
    """None when either session did not record its model."""
    pa, pb = a.provenance, b.provenance
    if pa is None or pb is None:
        return None
    return pa.model_sha256 == pb.model_sha256


# --- tables ------------------------------------------------------------------------------------------


def sessions_view(sessions: pd.DataFrame, figures: pd.DataFrame, tz: str) -> pd.DataFrame:
    """The session list as analysts read it (user text stays plain cell text)."""
    dominant = sessions["id"].map(figures.set_index("id")["dominant"]) if len(figures) else None
    provenance = [Provenance.from_row(row.to_dict()) for _, row in sessions.iterrows()]
    return pd.DataFrame(
        {
            "Date": [held_text(row, tz) for _, row in sessions.iterrows()],
            "Name": sessions["name"].astype(str),
            "Class": sessions["class_label"].fillna("").astype(str),
            "Duration": [duration_text(row) for _, row in sessions.iterrows()],
            "Faces seen": sessions["faces_seen"].fillna(0).astype(int),
            "Dominant mood": (dominant if dominant is not None else pd.Series(index=sessions.index, dtype=object))
            .fillna("–").astype(str).tolist(),
            "Model": [p.model_name if p else "–" for p in provenance],
            "Source": sessions["source"].astype(str),
            "Status": sessions["status"].astype(str),
        }
    )


def tracks_view(data: SessionData, tz: str) -> pd.DataFrame:
    """Per anonymous track: when first seen, for how long, its dominant emotion and that emotion's mean probability."""
    tracks = data.tracks
    return pd.DataFrame(
        {
            "Track": [f"#{int(n)}" for n in tracks["track"]],
            "First seen": [clock_text(t, data, tz) for t in tracks["first_t"]],
            "Seconds in view": tracks["seconds"].astype(int),
            "Dominant emotion": tracks["dominant_emotion"].astype(str),
            "Confidence": (tracks["confidence"].astype(float) * 100).round().astype(int),
        }
    )


def events_view(data: SessionData, tz: str) -> pd.DataFrame:
    events = data.events
    return pd.DataFrame(
        {
            "From": [clock_text(t, data, tz) for t in events["t_start"]],
            "To": [clock_text(t, data, tz) if pd.notna(t) else "still open" for t in events["t_end"]],
            "Reason": events["reason"].astype(str),
        }
    )


def markers_view(data: SessionData, tz: str) -> pd.DataFrame:
    return pd.DataFrame({"At": [clock_text(t, data, tz) for t in data.markers["t"]],
                         "Marker": data.markers["label"].astype(str)})


# --- filters and trends -------------------------------------------------------------------------------


def class_options(sessions: pd.DataFrame) -> list[str]:
    labels = sessions["class_label"].fillna("").astype(str)
    return sorted({label or NO_CLASS for label in labels}, key=lambda x: (x == NO_CLASS, x.lower()))


def held_dates(sessions: pd.DataFrame, tz: str) -> pd.Series:
    return pd.to_datetime(sessions["held_at"], utc=True).dt.tz_convert(tz).dt.date


def filter_sessions(sessions: pd.DataFrame, classes: Sequence[str], dates: tuple[date, date] | None,
                    tz: str) -> pd.DataFrame:
    """Sessions of any of `classes` (all when empty) held within `dates` (inclusive, viewer's days)."""
    keep = pd.Series(True, index=sessions.index)
    if classes:
        labels = sessions["class_label"].fillna("").astype(str).replace("", NO_CLASS)
        keep &= labels.isin(list(classes))
    if dates is not None:
        days = held_dates(sessions, tz)
        keep &= (days >= dates[0]) & (days <= dates[1])
    return sessions[keep]


def trend_frame(sessions: pd.DataFrame, figures: pd.DataFrame) -> pd.DataFrame:
    """One row per session in date order: held_at, name, dominant, negative_share, attention_events, seconds."""
    merged = sessions[["id", "name", "held_at"]].merge(figures, on="id", how="left")
    merged["seconds"] = merged["seconds"].fillna(0).astype(int)
    merged["attention_events"] = merged["attention_events"].fillna(0).astype(int)
    merged["negative_share"] = merged["negative_share"].astype(float)
    return merged.sort_values(["held_at", "id"]).reset_index(drop=True)


def comparison_table(a: SessionData, b: SessionData, names: tuple[str, str]) -> pd.DataFrame:
    """Side by side figures of two sessions with the difference (second minus first) where it is a number."""

    def figures(data: SessionData) -> dict[str, float | str | None]:
        distribution = data.distribution
        negative = float(np.average(pd.to_numeric(data.buckets["negative_share"]).fillna(0),
                                    weights=pd.to_numeric(data.buckets["faces"]).fillna(0))) if data.faces_seen else 0
        out: dict[str, float | str | None] = {
            "Duration (min)": (duration_seconds(data.row) or 0) / 60,
            "Faces seen (most at once)": float(data.row["faces_seen"] or 0),
            "Dominant mood": data.dominant or "–",
            "Negative share": negative,
            "Needs attention (times)": float((data.events["kind"] == "needs_attention").sum()),
            "Markers": float(len(data.markers)),
        }
        out.update({f"Share {e}": float(distribution[e]) for e in EMOTIONS})
        return out

    fa, fb = figures(a), figures(b)
    rows = []
    for key in fa:
        va, vb = fa[key], fb[key]
        numeric = isinstance(va, float) and isinstance(vb, float)
        rows.append({"Figure": key, names[0]: _figure_text(key, va), names[1]: _figure_text(key, vb),
                     "Difference": _difference_text(key, vb - va) if numeric else ("same" if va == vb else "differs")})
    return pd.DataFrame(rows)


def _figure_text(key: str, value: float | str | None) -> str:
    if not isinstance(value, float):
        return str(value)
    if key.startswith(("Share", "Negative")):
        return f"{value:.0%}"
    if key.startswith("Duration"):
        return f"{value:.1f}"
    return f"{value:.0f}"


def _difference_text(key: str, delta: float) -> str:
    if key.startswith(("Share", "Negative")):
        return f"{delta * 100:+.0f} points"
    if key.startswith("Duration"):
        return f"{delta:+.1f}"
    return f"{delta:+.0f}"


# --- export ----------------------------------------------------------------------------------------------


def export_frame(data: SessionData) -> pd.DataFrame:
    """The per-second table with the session's name, class, and its events and markers on their seconds."""
    frame = data.buckets.copy()
    frame.insert(0, "session_id", data.session_id)
    frame.insert(1, "session", str(data.row["name"]))
    frame.insert(2, "class", str(data.row["class_label"] or ""))
    frame["event"] = _labels_by_second(frame["t"], data.events["t_start"] if len(data.events) else [],
                                       data.events["reason"] if len(data.events) else [])
    frame["marker"] = _labels_by_second(frame["t"], data.markers["t"], data.markers["label"])
    frame.attrs["classmood_session"] = json.dumps(session_metadata(data), default=str)
    return frame


def _labels_by_second(seconds: pd.Series, times: Any, labels: Any) -> list[str]:
    by_second: dict[int, list[str]] = {}
    for t, label in zip(times, labels, strict=True):
        by_second.setdefault(int(np.floor(float(t))), []).append(str(label))
    return [" | ".join(by_second.get(int(t), [])) for t in seconds]


def session_metadata(data: SessionData) -> dict[str, Any]:
    row, provenance = data.row, data.provenance
    return {
        "id": data.session_id, "name": str(row["name"]), "class": str(row["class_label"] or ""),
        "source": str(row["source"]), "status": str(row["status"]),
        "started_at": str(row["started_at"]), "ended_at": str(row["ended_at"]),
        "recorded_at": None if pd.isna(row.get("recorded_at")) else str(row["recorded_at"]),
        "model_name": provenance.model_name if provenance else None,
        "model_sha256": provenance.model_sha256 if provenance else None,
        "analysis_settings": dict(provenance.settings) if provenance else None,
    }


def local_datetime(day: date, at: time, tz: str) -> datetime:
    """A date and time the viewer typed (their time zone) -> aware UTC datetime."""
    return datetime.combine(day, at, tzinfo=ZoneInfo(tz)).astimezone(ZoneInfo("UTC"))
