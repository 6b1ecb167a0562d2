"""Session storage (SQLAlchemy 2): a SQLite file under data_dir by default, or PostgreSQL.

Only numbers are stored: per-second buckets, per-track-per-second samples, and
needs-attention events. Never a frame or a face image. User-given names and labels
are stored as given through parameterised statements; the UI escapes them on display.

`BackgroundWriter` moves writes off the video thread: `submit()` never blocks and a
daemon thread flushes at least every `flush_interval_s`, so a crash loses about
two seconds (the open bucket plus one interval). While the database is unreachable (a
PostgreSQL restart, a lost network) the writer keeps the unwritten seconds and retries every
interval, for up to `max_retry_batches` batches (about ten minutes of a live session); every
write is idempotent, so a batch whose commit was lost with the connection is safely written again.

The schema comes from Alembic revisions (fer_core/schema.py, which says how to change it);
`Store()` brings its database up to date when it opens. Operators:
`python -m fer_core.store current` and `python -m fer_core.store upgrade`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from fer_core import schema
from fer_core.aggregate import (
    ATTENTION_KIND,
    PROB_COLUMNS,
    SHARE_COLUMNS,
    AttentionEvent,
    Bucket,
    Drained,
    TrackSample,
)
from fer_core.emotions import EMOTIONS, NEGATIVE_EMOTIONS
from fer_core.settings import Settings, get_settings

log = logging.getLogger(__name__)

# class: an online class, its students' streams handled by any number of server processes (fer_core.class_store).
Source = Literal["live", "recording", "class"]
SOURCES: tuple[str, ...] = ("live", "recording", "class")
STATUSES: tuple[str, ...] = ("running", "completed", "partial", "failed", "interrupted")
# A live session with no new second stored for this long lost its process (crash, kill, power).
STALE_LIVE_SESSION_S = 300.0
NAME_MAX = 200
BACKENDS = ("sqlite", "postgresql")
# Per process (app server): connections kept open, and how many more a burst may open.
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
# Seconds to wait for a PostgreSQL server that does not answer (libpq waits forever by default).
CONNECT_TIMEOUT_S = 10


SettingValue = float | int | str | bool | None


@dataclass(frozen=True)
class Provenance:
    """Which model and which settings produced a session's figures (shown in History, compared in Compare)."""

    model_name: str  # the model directory's name, e.g. fer-inceptionv3
    model_sha256: str  # of the model file that was loaded: the same name can hold other weights
    settings: Mapping[str, SettingValue]  # detector, tracker and classifier settings as used

    @property
    def short_hash(self) -> str:
        return self.model_sha256[:12]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Provenance | None:
        """From a `sessions` row; None for sessions stored before ClassMood recorded it."""
        if not row.get("model_sha256"):
            return None
        try:
            settings = json.loads(row.get("analysis_settings") or "{}")
        except ValueError:
            settings = {}
        return cls(str(row.get("model_name") or ""), str(row["model_sha256"]),
                   settings if isinstance(settings, dict) else {})


class _Unset:
    """A keyword left out (None is a value: "no recording date")."""


UNSET = _Unset()


class StoreError(RuntimeError):
    """The database cannot be reached, opened, written or read; the message says which and why."""


class SessionNotFound(StoreError):
    """The session does not exist (never created, or deleted meanwhile)."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend (SQLite drops tzinfo)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# The model of the schema. Databases get it through the Alembic revisions in fer_core/migrations,
# never through create_all; to change it, see fer_core/schema.py (a test keeps both in step).
metadata = MetaData()

sessions_table = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME_MAX), nullable=False),
    Column("class_label", String(NAME_MAX), nullable=False, default=""),
    Column("source", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False, index=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("faces_seen", Integer, nullable=False, default=0),
    Column("dominant_emotion", String(16), nullable=True),
    Column("frames_analysed", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False, default="running"),
    # Issue 28 (additive, all nullable): a recording's real date and time, and what produced the figures.
    Column("recorded_at", UTCDateTime, nullable=True),
    Column("model_name", String(NAME_MAX), nullable=True),
    Column("model_sha256", String(64), nullable=True),
    Column("analysis_settings", Text, nullable=True),  # JSON: detector and tracker settings as used
    CheckConstraint(f"source IN {SOURCES!r}", name="ck_sessions_source"),
    CheckConstraint(f"status IN {STATUSES!r}", name="ck_sessions_status"),
)


def _session_fk() -> Column[int]:
    return Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)


buckets_table = Table(
    "buckets",
    metadata,
    _session_fk(),
    Column("t", BigInteger, primary_key=True),  # epoch second
    Column("faces", Integer, nullable=False),
    *[Column(c, Float, nullable=True) for c in PROB_COLUMNS],  # NULL: no face that second
    *[Column(c, Float, nullable=False) for c in SHARE_COLUMNS],
    Column("needs_attention", Boolean, nullable=False, default=False),
    Column("students", Integer, nullable=True),  # online classes: students connected that second
)

track_samples_table = Table(
    "track_samples",
    metadata,
    _session_fk(),
    Column("t", BigInteger, primary_key=True),
    Column("track_id", Integer, primary_key=True),
    Column("label", String(16), nullable=False),
    Column("confidence", Float, nullable=False),
    *[Column(c, Float, nullable=False) for c in PROB_COLUMNS],
)

events_table = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("t_start", Float, nullable=False),
    Column("t_end", Float, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("session_id", "kind", "t_start", name="uq_events_start"),
)

# Lesson markers the instructor drops during a session ("quiz starts").
markers_table = Table(
    "markers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("t", Float, nullable=False),  # epoch s, on the session's own clock
    Column("label", String(NAME_MAX), nullable=False),
)

_CHILD_TABLES = (buckets_table, track_samples_table, events_table, markers_table)


def _sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL (plain or `file:` URI form); None for in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite: cascades need it
        cursor.execute("PRAGMA busy_timeout=10000")
        with contextlib.suppress(Exception):
            # WAL lets the UI read while the writer writes; a read-only file cannot switch, which is fine.
            cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _explain(exc: BaseException, url_text: str, action: str) -> str:
    """A one-line, human message; never the SQL text or a password."""
    orig = getattr(exc, "orig", None) or exc
    detail = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    lowered = detail.lower()
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return f"cannot {action}: the database {url_text} is read-only ({detail})"
    unreachable = ("unable to open", "could not connect", "connection refused", "could not translate host name",
                   "resolve host", "timeout expired", "server closed the connection", "connection is lost")
    if any(words in lowered for words in unreachable):
        return f"cannot {action}: the database {url_text} cannot be opened or reached ({detail})"
    if "locked" in lowered or "busy" in lowered:
        return f"cannot {action}: the database {url_text} is busy ({detail})"
    return f"cannot {action} in {url_text}: {type(orig).__name__}: {detail}"


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _normalise_url(url: URL) -> URL:
    """`postgresql://` and `postgres://` without a driver mean psycopg 3, the driver ClassMood installs."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


class Store:
    """Thread-safe: the engine pools connections and every method runs its own transaction.

    Opening a Store brings the database's schema up to date (`upgrade=False`: leave it as it is,
    for `python -m fer_core.store current`). `pool_size` and `max_overflow` size the connection
    pool of a PostgreSQL store: this process holds at most their sum of connections.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        upgrade: bool = True,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
    ) -> None:
        if url is None:
            url = get_settings().db_url
        try:
            self.url = _normalise_url(make_url(url))
        except ArgumentError as exc:
            raise StoreError(f"not a database URL: {exc}") from exc
        path = _sqlite_file(self.url)
        # For messages: never the password; a SQLite file by its path, readably.
        self.url_text = f"SQLite file {path}" if path else self.url.render_as_string(hide_password=True)
        backend = self.url.get_backend_name()
        if backend not in BACKENDS:
            raise StoreError(f"{self.url_text}: ClassMood stores sessions in SQLite or PostgreSQL, not {backend}")
        # Pre-ping: a connection the server dropped (restart, idle timeout) is replaced, not handed out.
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if backend == "sqlite":
            if path is None:
                # One shared connection, or each pooled connection would see its own empty database.
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif "mode=ro" not in str(self.url):
                try:
                    path.expanduser().parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the database folder {path.parent}: {exc}") from exc
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow)
            if "connect_timeout" not in self.url.query:
                kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            raise StoreError(f"no database driver for {self.url_text}: {exc}") from exc
        if backend == "sqlite":
            event.listen(self.engine, "connect", _on_sqlite_connect)
        if upgrade:
            self.upgrade_schema()

    def schema_state(self) -> schema.SchemaState:
        """The database's schema revision and the newest this code knows; only reads."""
        with self.guard("read the schema revision"):
            return schema.state(self.engine)

    def upgrade_schema(self) -> tuple[str | None, str]:
        """Bring the schema to the newest revision (safe with other processes doing the same)."""
        with self.guard("bring the database schema up to date"):
            return schema.upgrade(self.engine)

    def __repr__(self) -> str:
        return f"Store({self.url_text!r})"

    @contextlib.contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Turn database errors inside the block into a StoreError that says what could not be done."""
        try:
            yield
        except StoreError:
            raise
        except schema.SchemaError as exc:
            raise StoreError(f"cannot {action} in {self.url_text}: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(_explain(exc, self.url_text, action)) from exc
        except OSError as exc:
            raise StoreError(f"cannot {action}: {self.url_text}: {exc}") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    # --- sessions -------------------------------------------------------------------------
    def create_session(
        self, name: str, class_label: str = "", source: Source = "live", started_at: datetime | None = None,
        *, recorded_at: datetime | None = None, provenance: Provenance | None = None,
    ) -> int:
        """A new running session. `recorded_at`: a recording's real date and time, when known."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        values = {
            "name": str(name)[:NAME_MAX],
            "class_label": str(class_label or "")[:NAME_MAX],
            "source": source,
            "started_at": started_at or datetime.now(UTC),
            "status": "running",
            "faces_seen": 0,
            "frames_analysed": 0,
            "recorded_at": recorded_at,
        }
        if provenance is not None:
            values.update(model_name=provenance.model_name[:NAME_MAX], model_sha256=provenance.model_sha256,
                          analysis_settings=json.dumps(dict(provenance.settings), sort_keys=True))
        with self.guard("create a session"), self.engine.begin() as conn:
            result = conn.execute(insert(sessions_table).values(**values))
            return int(result.inserted_primary_key[0])

    def close_session(
        self,
        session_id: int,
        *,
        faces_seen: int = 0,
        dominant_emotion: str | None = None,
        frames_analysed: int = 0,
        status: str = "completed",
        ended_at: datetime | None = None,
    ) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if dominant_emotion is not None and dominant_emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion {dominant_emotion!r}")
        values = {
            "ended_at": ended_at or datetime.now(UTC),
            "faces_seen": int(faces_seen),
            "dominant_emotion": dominant_emotion,
            "frames_analysed": int(frames_analysed),
            "status": status,
        }
        with self.guard("close a session"), self.engine.begin() as conn:
            result = conn.execute(update(sessions_table).where(sessions_table.c.id == session_id).values(**values))
            if result.rowcount == 0:
                raise SessionNotFound(f"session {session_id} does not exist")

    def add_batch(
        self,
        session_id: int,
        buckets: Sequence[Bucket] = (),
        samples: Sequence[TrackSample] = (),
        events: Sequence[AttentionEvent] = (),
    ) -> None:
        """Write one drain's worth in one transaction; events upsert on (kind, t_start)."""
        if not (buckets or samples or events):
            return
        with self.guard("save session data"), self.engine.begin() as conn:
            self.write_batch(conn, session_id, Drained(tuple(buckets), tuple(samples), tuple(events)))

    def write_batch(self, conn: Connection, session_id: int, data: Drained) -> None:
        """`add_batch` inside the caller's transaction `conn`."""
        buckets, samples, events = data.buckets, data.samples, data.events
        bucket_rows = [
            {
                "session_id": session_id,
                "t": int(b.t),
                "faces": int(b.faces),
                "needs_attention": bool(b.needs_attention),
                "students": b.students,
                **{c: _finite(v) for c, v in zip(PROB_COLUMNS, b.mean_probs, strict=True)},
                **{c: float(v) for c, v in zip(SHARE_COLUMNS, b.shares, strict=True)},
            }
            for b in buckets
        ]
        sample_rows = [
            {
                "session_id": session_id,
                "t": int(s.t),
                "track_id": int(s.track_id),
                "label": s.label,
                "confidence": float(s.confidence),
                **{c: float(v) for c, v in zip(PROB_COLUMNS, s.probs, strict=True)},
            }
            for s in samples
        ]
        event_rows = [
            {"session_id": session_id, "t_start": ev.t_start, "t_end": ev.t_end, "kind": ev.kind, "reason": ev.reason}
            for ev in events
        ]
        if conn.execute(select(sessions_table.c.id).where(sessions_table.c.id == session_id)).first() is None:
            raise SessionNotFound(f"session {session_id} does not exist (deleted while running?)")
        # Idempotent: a retry after a commit whose answer was lost (connection dropped) rewrites
        # the same seconds instead of failing on their keys for ever.
        if bucket_rows:
            conn.execute(_upsert(conn, buckets_table).on_conflict_do_nothing(), bucket_rows)
        if sample_rows:
            conn.execute(_upsert(conn, track_samples_table).on_conflict_do_nothing(), sample_rows)
        if event_rows:
            statement = _upsert(conn, events_table)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["session_id", "kind", "t_start"],  # uq_events_start
                    set_={"t_end": statement.excluded.t_end, "reason": statement.excluded.reason},
                ),
                event_rows,
            )

    def record_settings(self, session_id: int, settings: Mapping[str, SettingValue]) -> None:
        """Replace a session's analysis settings (they changed while it ran)."""
        with self.guard("save the session's settings"), self.engine.begin() as conn:
            conn.execute(update(sessions_table).where(sessions_table.c.id == session_id)
                         .values(analysis_settings=json.dumps(dict(settings), sort_keys=True)))

    def update_session(
        self, session_id: int, *, name: str | None = None, class_label: str | None = None,
        recorded_at: datetime | _Unset | None = UNSET,
    ) -> None:
        """Rename a session, change its class, or set (None: clear) its recording date."""
        values: dict[str, Any] = {}
        if name is not None:
            if not name.strip():
                raise ValueError("a session needs a name")
            values["name"] = name.strip()[:NAME_MAX]
        if class_label is not None:
            values["class_label"] = class_label.strip()[:NAME_MAX]
        if not isinstance(recorded_at, _Unset):
            values["recorded_at"] = recorded_at
        if not values:
            return
        with self.guard("change a session"), self.engine.begin() as conn:
            result = conn.execute(update(sessions_table).where(sessions_table.c.id == session_id).values(**values))
            if result.rowcount == 0:
                raise SessionNotFound(f"session {session_id} does not exist")

    def add_marker(self, session_id: int, t: float, label: str) -> None:
        """A lesson marker at epoch second `t` of the session ("quiz starts")."""
        label = " ".join(str(label).split())[:NAME_MAX]
        if not label:
            raise ValueError("a marker needs a label")
        with self.guard("save a marker"), self.engine.begin() as conn:
            if conn.execute(select(sessions_table.c.id).where(sessions_table.c.id == session_id)).first() is None:
                raise SessionNotFound(f"session {session_id} does not exist")
            conn.execute(insert(markers_table).values(session_id=session_id, t=float(t), label=label))

    def delete_sessions(self, session_ids: Iterable[int]) -> int:
        """Delete several sessions and all their data in one transaction; how many existed."""
        ids = [int(i) for i in session_ids]
        if not ids:
            return 0
        with self.guard("delete sessions"), self.engine.begin() as conn:
            for table in _CHILD_TABLES:
                conn.execute(delete(table).where(table.c.session_id.in_(ids)))
            return conn.execute(delete(sessions_table).where(sessions_table.c.id.in_(ids))).rowcount

    def delete_session(self, session_id: int) -> bool:
        """Delete a session and all its data for good; False if it did not exist."""
        with self.guard("delete a session"), self.engine.begin() as conn:
            # Children first, explicitly: correct even on a database without enforced foreign keys.
            for table in _CHILD_TABLES:
                conn.execute(delete(table).where(table.c.session_id == session_id))
            return conn.execute(delete(sessions_table).where(sessions_table.c.id == session_id)).rowcount > 0

    def close_stale_sessions(self, idle_s: float = STALE_LIVE_SESSION_S) -> int:
        """Mark live sessions still 'running' with nothing stored for `idle_s` as 'interrupted'.

        Their process died without closing them; `ended_at` becomes the end of their last stored
        second. Recordings are left alone: their bucket times are video time, not wall time.
        """
        c, b = sessions_table.c, buckets_table.c
        last_t = select(func.max(b.t)).where(b.session_id == c.id).scalar_subquery()
        now = time.time()
        with self.guard("close stale sessions"), self.engine.begin() as conn:
            rows = conn.execute(
                select(c.id, c.started_at, last_t.label("last_t")).where(c.status == "running", c.source == "live")
            ).all()
            stale = []
            for session_id, started_at, last in rows:
                last_seen = float(last) + 1.0 if last is not None else started_at.timestamp()
                if now - last_seen > idle_s:
                    stale.append((session_id, last_seen))
            for session_id, last_seen in stale:
                conn.execute(
                    update(sessions_table)
                    .where(c.id == session_id, c.status == "running")
                    .values(status="interrupted", ended_at=_utc(last_seen))
                )
        return len(stale)

    def purge_older_than(self, days: float) -> int:
        """Delete sessions that ended (or, if still open, started) more than `days` ago; return how many."""
        if days < 0:
            raise ValueError("days must be >= 0")
        cutoff = datetime.now(UTC) - timedelta(days=days)
        c = sessions_table.c
        ended = func.coalesce(c.ended_at, c.started_at)
        expired = select(c.id).where(ended < cutoff)  # a subquery: no limit on how many sessions go
        with self.guard("purge old sessions"), self.engine.begin() as conn:
            for table in _CHILD_TABLES:
                conn.execute(delete(table).where(table.c.session_id.in_(expired)))
            return conn.execute(delete(sessions_table).where(ended < cutoff)).rowcount

    # --- reads (DataFrames for the pages) -----------------------------------------------------
    def _frame(self, statement: Any, action: str) -> pd.DataFrame:
        with self.guard(action), self.engine.connect() as conn:
            result = conn.execute(statement)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def list_sessions(self) -> pd.DataFrame:
        """One row per session, latest held first: id, name, class_label, source, started_at, ended_at (UTC), ...

        `held_at` is when the class took place: a recording's `recorded_at` when known, else `started_at`.
        """
        c = sessions_table.c
        held_at = func.coalesce(c.recorded_at, c.started_at)
        frame = self._frame(select(sessions_table, held_at.label("held_at")).order_by(held_at.desc(), c.id.desc()),
                            "list sessions")
        for column in ("started_at", "ended_at", "recorded_at", "held_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def session_figures(self, session_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Per session: seconds, face_seconds, share_* and negative_share (faces-weighted over its seconds,
        as `aggregate.overall_distribution`), dominant (NA without faces), attention_events, markers."""
        b, e, m = buckets_table.c, events_table.c, markers_table.c
        face_seconds = func.sum(b.faces)
        negative = sum((b[f"share_{x}"] for x in EMOTIONS if x in NEGATIVE_EMOTIONS), start=0.0)
        columns = [b.session_id.label("id"), func.count().label("seconds"), face_seconds.label("face_seconds"),
                   *[func.sum(b.faces * b[c]).label(c) for c in SHARE_COLUMNS],
                   func.sum(b.faces * negative).label("negative_share")]
        statement = select(*columns).group_by(b.session_id)
        events = select(e.session_id.label("id"), func.count().label("attention_events")).where(
            e.kind == ATTENTION_KIND).group_by(e.session_id)
        markers = select(m.session_id.label("id"), func.count().label("markers")).group_by(m.session_id)
        if session_ids is not None:
            ids = [int(i) for i in session_ids]
            statement = statement.where(b.session_id.in_(ids))
            events, markers = events.where(e.session_id.in_(ids)), markers.where(m.session_id.in_(ids))
        frame = self._frame(statement, "summarise sessions")
        weights = pd.to_numeric(frame["face_seconds"], errors="coerce").fillna(0.0)
        for column in (*SHARE_COLUMNS, "negative_share"):
            sums = pd.to_numeric(frame[column], errors="coerce").fillna(0.0)
            frame[column] = np.where(weights > 0, sums / weights.where(weights > 0, 1.0), 0.0)
        shares = frame[list(SHARE_COLUMNS)].to_numpy(dtype=np.float64)
        frame["dominant"] = [EMOTIONS[int(row.argmax())] if w > 0 else None
                             for row, w in zip(shares, weights, strict=True)]
        for extra, name in ((events, "attention_events"), (markers, "markers")):
            counts = self._frame(extra, "summarise sessions").set_index("id")[name] if len(frame) else pd.Series()
            frame[name] = frame["id"].map(counts).fillna(0).astype(int)
        return frame

    def session_markers(self, session_id: int) -> pd.DataFrame:
        """t (epoch s), label: the session's lesson markers in time order."""
        m = markers_table.c
        frame = self._frame(select(m.t, m.label).where(m.session_id == session_id).order_by(m.t, m.id),
                            "read session markers")
        frame["t"] = frame["t"].astype("float64")
        return frame

    def get_session(self, session_id: int) -> dict[str, Any]:
        with self.guard("read a session"), self.engine.connect() as conn:
            row = conn.execute(select(sessions_table).where(sessions_table.c.id == session_id)).mappings().first()
        if row is None:
            raise SessionNotFound(f"session {session_id} does not exist")
        return dict(row)

    def session_buckets(self, session_id: int) -> pd.DataFrame:
        """Per second: t (epoch s), time (UTC), elapsed_s, faces, p_*, share_*, negative_share, needs_attention,
        students (online classes; NA otherwise)."""
        table = buckets_table
        frame = self._frame(
            select(table.c.t, table.c.faces, *[table.c[c] for c in (*PROB_COLUMNS, *SHARE_COLUMNS)],
                   table.c.needs_attention, table.c.students)
            .where(table.c.session_id == session_id)
            .order_by(table.c.t),
            "read session buckets",
        )
        frame["t"] = frame["t"].astype("int64")
        frame.insert(1, "time", pd.to_datetime(frame["t"], unit="s", utc=True))
        start = frame["t"].min() if len(frame) else 0
        frame.insert(2, "elapsed_s", frame["t"] - start)
        for c in (*PROB_COLUMNS, *SHARE_COLUMNS):
            frame[c] = frame[c].astype("float64")
        negative = [f"share_{e}" for e in EMOTIONS if e in NEGATIVE_EMOTIONS]
        frame.insert(frame.columns.get_loc("needs_attention"), "negative_share",
                     frame[negative].sum(axis=1).astype("float64"))
        frame["needs_attention"] = frame["needs_attention"].astype(bool)
        frame["students"] = pd.to_numeric(frame["students"], errors="coerce").astype("Int64")  # NA but in classes
        return frame

    def session_tracks(self, session_id: int) -> pd.DataFrame:
        """Per anonymous track: track, first_t, last_t, seconds, dominant_emotion, confidence, p_* (means)."""
        table = track_samples_table
        means = [func.avg(table.c[c]).label(c) for c in PROB_COLUMNS]
        frame = self._frame(
            select(
                table.c.track_id.label("track"),
                func.min(table.c.t).label("first_t"),
                func.max(table.c.t).label("last_t"),
                func.count().label("seconds"),
                *means,
            )
            .where(table.c.session_id == session_id)
            .group_by(table.c.track_id)
            .order_by(table.c.track_id),
            "read session tracks",
        )
        probs = frame[list(PROB_COLUMNS)].to_numpy(dtype=np.float64) if len(frame) else np.empty((0, len(EMOTIONS)))
        top = probs.argmax(axis=1) if len(frame) else np.empty(0, dtype=int)
        frame.insert(4, "dominant_emotion", [EMOTIONS[i] for i in top])
        frame.insert(5, "confidence", probs[np.arange(len(top)), top] if len(frame) else [])
        return frame

    def session_events(self, session_id: int) -> pd.DataFrame:
        """t (= t_start, epoch s), t_start, t_end (NaN while open), kind, reason."""
        frame = self._frame(
            select(events_table.c.t_start, events_table.c.t_end, events_table.c.kind, events_table.c.reason)
            .where(events_table.c.session_id == session_id)
            .order_by(events_table.c.t_start),
            "read session events",
        )
        frame.insert(0, "t", frame["t_start"].astype("float64"))
        frame["t_end"] = frame["t_end"].astype("float64")
        return frame


def _upsert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT with ON CONFLICT, in the dialect of the connection (both backends have it)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _finite(value: float) -> float | None:
    return None if value != value else float(value)  # NaN (no faces) -> NULL


_stores: dict[tuple[str, int, int], Store] = {}
_stores_lock = threading.Lock()


def get_store(url: str, pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_MAX_OVERFLOW) -> Store:
    """One Store (engine and pool) per URL per process; the first use upgrades the schema."""
    key = (url, pool_size, max_overflow)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = Store(url, pool_size=pool_size, max_overflow=max_overflow)
        return store


def store_for(settings: Settings) -> Store:
    """The process's Store for the configured database and pool size."""
    return get_store(settings.db_url, settings.db_pool_size, settings.db_max_overflow)


# --- maintenance (the History page runs it every few minutes) ------------------------------------


@dataclass(frozen=True)
class StepOutcome:
    count: int = 0  # sessions it changed
    error: str | None = None  # why it failed; None when it ran


@dataclass(frozen=True)
class Maintenance:
    interrupted: StepOutcome  # dead live sessions marked 'interrupted'
    purged: StepOutcome  # sessions deleted by the retention limit


def run_maintenance(store: Store, retention_days: float, idle_s: float = STALE_LIVE_SESSION_S) -> Maintenance:
    """Mark dead live sessions interrupted, then purge expired sessions.

    Each step runs in its own transaction and reports on its own: the retention purge that the
    privacy notice promises never depends on the other step succeeding.
    """
    try:
        interrupted = StepOutcome(store.close_stale_sessions(idle_s))
    except StoreError as exc:
        log.warning("marking stale sessions failed: %s", exc)
        interrupted = StepOutcome(error=str(exc))
    try:
        purged = StepOutcome(store.purge_older_than(retention_days))
    except StoreError as exc:
        log.warning("retention purge failed: %s", exc)
        purged = StepOutcome(error=str(exc))
    return Maintenance(interrupted, purged)


# --- background writer --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    session_id: int
    data: Drained


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class BackgroundWriter:
    """Writes drained aggregator output from a daemon thread; the frame path only enqueues."""

    def __init__(self, store: Store, flush_interval_s: float = 1.0, max_queue: int = 10_000,
                 max_retry_batches: int = 600) -> None:
        if flush_interval_s <= 0:
            raise ValueError("flush_interval_s must be > 0")
        self.store = store
        self.flush_interval_s = flush_interval_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._max_retry_batches = max_retry_batches
        self._pending: list[_Batch] = []
        self._closed = False
        self._close_lock = threading.Lock()
        self.dropped = 0  # batches given up (queue full, session deleted, or too many failed retries)
        self.written = 0  # batches written
        self.flushes = 0  # successful flushes that wrote something
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="classmood-store-writer", daemon=True)
        self._thread.start()

    def submit(self, session_id: int, data: Drained) -> bool:
        """Queue a batch; never blocks. False if it was dropped (queue full or writer closed)."""
        if not data:
            return True
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(_Batch(session_id, data))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write everything queued so far and wait for it; True when done in time."""
        if self._closed or not self._thread.is_alive():
            return False
        request = _Flush()
        self._queue.put(request)
        return request.done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop and join (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def backlog(self) -> int:
        """Batches submitted and not yet written: queued, or kept for a retry."""
        return self._queue.qsize() + len(self._pending)

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._drain_queue()
                self._write()
                return
            if isinstance(item, _Flush):
                self._drain_queue()
                self._write()
                item.done.set()
                next_flush = time.monotonic() + self.flush_interval_s
                continue
            if isinstance(item, _Batch):
                self._pending.append(item)
            if time.monotonic() >= next_flush:
                self._drain_queue()
                self._write()
                next_flush = time.monotonic() + self.flush_interval_s

    def _drain_queue(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Batch):
                self._pending.append(item)
            elif isinstance(item, _Flush):
                item.done.set()  # answered by the write that follows
            elif item is _STOP:
                self._queue.put(_STOP)  # keep it for the main loop
                return

    def _write(self) -> None:
        if not self._pending:
            return
        by_session: dict[int, list[_Batch]] = {}
        for batch in self._pending:
            by_session.setdefault(batch.session_id, []).append(batch)
        keep: list[_Batch] = []
        for session_id, batches in by_session.items():
            buckets = tuple(b for x in batches for b in x.data.buckets)
            samples = tuple(s for x in batches for s in x.data.samples)
            events = tuple(e for x in batches for e in x.data.events)
            try:
                self.store.add_batch(session_id, buckets, samples, events)
            except SessionNotFound as exc:
                self.dropped += len(batches)  # retrying cannot help
                self.last_error = str(exc)
                log.warning("dropping %d batch(es): %s", len(batches), exc)
            except Exception as exc:  # keep the thread alive whatever the database does
                self.last_error = str(exc)
                log.warning("store write failed, will retry: %s", exc)
                keep.extend(batches)
            else:
                self.written += len(batches)
                self.flushes += 1
                self.last_error = None
        if len(keep) > self._max_retry_batches:
            self.dropped += len(keep) - self._max_retry_batches
            keep = keep[-self._max_retry_batches :]
        self._pending = keep


# --- operators' CLI -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer_core.store",
        description="The session database's schema: show its revision (current) or bring it up to date "
        "(upgrade). The app and the CLIs also upgrade on start; this is for doing it first, by hand.",
    )
    parser.add_argument("command", choices=("current", "upgrade"))
    parser.add_argument("--url", help="database URL (default: DATABASE_URL / CLASSMOOD_DATABASE_URL, "
                                      "else the SQLite file under CLASSMOOD_DATA_DIR)")
    args = parser.parse_args(argv)
    try:
        store = Store(args.url or get_settings().db_url, upgrade=False)
        try:
            if args.command == "current":
                print(f"{store.url_text}: {store.schema_state().describe()}")
            else:
                before, after = store.upgrade_schema()
                done = "already up to date" if before == after else f"upgraded from {before or 'empty'} to"
                print(f"{store.url_text}: {done} schema revision {after}")
        finally:
            store.dispose()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
