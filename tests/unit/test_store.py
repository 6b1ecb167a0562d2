"""Store and BackgroundWriter on SQLite files and a real PostgreSQL (tests parametrised by `backend`)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from fer_core.aggregate import AttentionEvent, Bucket, Drained, TrackSample
from fer_core.emotions import EMOTIONS
from fer_core.store import (
    BackgroundWriter,
    Maintenance,
    SessionNotFound,
    StepOutcome,
    Store,
    StoreError,
    run_maintenance,
)
from tests.store_faults import refuse

HAPPY = tuple(1.0 if e == "happy" else 0.0 for e in EMOTIONS)
SAD = tuple(1.0 if e == "sad" else 0.0 for e in EMOTIONS)


def bucket(t: int, faces: int = 2, probs: tuple[float, ...] = HAPPY, attention: bool = False) -> Bucket:
    return Bucket(t, faces, 3, faces * 3, probs, probs, attention)


def sample(t: int, track_id: int, probs: tuple[float, ...] = HAPPY) -> TrackSample:
    top = int(np.argmax(probs))
    return TrackSample(t, track_id, probs, EMOTIONS[top], probs[top])


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "classmood.db"


@pytest.fixture
def sqlite_store(db_path: Path) -> Store:
    store = Store(f"sqlite:///{db_path}")
    yield store
    store.dispose()


@pytest.fixture
def store(backend: str, database_url) -> Store:
    """A Store on a new database of each backend."""
    store = Store(database_url(backend))
    yield store
    store.dispose()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sqlite_file_and_its_folders_are_created(sqlite_store: Store, db_path: Path) -> None:
    assert db_path.is_file()


def test_round_trip(store: Store) -> None:
    sid = store.create_session("Period 3", "Biology 10B", "live")
    store.add_batch(
        sid,
        [bucket(1000, 2, HAPPY), bucket(1001, 3, SAD, attention=True)],
        [sample(1000, 1), sample(1000, 2), sample(1001, 1, SAD), sample(1001, 2, SAD), sample(1002, 2, SAD)],
        [AttentionEvent(995.0, None, "started")],
    )
    store.add_batch(sid, events=[AttentionEvent(995.0, 1002.0, "ended after 7 s")])  # same event, now closed
    store.close_session(sid, faces_seen=3, dominant_emotion="sad", frames_analysed=12)

    sessions = store.list_sessions()
    assert len(sessions) == 1
    row = sessions.iloc[0]
    assert (row["name"], row["class_label"], row["source"], row["status"]) == (
        "Period 3", "Biology 10B", "live", "completed"
    )
    assert (row["faces_seen"], row["dominant_emotion"], row["frames_analysed"]) == (3, "sad", 12)
    assert row["ended_at"] >= row["started_at"] and str(row["started_at"].tz) == "UTC"

    buckets = store.session_buckets(sid)
    assert buckets["t"].tolist() == [1000, 1001]
    assert buckets["faces"].tolist() == [2, 3]
    assert buckets["elapsed_s"].tolist() == [0, 1]
    assert buckets["p_happy"].tolist() == [1.0, 0.0] and buckets["share_sad"].tolist() == [0.0, 1.0]
    assert buckets["negative_share"].tolist() == [0.0, 1.0]
    assert buckets["needs_attention"].tolist() == [False, True]

    tracks = store.session_tracks(sid)
    assert tracks["track"].tolist() == [1, 2]
    assert tracks["seconds"].tolist() == [2, 3]
    # track 2: happy, sad, sad -> mean sad 2/3
    assert tracks["dominant_emotion"].tolist() == ["happy", "sad"]  # track 1 ties 0.5/0.5: first in EMOTIONS
    assert tracks["confidence"].tolist() == pytest.approx([0.5, 2 / 3])
    assert tracks["first_t"].tolist() == [1000, 1000] and tracks["last_t"].tolist() == [1001, 1002]

    events = store.session_events(sid)
    assert len(events) == 1  # upserted, not duplicated
    first = events.iloc[0]
    assert (first["t"], first["t_end"], first["reason"]) == (995.0, 1002.0, "ended after 7 s")


def test_bucket_without_faces_stores_null_means(store: Store) -> None:
    sid = store.create_session("empty room")
    store.add_batch(sid, [Bucket(5, 0, 2, 0, (float("nan"),) * 7, (0.0,) * 7, False)])
    buckets = store.session_buckets(sid)
    assert buckets["faces"].tolist() == [0] and buckets[["p_happy", "p_sad"]].isna().all().all()


def test_names_are_stored_exactly_as_given(store: Store) -> None:
    name = "Robert'); DROP TABLE sessions;-- <script>alert(1)</script> **bold** ü"
    sid = store.create_session(name, 'label "quoted"', "recording")
    row = store.list_sessions().iloc[0]
    assert (row["id"], row["name"], row["class_label"], row["source"]) == (sid, name, 'label "quoted"', "recording")


def test_delete_session_removes_everything(store: Store) -> None:
    keep = store.create_session("keep")
    gone = store.create_session("gone")
    for sid in (keep, gone):
        store.add_batch(sid, [bucket(1)], [sample(1, 1)], [AttentionEvent(1.0, 2.0, "x")])
    assert store.delete_session(gone) is True
    assert store.delete_session(gone) is False
    assert store.list_sessions()["id"].tolist() == [keep]
    assert store.session_buckets(gone).empty and store.session_tracks(gone).empty and store.session_events(gone).empty
    assert len(store.session_buckets(keep)) == 1 and len(store.session_events(keep)) == 1


def test_database_cascades_deletes_itself(store: Store) -> None:
    """ON DELETE CASCADE (on SQLite with foreign keys switched on): a bare DELETE of a session leaves no orphans."""
    sid = store.create_session("s")
    store.add_batch(sid, [bucket(1)], [sample(1, 1)], [AttentionEvent(1.0, None, "x")])
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM sessions WHERE id = :id"), {"id": sid})
    with store.engine.connect() as conn:
        counts = [conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in ("buckets", "track_samples",
                                                                                     "events")]
    assert counts == [0, 0, 0]


def test_writes_are_idempotent_so_a_retry_after_a_lost_commit_succeeds(store: Store) -> None:
    """A commit whose answer was lost with the connection is written again by the writer's retry."""
    sid = store.create_session("s")
    batch = ([bucket(1), bucket(2)], [sample(1, 1), sample(2, 1)], [AttentionEvent(1.0, None, "started")])
    store.add_batch(sid, *batch)
    store.add_batch(sid, *batch)  # the same seconds again: no duplicate-key error, no duplicate rows
    store.add_batch(sid, [bucket(3)], [sample(3, 1)], [AttentionEvent(1.0, 3.0, "ended")])
    assert store.session_buckets(sid)["t"].tolist() == [1, 2, 3]
    assert store.session_tracks(sid)["seconds"].tolist() == [3]
    events = store.session_events(sid)
    assert (len(events), events["t_end"].iloc[0], events["reason"].iloc[0]) == (1, 3.0, "ended")


def test_sqlite_runs_in_wal_mode(sqlite_store: Store) -> None:
    store = sqlite_store
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_purge_older_than(store: Store) -> None:
    now = datetime.now(UTC)
    old = store.create_session("old", started_at=now - timedelta(days=40))
    store.add_batch(old, [bucket(1)], [sample(1, 1)])
    store.close_session(old, ended_at=now - timedelta(days=40) + timedelta(hours=1))
    recent = store.create_session("recent", started_at=now - timedelta(days=2))
    store.close_session(recent, ended_at=now - timedelta(days=2))
    forgotten_open = store.create_session("never closed", started_at=now - timedelta(days=31))
    assert store.purge_older_than(30) == 2
    assert store.list_sessions()["id"].tolist() == [recent]
    assert store.session_buckets(old).empty
    assert forgotten_open not in store.list_sessions()["id"].tolist()
    assert store.purge_older_than(30) == 0


def test_missing_session_is_reported(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        store.add_batch(12345, [bucket(1)])
    with pytest.raises(SessionNotFound):
        store.close_session(12345)


def test_read_only_database_gives_store_error(sqlite_store: Store, db_path: Path) -> None:
    sqlite_store.create_session("existing")
    read_only = Store(f"sqlite:///file:{db_path}?mode=ro&uri=true")
    assert read_only.list_sessions()["name"].tolist() == ["existing"]  # reading still works
    with pytest.raises(StoreError, match="read-only"):
        read_only.create_session("new")
    with pytest.raises(StoreError, match="read-only"):
        read_only.purge_older_than(0)
    read_only.dispose()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_permissions_give_store_error(sqlite_store: Store, db_path: Path) -> None:
    sqlite_store.create_session("existing")
    sqlite_store.dispose()
    for path in db_path.parent.iterdir():
        path.chmod(0o444)
    db_path.parent.chmod(0o555)
    try:
        with pytest.raises(StoreError):
            Store(f"sqlite:///{db_path}").create_session("new")
    finally:
        db_path.parent.chmod(0o755)


def test_unreachable_database_gives_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create the database folder"):
        Store(f"sqlite:///{blocker / 'sub' / 'x.db'}")
    with pytest.raises(StoreError, match="cannot be opened"):
        Store(f"sqlite:///file:{tmp_path / 'missing.db'}?mode=ro&uri=true")
    with pytest.raises(StoreError, match="cannot be opened or reached") as info:
        Store("postgresql://user:s3cret@127.0.0.1:1/classmood")  # nothing listening there
    assert "s3cret" not in str(info.value)
    with pytest.raises(StoreError, match="SQLite or PostgreSQL, not mysql"):
        Store("mysql://user:s3cret@127.0.0.1:1/classmood")
    with pytest.raises(StoreError, match="not a database URL"):
        Store("::not a url::")


def test_in_memory_url_works_across_threads() -> None:
    store = Store("sqlite://")
    sid = store.create_session("mem")
    writer = BackgroundWriter(store, flush_interval_s=0.1)
    writer.submit(sid, Drained(buckets=(bucket(1),)))
    writer.close()
    assert store.session_buckets(sid)["t"].tolist() == [1]


# --- BackgroundWriter --------------------------------------------------------------------------


def test_writer_flushes_on_close(store: Store) -> None:
    sid = store.create_session("s")
    writer = BackgroundWriter(store, flush_interval_s=60.0)  # the interval never comes
    for t in range(5):
        assert writer.submit(sid, Drained(buckets=(bucket(t),), samples=(sample(t, 1),)))
    writer.close()
    writer.close()  # idempotent
    assert store.session_buckets(sid)["t"].tolist() == [0, 1, 2, 3, 4]
    assert store.session_tracks(sid)["seconds"].tolist() == [5]
    assert not writer.alive
    assert writer.submit(sid, Drained(buckets=(bucket(9),))) is False  # after close: dropped, not queued


def test_writer_flushes_on_its_interval_without_close(store: Store) -> None:
    sid = store.create_session("s")
    writer = BackgroundWriter(store, flush_interval_s=0.2)
    try:
        writer.submit(sid, Drained(buckets=(bucket(1),)))
        assert wait_until(lambda: len(store.session_buckets(sid)) == 1)
        writer.submit(sid, Drained(buckets=(bucket(2),)))
        assert wait_until(lambda: len(store.session_buckets(sid)) == 2)
        assert writer.flushes >= 2 and writer.last_error is None
    finally:
        writer.close()


def test_explicit_flush_waits_for_the_write(store: Store) -> None:
    sid = store.create_session("s")
    writer = BackgroundWriter(store, flush_interval_s=60.0)
    try:
        writer.submit(sid, Drained(buckets=(bucket(1),)))
        assert writer.flush() is True
        assert store.session_buckets(sid)["t"].tolist() == [1]
    finally:
        writer.close()


def test_two_sessions_never_mix(store: Store) -> None:
    a = store.create_session("A")
    b = store.create_session("B")
    writer = BackgroundWriter(store, flush_interval_s=0.05)
    for t in range(20):  # interleaved through one queue
        writer.submit(a, Drained(buckets=(bucket(t, faces=1),), samples=(sample(t, 1),)))
        writer.submit(b, Drained(buckets=(bucket(t, faces=7, probs=SAD),), samples=(sample(t, 1, SAD),)))
    writer.close()
    ba, bb = store.session_buckets(a), store.session_buckets(b)
    assert ba["faces"].tolist() == [1] * 20 and bb["faces"].tolist() == [7] * 20
    assert (ba["p_happy"] == 1.0).all() and (bb["p_sad"] == 1.0).all()
    assert store.session_tracks(a)["dominant_emotion"].tolist() == ["happy"]
    assert store.session_tracks(b)["dominant_emotion"].tolist() == ["sad"]


class BlockingStore:
    """add_batch blocks until released, fails `fail` times first; records what it was given."""

    def __init__(self, fail: int = 0, missing: bool = False) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.missing = missing
        self.calls: list[tuple[int, int]] = []

    def add_batch(self, session_id, buckets=(), samples=(), events=()) -> None:
        self.release.wait(10)
        if self.missing:
            raise SessionNotFound(f"session {session_id} does not exist")
        if self.fail:
            self.fail -= 1
            raise StoreError("cannot save session data: the database is busy")
        self.calls.append((session_id, len(buckets)))


def test_submit_never_blocks_and_counts_drops() -> None:
    slow = BlockingStore()
    writer = BackgroundWriter(slow, flush_interval_s=0.01, max_queue=3)  # type: ignore[arg-type]
    try:
        writer.submit(1, Drained(buckets=(bucket(0),)))
        assert wait_until(lambda: writer._queue.qsize() == 0)  # the thread took it and is stuck writing
        results = [writer.submit(1, Drained(buckets=(bucket(t),))) for t in range(1, 11)]
        assert results == [True] * 3 + [False] * 7
        assert writer.dropped == 7
    finally:
        slow.release.set()
        writer.close()
    assert sum(n for _, n in slow.calls) == 4


def test_failed_write_is_retried_and_error_reported() -> None:
    flaky = BlockingStore(fail=1)
    flaky.release.set()
    writer = BackgroundWriter(flaky, flush_interval_s=0.05)  # type: ignore[arg-type]
    try:
        writer.submit(7, Drained(buckets=(bucket(0), bucket(1))))
        assert wait_until(lambda: flaky.calls == [(7, 2)])
        assert writer.last_error is None and writer.dropped == 0
    finally:
        writer.close()


def test_batches_for_a_deleted_session_are_dropped() -> None:
    gone = BlockingStore(missing=True)
    gone.release.set()
    writer = BackgroundWriter(gone, flush_interval_s=0.05)  # type: ignore[arg-type]
    writer.submit(3, Drained(buckets=(bucket(0),)))
    writer.close()
    assert writer.dropped == 1 and "does not exist" in (writer.last_error or "")


def test_only_idle_live_sessions_are_marked_interrupted(store: Store) -> None:
    live_idle = store.create_session("idle", "", "live")
    live_busy = store.create_session("busy", "", "live")
    recording = store.create_session("rec", "", "recording")
    now = int(time.time())
    for session_id, t in ((live_idle, now - 1000), (live_busy, now - 2), (recording, now - 1000)):
        store.add_batch(session_id, [bucket(t)], [], [])
    assert store.close_stale_sessions(idle_s=300) == 1
    assert store.get_session(live_idle)["status"] == "interrupted"
    assert store.get_session(live_busy)["status"] == "running"
    assert store.get_session(recording)["status"] == "running"


# --- maintenance: each step on its own ------------------------------------------------------------


def stale_and_expired(store: Store) -> tuple[int, int]:
    """A live session whose process died an hour ago, and a session that ended 40 days ago."""
    now = datetime.now(UTC)
    dead = store.create_session("dead process", started_at=now - timedelta(hours=1))
    store.add_batch(dead, [bucket(int(now.timestamp()) - 3600)])
    expired = store.create_session("expired", started_at=now - timedelta(days=40))
    store.add_batch(expired, [bucket(1)], [sample(1, 1)])
    store.close_session(expired, ended_at=now - timedelta(days=40))
    return dead, expired


def test_maintenance_marks_and_purges(store: Store) -> None:
    dead, _ = stale_and_expired(store)
    done = run_maintenance(store, retention_days=30)
    assert done == Maintenance(interrupted=StepOutcome(1), purged=StepOutcome(1))
    assert store.list_sessions()["id"].tolist() == [dead]
    assert store.get_session(dead)["status"] == "interrupted"


def test_purge_runs_when_marking_interrupted_fails(store: Store) -> None:
    dead, _ = stale_and_expired(store)
    refuse(store.engine, "interrupted")
    done = run_maintenance(store, retention_days=30)
    assert done.interrupted.count == 0 and "refused by a test trigger" in (done.interrupted.error or "")
    assert done.purged == StepOutcome(1)  # the retention purge did not depend on the other step
    assert store.list_sessions()["id"].tolist() == [dead]
    assert store.get_session(dead)["status"] == "running"


def test_marking_interrupted_runs_when_the_purge_fails(store: Store) -> None:
    dead, expired = stale_and_expired(store)
    refuse(store.engine, "delete")
    done = run_maintenance(store, retention_days=30)
    assert done.interrupted == StepOutcome(1)
    assert done.purged.count == 0 and "refused by a test trigger" in (done.purged.error or "")
    assert sorted(store.list_sessions()["id"]) == sorted([dead, expired])
    assert len(store.session_buckets(expired)) == 1  # the failed purge rolled back whole
    assert store.get_session(dead)["status"] == "interrupted"
