"""Store: editing sessions, deleting several, lesson markers, per-session figures for trends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_core.aggregate import AttentionEvent, Bucket
from fer_core.emotions import EMOTION_INDEX, EMOTIONS
from fer_core.store import SessionNotFound, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


def seconds_of(t0: int, labels: list[str | None], faces: int = 2) -> list[Bucket]:
    out = []
    for k, label in enumerate(labels):
        shares = np.zeros(len(EMOTIONS))
        if label:
            shares[EMOTION_INDEX[label]] = 1.0
        n = faces if label else 0
        out.append(Bucket(t0 + k, n, 2, 2 * n, (0.1,) * 7, tuple(shares), False))
    return out


def test_rename_reclass_and_redate_a_session(store: Store) -> None:
    sid = store.create_session("Week 3", "7B", "recording")
    when = datetime(2026, 10, 1, 8, 30, tzinfo=UTC)
    store.update_session(sid, name="  Week 3: fractions ", class_label="7C", recorded_at=when)
    row = store.get_session(sid)
    assert (row["name"], row["class_label"], row["recorded_at"]) == ("Week 3: fractions", "7C", when)
    store.update_session(sid, recorded_at=None)  # back to "date not known"
    assert store.get_session(sid)["recorded_at"] is None and store.get_session(sid)["name"] == "Week 3: fractions"
    with pytest.raises(ValueError, match="needs a name"):
        store.update_session(sid, name="   ")
    with pytest.raises(SessionNotFound):
        store.update_session(sid + 99, name="x")


def test_delete_several_sessions_with_everything_they_hold(store: Store) -> None:
    ids = [store.create_session(f"s{i}") for i in range(3)]
    for sid in ids:
        store.add_batch(sid, seconds_of(1_800_000_000, ["happy"] * 3))
        store.add_marker(sid, 1_800_000_001, "quiz")
    assert store.delete_sessions([ids[0], ids[2], 12345]) == 2
    assert store.list_sessions()["id"].tolist() == [ids[1]]
    assert store.session_buckets(ids[0]).empty and store.session_markers(ids[2]).empty
    assert len(store.session_buckets(ids[1])) == 3
    assert store.delete_sessions([]) == 0


def test_markers_are_kept_in_time_order_with_their_labels(store: Store) -> None:
    sid = store.create_session("Live")
    store.add_marker(sid, 1_800_000_030.5, "group work")
    store.add_marker(sid, 1_800_000_010.0, "  quiz\nstarts ")
    markers = store.session_markers(sid)
    assert markers.to_dict("records") == [{"t": 1_800_000_010.0, "label": "quiz starts"},
                                          {"t": 1_800_000_030.5, "label": "group work"}]
    with pytest.raises(ValueError, match="needs a label"):
        store.add_marker(sid, 1_800_000_040, "  ")
    with pytest.raises(SessionNotFound):
        store.add_marker(sid + 1, 1_800_000_040, "x")


def test_figures_per_session_match_the_detail_view(store: Store) -> None:
    from fer_core.aggregate import overall_distribution

    t0 = 1_800_000_000
    mixed = store.create_session("Mixed")
    store.add_batch(mixed, seconds_of(t0, ["happy"] * 6, faces=1) + seconds_of(t0 + 6, ["sad"] * 2, faces=4),
                    events=[AttentionEvent(t0 + 6.0, t0 + 8.0, "sad")])
    store.add_marker(mixed, t0 + 1, "start")
    nobody = store.create_session("Nobody")
    store.add_batch(nobody, seconds_of(t0, [None] * 3))
    never = store.create_session("No seconds")
    figures = store.session_figures().set_index("id")
    assert never not in figures.index  # nothing stored: no figures
    row = figures.loc[mixed]
    # Faces-weighted: 6 face-seconds happy, 8 sad -> sad dominates, as in the detail view's distribution.
    overall = overall_distribution(store.session_buckets(mixed))
    assert row["share_sad"] == pytest.approx(overall["sad"]) == pytest.approx(8 / 14)
    assert row["negative_share"] == pytest.approx(8 / 14)
    assert row["dominant"] == "sad" == overall.idxmax()
    assert (row["seconds"], row["attention_events"], row["markers"]) == (8, 1, 1)
    assert pd.isna(figures.loc[nobody, "dominant"]) and figures.loc[nobody, "negative_share"] == 0
    assert store.session_figures([nobody])["id"].tolist() == [nobody]


def test_editing_keeps_recording_dates_as_given(store: Store) -> None:
    sid = store.create_session("r", source="recording", started_at=datetime.now(UTC))
    store.update_session(sid, recorded_at=datetime.now(UTC) - timedelta(days=400))
    # Retention counts from when data was stored, not from when the class took place.
    assert store.purge_older_than(30) == 0
