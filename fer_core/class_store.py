"""The online class in the database: the meeting point of every server process that handles its students.

Tables (all in `fer_core.store.metadata`):
- `classes`: one per online class: its join code, its session (source 'class'), its state and limits.
- `class_members`: one per joined browser while the class runs: a salted hash of a random browser key
  (never a name; the salt is the class's own, so two classes cannot be linked), the server process
  handling it and when it was last seen. Deleted when the class is saved.
- `class_partials`: per server process and second, the sums of what its students' faces showed
  (`fer_core.classroom.ClassSecond`). The instructor's view adds them up across processes. When the
  class ends they are folded into the session's class-level buckets and deleted, so nothing stored
  afterwards could single out a student who was alone on a server.

Every method runs its own transaction (see `Store`); none is called from a video thread.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from fer_core.aggregate import Drained
from fer_core.classroom import ClassSecond, class_buckets
from fer_core.emotions import EMOTIONS
from fer_core.join_code import new_code
from fer_core.store import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    SessionNotFound,
    Store,
    StoreError,
    UTCDateTime,
    get_store,
    metadata,
    sessions_table,
)

ClassStatus = Literal["open", "ended"]
EndReason = Literal["instructor", "idle", "interrupted"]
SUM_COLUMNS: tuple[str, ...] = tuple(f"sum_{e}" for e in EMOTIONS)
COUNT_COLUMNS: tuple[str, ...] = tuple(f"n_{e}" for e in EMOTIONS)
CODE_ATTEMPTS = 8

classes_table = Table(
    "classes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(16), nullable=False, unique=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("status", String(16), nullable=False, default="open"),
    Column("end_reason", String(16), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("saved_at", UTCDateTime, nullable=True),  # partials folded into the session's buckets
    Column("instructor_seen_at", UTCDateTime, nullable=False),
    Column("min_students", Integer, nullable=False),
    Column("max_students", Integer, nullable=False),
    Column("salt", String(32), nullable=False),
    CheckConstraint("status IN ('open', 'ended')", name="ck_classes_status"),
)

class_members_table = Table(
    "class_members",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("class_id", ForeignKey("classes.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("browser", String(64), nullable=False),
    Column("instance", String(64), nullable=False),
    Column("joined_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("left_at", UTCDateTime, nullable=True),
    UniqueConstraint("class_id", "browser", name="uq_class_members_browser"),
)

class_partials_table = Table(
    "class_partials",
    metadata,
    Column("class_id", ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True),
    Column("instance", String(64), primary_key=True),
    Column("t", BigInteger, primary_key=True),
    Column("students", Integer, nullable=False),
    Column("contributors", Integer, nullable=False),
    Column("frames", Integer, nullable=False),
    Column("faces", Integer, nullable=False),
    Column("observations", Integer, nullable=False),
    *[Column(c, Float, nullable=False) for c in SUM_COLUMNS],
    *[Column(c, Integer, nullable=False) for c in COUNT_COLUMNS],
)


class ClassError(StoreError):
    """A join or class action that cannot be done; the message is for the person who tried."""


class ClassNotFound(ClassError):
    pass


class ClassClosed(ClassError):
    """The class has ended, or its code has expired."""


class ClassFull(ClassError):
    pass


class AlreadyInClass(ClassError):
    """This browser already takes part in the class from another tab."""


@dataclass(frozen=True)
class ClassInfo:
    id: int
    code: str
    session_id: int
    name: str
    class_label: str
    status: ClassStatus
    end_reason: EndReason | None
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    saved_at: datetime | None
    instructor_seen_at: datetime
    min_students: int
    max_students: int
    salt: str

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class MaintenanceReport:
    ended_idle: int = 0
    interrupted: int = 0
    saved: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class ClassStore:
    """Online classes on a `Store`'s engine."""

    def __init__(self, store: Store) -> None:
        self.store = store  # its schema is up to date: the class tables come with revision 0003

    def _guard(self, action: str) -> Any:
        return self.store.guard(action)

    @property
    def engine(self) -> Any:
        return self.store.engine

    # --- the instructor ------------------------------------------------------------------------
    def open_class(self, name: str, class_label: str, *, min_students: int, max_students: int,
                   code_ttl_s: float, now: datetime | None = None) -> ClassInfo:
        """A new class with a fresh join code and its session (source 'class')."""
        if min_students < 1 or max_students < 1:
            raise ValueError("min_students and max_students must be >= 1")
        now = now or _now()
        session_id = self.store.create_session(name, class_label, "class", started_at=now)
        for _ in range(CODE_ATTEMPTS):
            values = {
                "code": new_code(), "session_id": session_id, "status": "open", "created_at": now,
                "expires_at": now + timedelta(seconds=code_ttl_s), "instructor_seen_at": now,
                "min_students": min_students, "max_students": max_students, "salt": secrets.token_hex(16),
            }
            try:
                with self._guard("open a class"), self.engine.begin() as conn:
                    class_id = int(conn.execute(insert(classes_table).values(**values)).inserted_primary_key[0])
                return self.get_class(class_id)
            except IntegrityError:  # a code collision (about 1 in 2**49): draw another
                continue
            except StoreError as exc:
                if "IntegrityError" not in str(exc):
                    raise
        raise StoreError("could not draw an unused join code")

    def touch_instructor(self, class_id: int, now: datetime | None = None) -> None:
        with self._guard("update the class"), self.engine.begin() as conn:
            conn.execute(update(classes_table).where(classes_table.c.id == class_id)
                         .values(instructor_seen_at=now or _now()))

    def end_class(self, class_id: int, reason: EndReason = "instructor", now: datetime | None = None) -> bool:
        """Close the class to new joins and streams (idempotent); saving follows after a grace period."""
        c = classes_table.c
        with self._guard("end the class"), self.engine.begin() as conn:
            result = conn.execute(update(classes_table).where(c.id == class_id, c.status == "open")
                                  .values(status="ended", end_reason=reason, ended_at=now or _now()))
            return result.rowcount > 0

    # --- reads ---------------------------------------------------------------------------------
    def _select_info(self) -> Any:
        s = sessions_table.c
        return select(classes_table, s.name, s.class_label).join(
            sessions_table, s.id == classes_table.c.session_id)

    @staticmethod
    def _info(row: Any) -> ClassInfo:
        m = dict(row._mapping)
        return ClassInfo(
            id=m["id"], code=m["code"], session_id=m["session_id"], name=m["name"], class_label=m["class_label"],
            status=m["status"], end_reason=m["end_reason"], created_at=m["created_at"], expires_at=m["expires_at"],
            ended_at=m["ended_at"], saved_at=m["saved_at"], instructor_seen_at=m["instructor_seen_at"],
            min_students=m["min_students"], max_students=m["max_students"], salt=m["salt"],
        )

    def get_class(self, class_id: int) -> ClassInfo:
        with self._guard("read a class"), self.engine.connect() as conn:
            row = conn.execute(self._select_info().where(classes_table.c.id == class_id)).first()
        if row is None:
            raise ClassNotFound(f"class {class_id} does not exist")
        return self._info(row)

    def find_class(self, code: str) -> ClassInfo | None:
        with self._guard("look up a join code"), self.engine.connect() as conn:
            row = conn.execute(self._select_info().where(classes_table.c.code == code)).first()
        return None if row is None else self._info(row)

    def open_classes(self) -> list[ClassInfo]:
        with self._guard("list open classes"), self.engine.connect() as conn:
            rows = conn.execute(self._select_info().where(classes_table.c.status == "open")
                                .order_by(classes_table.c.created_at.desc())).all()
        return [self._info(row) for row in rows]

    def class_for_session(self, session_id: int) -> ClassInfo | None:
        with self._guard("read a class"), self.engine.connect() as conn:
            row = conn.execute(self._select_info().where(classes_table.c.session_id == session_id)).first()
        return None if row is None else self._info(row)

    # --- students ------------------------------------------------------------------------------
    def join(self, class_id: int, browser: str, instance: str, *, member_timeout_s: float,
             now: datetime | None = None) -> int:
        """A member row for this browser (`browser`: the salted key hash); raises a ClassError saying why not."""
        now = now or _now()
        live_since = now - timedelta(seconds=member_timeout_s)
        m = class_members_table.c
        with self._guard("join the class"), self.engine.begin() as conn:
            row = conn.execute(select(classes_table).where(classes_table.c.id == class_id)).first()
            if row is None:
                raise ClassNotFound("This class does not exist any more.")
            info = row._mapping
            if info["status"] != "open":
                raise ClassClosed("This class has ended.")
            if now >= info["expires_at"]:
                raise ClassClosed("This join code has expired. Ask your instructor for a new one.")
            mine = conn.execute(select(m.id, m.left_at, m.last_seen_at)
                                .where(m.class_id == class_id, m.browser == browser)).first()
            if mine is not None and mine.left_at is None and mine.last_seen_at >= live_since:
                raise AlreadyInClass("This browser is already in this class in another tab or window. "
                                     "Use that one, or leave there first.")
            active = conn.execute(select(func.count()).select_from(class_members_table).where(
                m.class_id == class_id, m.left_at.is_(None), m.last_seen_at >= live_since,
                m.browser != browser)).scalar_one()
            if active >= info["max_students"]:
                raise ClassFull(f"This class is full ({info['max_students']} students). "
                                "Ask your instructor to raise the limit.")
            if mine is not None:
                conn.execute(update(class_members_table).where(m.id == mine.id)
                             .values(instance=instance, last_seen_at=now, left_at=None))
                return int(mine.id)
            result = conn.execute(insert(class_members_table).values(
                class_id=class_id, browser=browser, instance=instance, joined_at=now, last_seen_at=now))
            return int(result.inserted_primary_key[0])

    def heartbeat(self, member_ids: Sequence[int], now: datetime | None = None) -> None:
        if not member_ids:
            return
        m = class_members_table.c
        with self._guard("update class members"), self.engine.begin() as conn:
            conn.execute(update(class_members_table).where(m.id.in_(list(member_ids)), m.left_at.is_(None))
                         .values(last_seen_at=now or _now()))

    def leave(self, member_ids: Sequence[int], now: datetime | None = None) -> None:
        if not member_ids:
            return
        m = class_members_table.c
        with self._guard("update class members"), self.engine.begin() as conn:
            conn.execute(update(class_members_table).where(m.id.in_(list(member_ids)), m.left_at.is_(None))
                         .values(left_at=now or _now()))

    def students_connected(self, class_id: int, *, member_timeout_s: float, now: datetime | None = None) -> int:
        live_since = (now or _now()) - timedelta(seconds=member_timeout_s)
        m = class_members_table.c
        with self._guard("count class members"), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(class_members_table).where(
                m.class_id == class_id, m.left_at.is_(None), m.last_seen_at >= live_since)).scalar_one())

    # --- per-second sums -------------------------------------------------------------------------
    def add_partials(self, class_id: int, instance: str, seconds: Sequence[ClassSecond]) -> None:
        if not seconds:
            return
        rows = [
            {
                "class_id": class_id, "instance": instance, "t": int(s.t), "students": s.students,
                "contributors": s.contributors, "frames": s.frames, "faces": s.faces,
                "observations": s.observations,
                **{c: float(v) for c, v in zip(SUM_COLUMNS, s.prob_sums, strict=True)},
                **{c: int(v) for c, v in zip(COUNT_COLUMNS, s.label_counts, strict=True)},
            }
            for s in seconds
        ]
        with self._guard("save class figures"), self.engine.begin() as conn:
            conn.execute(insert(class_partials_table), rows)

    def class_seconds(self, class_id: int, since_t: int | None = None) -> list[ClassSecond]:
        """Every process's sums added up, one ClassSecond per second, oldest first."""
        p = class_partials_table.c
        sums = [func.sum(p[c]).label(c) for c in ("students", "contributors", "frames", "faces", "observations",
                                                   *SUM_COLUMNS, *COUNT_COLUMNS)]
        query = select(p.t, *sums).where(p.class_id == class_id).group_by(p.t).order_by(p.t)
        if since_t is not None:
            query = query.where(p.t >= since_t)
        with self._guard("read class figures"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            ClassSecond(
                t=int(r["t"]), students=int(r["students"]), contributors=int(r["contributors"]),
                frames=int(r["frames"]), faces=int(r["faces"]), observations=int(r["observations"]),
                prob_sums=tuple(float(r[c]) for c in SUM_COLUMNS),
                label_counts=tuple(int(r[c]) for c in COUNT_COLUMNS),
            )
            for r in rows
        ]

    # --- saving and upkeep ---------------------------------------------------------------------
    def save_class(self, class_id: int, *, negative_share: float, attention_seconds: int,
                   now: datetime | None = None) -> bool:
        """Fold an ended class's sums into its session's class-level buckets and events, close the session,
        and delete the sums and member rows. Idempotent and safe when two processes try at once."""
        now = now or _now()
        info = self.get_class(class_id)
        if info.status != "ended" or info.saved_at is not None:
            return False
        seconds = self.class_seconds(class_id)
        buckets, events, summary = class_buckets(
            seconds, min_students=info.min_students, negative_share=negative_share,
            attention_seconds=attention_seconds)
        c = classes_table.c
        with self._guard("save the class"), self.engine.begin() as conn:
            claimed = conn.execute(update(classes_table).where(c.id == class_id, c.saved_at.is_(None))
                                   .values(saved_at=now)).rowcount
            if not claimed:
                return False  # another process saved it meanwhile
            self.store.write_batch(conn, info.session_id, Drained(tuple(buckets), (), tuple(events)))
            status = "interrupted" if info.end_reason == "interrupted" else "completed"
            last = seconds[-1].t + 1 if seconds else None
            ended_at = info.ended_at or now
            if status == "interrupted" and last is not None:
                ended_at = _at(last)
            conn.execute(update(sessions_table).where(sessions_table.c.id == info.session_id).values(
                status=status, ended_at=ended_at, faces_seen=summary.faces_seen,
                dominant_emotion=summary.dominant_emotion, frames_analysed=summary.frames_analysed))
            conn.execute(delete(class_partials_table).where(class_partials_table.c.class_id == class_id))
            conn.execute(delete(class_members_table).where(class_members_table.c.class_id == class_id))
        return True

    def maintain(self, *, idle_s: float, stale_s: float, save_grace_s: float, negative_share: float,
                 attention_seconds: int, now: datetime | None = None) -> MaintenanceReport:
        """End classes nobody has used for `idle_s`, mark abandoned ones interrupted, save ended ones.

        Idle: no instructor view and no student stream for `idle_s`. Interrupted: also no figures stored
        for `stale_s` although students had been streaming (every process that handled it died).
        Ended classes are saved `save_grace_s` after they ended, so every process has flushed its last sums.
        """
        now = now or _now()
        c, m, p = classes_table.c, class_members_table.c, class_partials_table.c
        report = MaintenanceReport()
        with self._guard("look after open classes"), self.engine.connect() as conn:
            rows = conn.execute(select(c.id, c.instructor_seen_at, c.created_at).where(c.status == "open")).all()
            last_member = dict(conn.execute(select(m.class_id, func.max(m.last_seen_at)).group_by(m.class_id)).all())
            last_partial = dict(conn.execute(select(p.class_id, func.max(p.t)).group_by(p.class_id)).all())
        for class_id, instructor_seen, _created in rows:
            member_seen = last_member.get(class_id)
            activity = max(instructor_seen, member_seen) if member_seen else instructor_seen
            partial_t = last_partial.get(class_id)
            if partial_t is not None and now - _at(partial_t) > timedelta(seconds=stale_s) and (
                    now - activity > timedelta(seconds=stale_s)):
                if self.end_class(class_id, "interrupted", _at(partial_t + 1)):
                    report = replace(report, interrupted=report.interrupted + 1)
            elif now - activity > timedelta(seconds=idle_s) and self.end_class(class_id, "idle", now):
                report = replace(report, ended_idle=report.ended_idle + 1)
        with self._guard("look after ended classes"), self.engine.connect() as conn:
            ended = conn.execute(select(c.id).where(
                c.status == "ended", c.saved_at.is_(None),
                c.ended_at <= now - timedelta(seconds=save_grace_s))).scalars().all()
        for class_id in ended:
            try:
                if self.save_class(class_id, negative_share=negative_share, attention_seconds=attention_seconds,
                                   now=now):
                    report = replace(report, saved=report.saved + 1)
            except SessionNotFound:  # its session was deleted meanwhile: nothing to save
                continue
        return report


_class_stores: dict[str, ClassStore] = {}
_class_stores_lock = threading.Lock()


def get_class_store(
    url: str, pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_MAX_OVERFLOW
) -> ClassStore:
    """One ClassStore per database URL per process (on the process's one Store for that URL)."""
    with _class_stores_lock:
        found = _class_stores.get(url)
        if found is None:
            found = _class_stores[url] = ClassStore(get_store(url, pool_size, max_overflow))
        return found
