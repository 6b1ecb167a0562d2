"""Schema migrations (fer_core/schema.py, fer_core/migrations) on SQLite and a real PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, bindparam, create_engine, text
from sqlalchemy.exc import IntegrityError

import fer_core.class_store  # noqa: F401  (its tables are part of `metadata`)
from fer_core import schema
from fer_core.store import SOURCES, STATUSES, Store, StoreError, main, metadata, run_maintenance
from tests.processes import run_together

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def version_rows(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(f"SELECT version_num FROM {schema.VERSION_TABLE}"))]
    finally:
        engine.dispose()


def test_revisions_form_one_line_ending_at_the_head() -> None:
    script = schema.script_directory()
    assert script.get_heads() == [schema.head_revision()]
    chain = [rev.revision for rev in script.walk_revisions()]  # newest first
    assert chain[-1] == "0001" and len(chain) == len(set(chain))


def test_migrated_schema_matches_metadata(backend: str, database_url: Callable[[str], str]) -> None:
    store = Store(database_url(backend))
    try:
        with store.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn, opts=schema.CONTEXT_OPTIONS), metadata)
        assert differences == []
        assert store.schema_state().up_to_date
    finally:
        store.dispose()


def test_constraints_allow_every_status_and_source_and_nothing_else(
    backend: str, database_url: Callable[[str], str]
) -> None:
    """Autogenerate cannot see CHECK constraints, so this checks them by what the database accepts."""
    store = Store(database_url(backend))
    try:
        for source in SOURCES:
            for status in STATUSES:
                store.close_session(store.create_session(f"{source} {status}", source=source), status=status)
        insert = text("INSERT INTO sessions (name, class_label, source, started_at, faces_seen, frames_analysed, "
                      "status) VALUES ('x', '', :source, :now, 0, 0, :status)").bindparams(
            bindparam("now", type_=DateTime()))
        now = datetime(2026, 1, 1)
        for bad in ({"source": "live", "status": "bogus"}, {"source": "bogus", "status": "running"}):
            with pytest.raises(IntegrityError), store.engine.begin() as conn:
                conn.execute(insert, {**bad, "now": now})
        assert len(store.list_sessions()) == len(SOURCES) * len(STATUSES)
    finally:
        store.dispose()


# --- a database made by the first release (before Alembic and before 'interrupted') --------------


def first_schema_database(backend: str, database_url: Callable[[str], str], postgres_server) -> str:
    """A new database holding tests/fixtures/schema_v1_<backend>.sql (see make_schema_v1.py)."""
    url = database_url(backend)
    sql = (FIXTURES / f"schema_v1_{backend}.sql").read_text(encoding="utf-8")
    if backend == "sqlite":
        with sqlite3.connect(Path(url.removeprefix("sqlite:///"))) as conn:
            conn.executescript(sql)
        conn.close()
    else:
        postgres_server.execute(sql, url.rsplit("/", 1)[1])
    return url


# Fixture session id -> (start, in seconds before now); the fixture stores each session's seconds from its start.
PLACES = {
    1: 2 * 86400,  # completed live: kept
    2: 3 * 86400,  # partial recording: kept
    3: 4 * 86400,  # failed recording: kept
    4: 2 * 3600,  # left 'running' by a dead process two hours ago: to be marked interrupted
    5: 4,  # running live, storing right now: stays running
    6: 40 * 86400,  # completed 40 days ago: purged
}


def place_sessions_relative_to_now(url: str) -> float:
    """Move the fixture's sessions (all in November 2026) to the ages in PLACES; returns 'now'."""
    now = datetime.now(UTC).replace(tzinfo=None)
    engine = create_engine(url)
    stamp = bindparam("stamp", type_=DateTime())
    try:
        with engine.begin() as conn:
            for session_id, age_s in PLACES.items():
                started = conn.execute(text("SELECT started_at FROM sessions WHERE id = :id"), {"id": session_id})
                old_start = started.scalar_one()
                old_start = datetime.fromisoformat(old_start) if isinstance(old_start, str) else old_start
                new_start = now - timedelta(seconds=age_s)
                shift = int((new_start - old_start).total_seconds())
                args = {"id": session_id, "shift": shift}
                conn.execute(text("UPDATE sessions SET started_at = :stamp WHERE id = :id").bindparams(stamp),
                             {"id": session_id, "stamp": new_start})
                conn.execute(text("UPDATE sessions SET ended_at = :stamp WHERE id = :id AND ended_at IS NOT NULL")
                             .bindparams(stamp), {"id": session_id, "stamp": new_start + timedelta(seconds=5)})
                for table in ("buckets", "track_samples"):
                    conn.execute(text(f"UPDATE {table} SET t = t + :shift WHERE session_id = :id"), args)
                conn.execute(text("UPDATE events SET t_start = t_start + :shift, t_end = t_end + :shift "
                                  "WHERE session_id = :id"), args)
    finally:
        engine.dispose()
    return now.replace(tzinfo=UTC).timestamp()


def test_first_schema_database_upgrades_and_then_purges(
    backend: str, database_url: Callable[[str], str], request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    url = first_schema_database(backend, database_url, server)
    place_sessions_relative_to_now(url)
    # The bug this fixes: the first schema refuses 'interrupted', so marking dead sessions failed.
    engine = create_engine(url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE sessions SET status = 'interrupted' WHERE id = 4"))
    engine.dispose()

    before = Store(url, upgrade=False)
    assert before.schema_state() == schema.SchemaState("0001", schema.head_revision(), unversioned=True)
    before.dispose()

    store = Store(url)
    try:
        assert version_rows(url) == [schema.head_revision()]
        done = run_maintenance(store, retention_days=30)
        assert (done.interrupted.count, done.interrupted.error) == (1, None)
        assert (done.purged.count, done.purged.error) == (1, None)

        sessions = store.list_sessions().set_index("id")
        assert sorted(sessions.index) == [1, 2, 3, 4, 5]
        assert sessions["status"].to_dict() == {1: "completed", 2: "partial", 3: "failed", 4: "interrupted",
                                                5: "running"}
        # Rebuilding `sessions` (SQLite batch mode) deleted no child row by cascade.
        assert {sid: len(store.session_buckets(sid)) for sid in sessions.index} == {1: 5, 2: 4, 3: 0, 4: 6, 5: 3}
        assert {sid: int(store.session_tracks(sid)["seconds"].sum()) for sid in sessions.index} == {
            1: 10, 2: 8, 3: 0, 4: 12, 5: 6}
        assert {sid: len(store.session_events(sid)) for sid in sessions.index} == {1: 1, 2: 1, 3: 0, 4: 1, 5: 1}
        interrupted = store.get_session(4)
        assert interrupted["ended_at"].timestamp() == store.session_buckets(4)["t"].max() + 1
        # The upgraded tables take new sessions as before.
        new_id = store.create_session("after the upgrade")
        store.close_session(new_id, status="interrupted")
        assert store.get_session(new_id)["status"] == "interrupted"
    finally:
        store.dispose()


def test_read_only_first_schema_file_gets_a_clear_error_and_stays_as_it_was(
    database_url: Callable[[str], str],
) -> None:
    url = first_schema_database("sqlite", database_url, None)
    path = Path(url.removeprefix("sqlite:///"))
    content = path.read_bytes()
    with pytest.raises(StoreError, match="read-only"):
        Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert path.read_bytes() == content


# --- refusing what the code cannot handle -----------------------------------------------------------


def test_database_newer_than_the_code_is_refused_and_left_alone(
    backend: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(backend)
    store = Store(url)
    store.create_session("made by a newer ClassMood")
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'"))
    store.dispose()

    with pytest.raises(StoreError, match=r"revision 9999.*newer ClassMood") as info:
        Store(url)
    assert "nothing was changed" in str(info.value)
    assert version_rows(url) == ["9999"]
    unchanged = Store(url, upgrade=False)
    assert unchanged.list_sessions()["name"].tolist() == ["made by a newer ClassMood"]
    unchanged.dispose()


def test_partly_created_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(StoreError, match="not buckets, events, track_samples"):
        Store(f"sqlite:///{path}")


# --- several processes at once ------------------------------------------------------------------

OPEN_AND_WRITE = """
import sys
from fer_core.store import Store
# --- go ---
store = Store(sys.argv[1])
store.close_session(store.create_session(sys.argv[2]))
print(store.schema_state().current)
"""


def test_processes_opening_a_new_database_at_once_take_turns(
    backend: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(backend)
    outputs = run_together(OPEN_AND_WRITE, [[url, f"process {k}"] for k in range(3)])
    head = schema.head_revision()
    assert [out.strip() for out in outputs] == [head] * 3
    assert version_rows(url) == [head]
    store = Store(url)
    assert sorted(store.list_sessions()["name"]) == ["process 0", "process 1", "process 2"]
    store.dispose()


# --- operators' CLI ---------------------------------------------------------------------------------


def test_cli_shows_and_upgrades_the_revision(database_url: Callable[[str], str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = first_schema_database("sqlite", database_url, None)
    head = schema.head_revision()
    assert main(["current", "--url", url]) == 0
    assert f"schema revision 0001 (made before schema versions; recognised by its tables); the newest is {head}" \
        in capsys.readouterr().out
    engine = create_engine(url)  # `current` only reads: no version table was made
    with engine.connect() as conn:
        assert not conn.dialect.has_table(conn, schema.VERSION_TABLE)
    engine.dispose()

    assert main(["upgrade", "--url", url]) == 0
    assert f"upgraded from 0001 to schema revision {head}" in capsys.readouterr().out
    assert main(["upgrade", "--url", url]) == 0
    assert f"already up to date schema revision {head}" in capsys.readouterr().out
    assert main(["current", "--url", url]) == 0
    assert f"schema revision {head}, the newest: up to date" in capsys.readouterr().out

    with sqlite3.connect(Path(url.removeprefix("sqlite:///"))) as conn:
        conn.execute(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'")
    conn.close()
    assert main(["current", "--url", url]) == 1
    assert "newer ClassMood" in capsys.readouterr().err


# --- databases that create_all of the first online-class release made or touched ------------------


def class_release_database(url: str) -> None:
    """What that release's create_all made: revision 0003's tables (they matched its metadata), unversioned.

    Built from the frozen revisions, not today's `metadata`, which has grown since.
    """
    from alembic import command
    from alembic.config import Config

    engine = create_engine(url)
    try:
        with schema.migration_connection(engine) as conn:
            config = Config()
            config.set_main_option("script_location", str(schema.MIGRATIONS_DIR))
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
            conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    finally:
        engine.dispose()


def test_database_made_by_create_all_of_the_class_release_is_recognised(
    backend: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(backend)
    class_release_database(url)
    store = Store(url, upgrade=False)
    assert store.schema_state() == schema.SchemaState("0003", schema.head_revision(), unversioned=True)
    assert store.upgrade_schema() == ("0003", schema.head_revision())
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts=schema.CONTEXT_OPTIONS), metadata) == []
    store.dispose()


def test_first_schema_database_opened_by_the_class_release_is_completed(
    backend: str, database_url: Callable[[str], str], request: pytest.FixtureRequest
) -> None:
    """That release's create_all added the class tables to an old database, but not buckets.students."""
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    url = first_schema_database(backend, database_url, server)
    engine = create_engine(url)
    class_tables = [metadata.tables[name] for name in schema.PRE_ALEMBIC_CLASS_TABLES]
    metadata.create_all(engine, tables=class_tables)
    engine.dispose()
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts=schema.CONTEXT_OPTIONS), metadata) == []
        assert len(store.session_buckets(1)) == 5 and store.session_buckets(1)["students"].isna().all()
        store.close_session(store.create_session("an online class", source="class"))
    finally:
        store.dispose()


def test_revision_0004_adds_only_what_a_database_lacks(backend: str, database_url: Callable[[str], str]) -> None:
    """A database made by create_all of a build that already had issue 28's columns opens and upgrades."""
    url = database_url(backend)
    class_release_database(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        kind = "DATETIME" if backend == "sqlite" else "TIMESTAMP WITHOUT TIME ZONE"  # as create_all makes it
        conn.execute(text(f"ALTER TABLE sessions ADD COLUMN recorded_at {kind}"))
    engine.dispose()
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts=schema.CONTEXT_OPTIONS), metadata) == []
        session_id = store.create_session("after the upgrade")
        store.add_marker(session_id, 1.0, "quiz")
        assert store.session_markers(session_id)["label"].tolist() == ["quiz"]
    finally:
        store.dispose()
