"""Versions of the session database's schema: Alembic revisions, applied whenever a Store opens.

`fer_core.store.metadata` is the model; the revisions in fer_core/migrations/versions build it
step by step from an empty database (tests/unit/test_schema.py checks on SQLite and PostgreSQL
that they agree). Every `Store` brings its database up to date when it opens, so the app,
`python -m fer_core.analyze` and the other CLIs need no separate step; operators can run
`python -m fer_core.store upgrade` (or `current`) by hand.

- Two processes opening one database at once take turns: PostgreSQL through a transaction-level
  advisory lock, SQLite through `BEGIN IMMEDIATE` (its write lock). The upgrade runs in that one
  transaction (both have transactional DDL), so a failed upgrade leaves the schema as it was.
- A database already at the newest revision is only read, never locked (read-only files work).
- A database stamped with a revision this code does not know was upgraded by a newer ClassMood:
  it is refused with SchemaError and nothing is written to it.
- A database made before Alembic (tables but no version table, from `metadata.create_all`) is
  recognised as revision 0001, 0002 or 0003 by its tables and constraints, stamped, and upgraded
  like any other. Later revisions never need this: every database is versioned from then on.
- `metadata` holds the tables of fer_core/store.py and of the modules that add theirs to it
  (fer_core/class_store.py); env.py and the tests import them all.

To change the schema (alembic.ini at the repository root configures the `alembic` command):
1. edit the tables in fer_core/store.py (`metadata`);
2. add a revision `fer_core/migrations/versions/NNNN_what.py` whose `down_revision` is the current
   head. Let Alembic draft it from the difference to a scratch database, then read the draft (it
   does not see CHECK constraints or renames):
       .venv/bin/alembic -x url=sqlite:////tmp/scratch.db upgrade head
       .venv/bin/alembic -x url=sqlite:////tmp/scratch.db revision --autogenerate --rev-id NNNN -m "what"
   or write it by hand (`revision` without --autogenerate gives an empty one). Existing tables
   change inside `op.batch_alter_table` (SQLite copies the table; PostgreSQL alters it in place);
3. run `pytest tests/unit/test_schema.py` (or `alembic ... check`): it fails while `metadata`
   and the revisions differ, and when two branches each added a revision (two heads: renumber
   one onto the other).
Revisions are forward-only: to go back, restore a backup of the database taken before upgrading.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Not Alembic's default name: a PostgreSQL database shared with another Alembic project keeps both apart.
VERSION_TABLE = "classmood_schema_version"
CONTEXT_OPTIONS = {"version_table": VERSION_TABLE, "render_as_batch": True, "compare_type": True}
# The tables of the schema before Alembic (revisions 0001 and 0002 differ only in a constraint), and
# those create_all added for online classes before revision 0003 existed.
PRE_ALEMBIC_TABLES = ("sessions", "buckets", "track_samples", "events")
PRE_ALEMBIC_CLASS_TABLES = ("classes", "class_members", "class_partials")
# pg_advisory_xact_lock key: any constant that no other application on the database uses.
ADVISORY_LOCK_KEY = 0x436C_4D6F_6F64  # "ClMood"
# How long a second SQLite process waits for another one's upgrade before giving up.
SQLITE_LOCK_WAIT_S = 120.0


class SchemaError(RuntimeError):
    """The database's schema cannot be brought up to date; the message says why."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no ClassMood tables yet
    head: str
    unversioned: bool = False  # made before Alembic: `current` was read from its tables, not stamped

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head and not self.unversioned

    def describe(self) -> str:
        if self.current is None:
            return f"no ClassMood tables yet (they are created at revision {self.head} on first use)"
        if self.up_to_date:
            return f"schema revision {self.current}, the newest: up to date"
        made = " (made before schema versions; recognised by its tables)" if self.unversioned else ""
        return f"schema revision {self.current}{made}; the newest is {self.head}: an upgrade is due"


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def head_revision() -> str:
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads {heads}; renumber one onto the other")
    return heads[0]


def _known_revisions() -> set[str]:
    return {script.revision for script in script_directory().walk_revisions()}


def _current(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the database has several schema revisions {heads}; it was not made by ClassMood")
    if heads and heads[0] not in _known_revisions():
        raise SchemaError(
            f"the database has schema revision {heads[0]}, which this version of ClassMood does not know "
            f"(newest here: {head_revision()}): it was upgraded by a newer ClassMood. Run that version, or "
            "update this one; nothing was changed"
        )
    return heads[0] if heads else None


def _pre_alembic_revision(conn: Connection) -> str | None:
    """The revision of a database made before Alembic, from its tables; None when it has none of them."""
    inspector = inspect(conn)
    present = [name for name in PRE_ALEMBIC_TABLES if inspector.has_table(name)]
    if not present:
        return None
    if len(present) < len(PRE_ALEMBIC_TABLES):
        missing = sorted(set(PRE_ALEMBIC_TABLES) - set(present))
        raise SchemaError(f"the database has some ClassMood tables but not {', '.join(missing)}; "
                          "it was not made by ClassMood, or only in part")
    checks = {check["name"]: str(check["sqltext"]) for check in inspector.get_check_constraints("sessions")}
    bucket_columns = {column["name"] for column in inspector.get_columns("buckets")}
    if ("students" in bucket_columns and "'class'" in checks.get("ck_sessions_source", "")
            and all(inspector.has_table(name) for name in PRE_ALEMBIC_CLASS_TABLES)):
        return "0003"  # made whole by create_all of the first online-class release
    # Older, or opened by that release (class tables added, but not the column or the constraint):
    # revision 0003 creates only what is missing.
    return "0002" if "interrupted" in checks.get("ck_sessions_status", "") else "0001"


def state(engine: Engine) -> SchemaState:
    """Where the database stands; only reads."""
    with engine.connect() as conn:
        current = _current(conn)
        if current is None and (made_before_alembic := _pre_alembic_revision(conn)) is not None:
            return SchemaState(made_before_alembic, head_revision(), unversioned=True)
    return SchemaState(current, head_revision())


@contextlib.contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that holds the database's upgrade lock; commits on success."""
    with engine.connect() as conn:
        backend = engine.dialect.name
        if backend != "sqlite":
            with conn.begin():
                if backend == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
                yield conn
            return
        # Off for the copy-and-swap of batch mode: dropping the old `sessions` would cascade-delete
        # every child row. Only outside a transaction does SQLite take this pragma.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        _begin_immediate(conn)
        try:
            orphans_before = len(conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall())
            yield conn
            orphans_after = len(conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall())
            if orphans_after > orphans_before:
                raise SchemaError(f"the upgrade would leave {orphans_after - orphans_before} rows without "
                                  "their session; it was rolled back")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


def _begin_immediate(conn: Connection) -> None:
    """Take SQLite's write lock, waiting for another process's upgrade (beyond the busy timeout)."""
    deadline = time.monotonic() + SQLITE_LOCK_WAIT_S
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest revision; returns (revision before, revision after)."""
    head = head_revision()
    with engine.connect() as conn:  # fast path, no lock: nearly every open finds the database up to date
        if _current(conn) == head:
            return head, head
    with migration_connection(engine) as conn:
        before = _current(conn)  # again under the lock: another process may have upgraded meanwhile
        if before == head:
            return head, head
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        if before is None and (made_before_alembic := _pre_alembic_revision(conn)) is not None:
            context.stamp(script_directory(), made_before_alembic)
            before = made_before_alembic
        config = Config()  # no alembic.ini needed: everything is set here
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        after = _current(conn)
    if after != head:
        raise SchemaError(f"the upgrade stopped at revision {after}, not {head}")
    return before, head
