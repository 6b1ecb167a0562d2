"""The session report: one self-contained HTML file with everything an analyst needs, that prints."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fer_core.aggregate import AttentionEvent, Bucket, TrackSample
from fer_core.emotions import EMOTION_INDEX, EMOTIONS
from fer_core.store import Provenance, Store
from pages.history_views import load_session
from pages.report import build_report

T0 = 1_800_000_000
NAME = 'Week 3 <script>alert("x")</script> & co'


def seconds(labels: list[str], faces: int = 2) -> tuple[list[Bucket], list[TrackSample]]:
    buckets, samples = [], []
    for k, label in enumerate(labels):
        probs = np.full(len(EMOTIONS), 0.05)
        probs[EMOTION_INDEX[label]] = 0.7
        shares = np.zeros(len(EMOTIONS))
        shares[EMOTION_INDEX[label]] = 1.0
        buckets.append(Bucket(T0 + k, faces, 2, 2 * faces, tuple(probs), tuple(shares), label == "sad" and k > 25))
        samples += [TrackSample(T0 + k, track, tuple(probs), label, 0.7) for track in range(1, faces + 1)]
    return buckets, samples


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


def report_of(store: Store, source: str = "live", labels: list[str] | None = None) -> str:
    started = datetime.fromtimestamp(T0, UTC)
    sid = store.create_session(NAME, "7B <b>", source, started_at=started,
                               recorded_at=datetime(2026, 10, 5, 9, 30, tzinfo=UTC) if source == "recording" else None,
                               provenance=Provenance("fer-inceptionv3", "ab" * 32, {"backend": "litert",
                                                                                  "detector_min_neighbors": 3}))
    buckets, samples = seconds(labels or ["happy"] * 18 + ["sad"] * 22)
    store.add_batch(sid, buckets, samples, [AttentionEvent(T0 + 26.0, T0 + 40.0, "most faces looked sad for 14 s")])
    store.add_marker(sid, T0 + 20, "quiz starts")
    store.close_session(sid, faces_seen=2, dominant_emotion="sad", frames_analysed=80,
                        ended_at=datetime.fromtimestamp(T0 + 40, UTC))
    row = store.list_sessions().iloc[0]
    return build_report(load_session(store, row), "UTC", generated_at=datetime(2026, 12, 4, 10, 0, tzinfo=UTC))


def test_the_report_is_self_contained_and_prints(store: Store) -> None:
    page = report_of(store)
    assert page.startswith("<!DOCTYPE html>")
    # Nothing to fetch and nothing to run: no script, no external source, link or import.
    assert not re.search(r"<script|<link|<iframe|\bsrc=|@import|url\(|https?://(?!www\.w3\.org/)", page, re.I)
    assert page.count("<svg") == 4  # timeline, faces, attention, distribution drawn inline
    assert "@media print" in page and "@page" in page


def test_the_report_holds_metadata_model_timeline_events_markers_and_tracks(store: Store) -> None:
    page = report_of(store)
    text = re.sub(r"<[^>]+>", " ", page)
    assert "7B &lt;b&gt;" in page and "fer-inceptionv3" in page and "ab" * 32 in page
    assert "neighbours 3" in text
    assert "Dominant mood" in text and "sad (55% of faces)" in text
    assert "most faces looked sad for 14 s" in text and "08:00:26" in text  # the event, on the clock
    assert "quiz starts" in text and page.count("quiz starts") >= 4  # in the table and on the three timelines
    assert re.search(r"#1\s+08:00:00\s+08:00:39\s+40\s+sad\s+41%", text)  # per-track summary
    assert "not fit for grading" in text


def test_user_text_is_escaped(store: Store) -> None:
    page = report_of(store)
    assert "<script>alert" not in page
    assert "Week 3 &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page


def test_a_recordings_report_is_in_video_time_and_dated(store: Store) -> None:
    page = report_of(store, "recording")
    text = re.sub(r"<[^>]+>", " ", page)
    assert "2026-10-05 09:30" in text and "video time" in text
    assert "0:00:26" in text and "Video time" in page  # events and the charts' axes


def test_no_faces_no_charts(store: Store) -> None:
    sid = store.create_session("Empty", "", "live", started_at=datetime.fromtimestamp(T0, UTC))
    store.add_batch(sid, [Bucket(T0 + k, 0, 2, 0, (float("nan"),) * 7, (0.0,) * 7, False) for k in range(5)])
    page = build_report(load_session(store, store.list_sessions().iloc[0]))
    assert "<svg" not in page and "No faces were seen" in page


def test_a_long_session_is_drawn_in_full(store: Store) -> None:
    # Two hours of seconds: more rows than Altair embeds by default (5,000), binned for drawing.
    page = report_of(store, labels=["happy"] * 3600 + ["sad"] * 3600)
    assert page.count("<svg") == 4
