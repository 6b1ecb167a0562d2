"""AppTests of the History page over a seeded temporary database: SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fer_core.settings import Settings, get_settings
from fer_core.store import Store
from tests.app.conftest import chart_specs, page_test, seed_session, texts
from tests.conftest import BACKENDS
from tests.processes import run_together
from tests.store_faults import refuse

pytestmark = pytest.mark.app
SQLITE_ONLY = pytest.mark.parametrize("app_backend", ["sqlite"])


@pytest.fixture(params=BACKENDS)
def app_backend(request: pytest.FixtureRequest) -> str:
    return request.param

PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)> [click](javascript:alert(2)) **bold**'


@pytest.fixture
def store(app_env: Settings) -> Store:
    store = Store(app_env.db_url)
    yield store
    store.dispose()


def markdown_elements(at: AppTest) -> list:
    """Every element Streamlit renders as markdown (headings, captions, alerts, metric labels...)."""
    kinds = ("markdown", "caption", "subheader", "header", "title", "info", "warning", "error", "success")
    return [e for kind in kinds for e in at.get(kind)]


def test_empty_state_explains_what_to_do(app_env: Settings) -> None:
    at = page_test("history").run()
    assert not at.exception
    assert at.title[0].value == "History"
    assert "No sessions stored yet" in texts(at.info)
    assert "Live class" in texts(at.info)
    assert not at.dataframe


def test_lists_sessions_and_shows_one_in_detail(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC)
    seed_session(store, "Monday maths", class_label="7B", started_at=now - timedelta(hours=2), seconds=30)
    seed_session(store, "Tuesday talk", class_label="8A", source="recording", started_at=now - timedelta(hours=1),
                 seconds=60, faces=4, attention_from=20)
    at = page_test("history").run()
    assert not at.exception

    table = at.dataframe[0].value
    assert list(table["Name"]) == ["Tuesday talk", "Monday maths"]  # newest first
    assert list(table["Class"]) == ["8A", "7B"]
    assert list(table["Source"]) == ["recording", "live"]
    assert list(table["Faces seen"]) == [4, 3]
    assert list(table["Dominant mood"]) == ["sad", "happy"]
    assert list(table["Duration"]) == ["1 min 00 s", "30 s"]

    # The newest session is open in detail.
    assert texts(at.subheader).count("Tuesday talk") == 1
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dominant mood"] == "sad (67% of faces)"  # label with its confidence
    assert metrics["Needs attention"] == "1 time(s)"
    specs = chart_specs(at)
    assert len(specs) == 4  # timeline, distribution, faces, attention
    assert any('"Share of faces"' in s and '"step-after"' in s for s in specs)
    assert any('"Faces in view"' in s for s in specs)
    assert any('"Negative share"' in s and "rect" in s for s in specs)  # shaded attention span

    events, tracks = at.dataframe[1].value, at.dataframe[2].value
    assert list(tracks["Track"]) == ["#1", "#2", "#3", "#4"]
    # 20 s happy then 40 s sad: each track's label comes with its mean probability.
    assert list(tracks["Dominant emotion"]) == ["sad (48%)"] * 4
    assert "look sad" in events["Reason"].iloc[0]

    at.selectbox(key="history_session").set_value(1).run()
    assert "Monday maths" in texts(at.subheader)
    assert {m.label: m.value for m in at.metric}["Dominant mood"] == "happy (100% of faces)"


def test_html_and_markdown_in_names_are_shown_as_plain_text(app_env: Settings, store: Store) -> None:
    seed_session(store, PAYLOAD, class_label="<b>7B</b>")
    at = page_test("history").run()
    assert not at.exception
    # Tables and the selector show the name verbatim, as text.
    assert at.dataframe[0].value["Name"].iloc[0] == PAYLOAD
    assert at.dataframe[0].value["Class"].iloc[0] == "<b>7B</b>"
    assert PAYLOAD in at.selectbox(key="history_session").options[0]
    assert not at.get("html")
    for element in markdown_elements(at):
        assert not getattr(element.proto, "allow_html", False), element
        body = str(element.value)
        # Escaped: no raw tag, link or emphasis survives in any markdown that was rendered.
        assert not re.search(r"(?<!\\)<", body), body
        assert "](javascript" not in body and "**bold**" not in body
    # ...and the escaped heading still reads as the name.
    assert PAYLOAD in texts(at.subheader)


def test_downloads_csv_and_parquet_of_the_session(app_env: Settings, store: Store, downloads: dict) -> None:
    session_id = seed_session(store, "Export me", seconds=12)
    at = page_test("history").run()
    assert not at.exception
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]

    csv = pd.read_csv(io.BytesIO(downloads[f"classmood-session-{session_id}.csv"]))
    parquet = pd.read_parquet(io.BytesIO(downloads[f"classmood-session-{session_id}.parquet"]))
    expected = store.session_buckets(session_id)
    for frame in (csv, parquet):
        assert len(frame) == 12
        assert {"t", "faces", "p_happy", "share_happy", "needs_attention"} <= set(frame.columns)
        assert list(frame["t"]) == list(expected["t"])
        assert frame["share_happy"].tolist() == pytest.approx([1.0] * 12)


def test_delete_needs_confirmation(app_env: Settings, store: Store) -> None:
    keep = seed_session(store, "Keep me", started_at=datetime.now(UTC) - timedelta(hours=1))
    doomed = seed_session(store, "Delete me")
    at = page_test("history").run()
    assert "Delete me" in texts(at.subheader)
    delete = at.button(key=f"delete_{doomed}")
    assert delete.disabled  # no accidental one-click deletion

    at.checkbox(key=f"confirm_delete_{doomed}").check().run()
    at = at.button(key=f"delete_{doomed}").click().run()
    assert not at.exception
    assert "Session deleted" in texts(at.success)
    assert list(store.list_sessions()["id"]) == [keep]
    assert store.session_buckets(doomed).empty and store.session_tracks(doomed).empty
    assert list(at.dataframe[0].value["Name"]) == ["Keep me"]


def test_compare_two_sessions_side_by_side(app_env: Settings, store: Store) -> None:
    first = seed_session(store, "Calm class", emotion="neutral", started_at=datetime.now(UTC) - timedelta(days=1))
    seed_session(store, "Happy class", emotion="happy")
    at = page_test("history").run()
    at.selectbox(key="history_compare").set_value(first).run()
    assert not at.exception
    dominant = [m.value for m in at.metric if m.label == "Dominant mood"]
    # The detail metric, then the two compared columns: selected session first.
    assert dominant[-2:] == ["happy (100% of faces)", "neutral (100% of faces)"]
    assert len(chart_specs(at)) == 4 + 4  # detail charts + timeline and distribution per compared session


def test_analyst_password_gates_the_page(app_env: Settings, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    seed_session(store, "Secret session")
    monkeypatch.setenv("CLASSMOOD_ANALYST_PASSWORD", "letmein-analyst")
    get_settings.cache_clear()
    at = page_test("history").run()
    assert [b.label for b in at.button] == ["Unlock"]
    assert not at.dataframe
    assert "Secret session" not in str(at.main)

    at.text_input(key="password_analyst").set_value("wrong").run()
    at = at.button[0].click().run()
    assert "Wrong password" in texts(at.error)
    assert not at.dataframe

    at.text_input(key="password_analyst").set_value("letmein-analyst")
    at = at.button[0].click().run()
    assert not at.exception
    assert list(at.dataframe[0].value["Name"]) == ["Secret session"]


@SQLITE_ONLY
def test_unreachable_database_gives_a_clear_error(app_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A driver that is not installed, with a password that must never be shown.
    monkeypatch.setenv("CLASSMOOD_DATABASE_URL", "postgresql+psycopg://classmood:hunter2@db.invalid:5432/classmood")
    get_settings.cache_clear()
    at = page_test("history").run()
    assert not at.exception
    assert at.title[0].value == "History"
    message = texts(at.error)
    assert "Session database problem" in message and "cannot be opened or reached" in message
    assert "hunter2" not in message


@SQLITE_ONLY
def test_unopenable_sqlite_file_gives_a_clear_error(app_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = app_env.data_dir / "i-am-a-folder.db"
    folder.mkdir()
    monkeypatch.setenv("CLASSMOOD_DATABASE_URL", f"sqlite:///{folder}")
    get_settings.cache_clear()
    at = page_test("history").run()
    assert not at.exception
    assert "cannot be opened" in texts(at.error)


@SQLITE_ONLY
def test_read_only_database_still_lists_and_refuses_deletes(
    app_env: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = seed_session(store, "Read only")
    monkeypatch.setenv("CLASSMOOD_DATABASE_URL", f"sqlite:///file:{app_env.data_dir / 'classmood.db'}?mode=ro&uri=true")
    get_settings.cache_clear()
    at = page_test("history").run()
    assert not at.exception
    assert "could not be deleted" in texts(at.warning)  # the retention purge could not write
    assert list(at.dataframe[0].value["Name"]) == ["Read only"]  # reading still works
    at.checkbox(key=f"confirm_delete_{session_id}").check().run()
    at = at.button(key=f"delete_{session_id}").click().run()
    assert not at.exception
    assert "read-only" in texts(at.error)
    assert list(store.list_sessions()["name"]) == ["Read only"]


def test_retention_purge_runs_on_open_at_most_every_few_minutes(app_env: Settings, store: Store) -> None:
    old = datetime.now(UTC) - timedelta(days=app_env.retention_days + 5)
    seed_session(store, "Too old", started_at=old, ended_at=old + timedelta(minutes=50))
    seed_session(store, "Recent")
    at = page_test("history").run()
    assert not at.exception
    assert list(store.list_sessions()["name"]) == ["Recent"]
    assert list(at.dataframe[0].value["Name"]) == ["Recent"]
    assert "older than" in texts(at.get("toast"))

    # Within the purge interval, opening the page again does not purge again.
    seed_session(store, "Also old", started_at=old, ended_at=old + timedelta(minutes=50))
    at = page_test("history").run()
    assert sorted(store.list_sessions()["name"]) == ["Also old", "Recent"]


def test_purge_runs_when_marking_dead_sessions_fails(app_env: Settings, store: Store) -> None:
    """The retention purge that the privacy notice promises does not wait on the other maintenance step."""
    now = datetime.now(UTC)
    dead = store.create_session("Dead server", "7B", "live", started_at=now - timedelta(hours=1))
    old = now - timedelta(days=app_env.retention_days + 5)
    seed_session(store, "Too old", started_at=old, ended_at=old + timedelta(minutes=50))
    refuse(store.engine, "interrupted")
    at = page_test("history").run()
    assert not at.exception
    assert "could not be marked interrupted" in texts(at.warning)
    assert "older than" in texts(at.get("toast"))  # the purge ran and said so
    assert list(store.list_sessions()["name"]) == ["Dead server"]
    assert store.get_session(dead)["status"] == "running"


def test_dead_sessions_are_marked_when_the_purge_fails(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC)
    dead = store.create_session("Dead server", "7B", "live", started_at=now - timedelta(hours=1))
    old = now - timedelta(days=app_env.retention_days + 5)
    seed_session(store, "Too old", started_at=old, ended_at=old + timedelta(minutes=50))
    refuse(store.engine, "delete")
    at = page_test("history").run()
    assert not at.exception
    assert "could not be deleted" in texts(at.warning)
    assert "marked interrupted" not in texts(at.warning)
    assert store.get_session(dead)["status"] == "interrupted"
    assert sorted(at.dataframe[0].value["Name"]) == ["Dead server", "Too old"]


# Stands for one app server: a live session (stub detector, fake classifier) writing to the shared database.
APP_SERVER = """
import sys, time
import numpy as np
from fer_core.detect import FaceBox
from fer_core.session import LiveSession
from fer_core.settings import Settings
from fer_core.store import Store
from tests.doubles import FakeClassifier, StubDetector
url, name, label, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
frame = np.zeros((480, 640, 3), np.uint8)
# --- go ---
store = Store(url)
session = LiveSession(store, FakeClassifier(label), name=name, class_label="Scale-out",
                      settings=Settings(database_url=url))
session.pipeline.detector = StubDetector([FaceBox(40, 40, 120, 120), FaceBox(300, 60, 120, 120)])
end = time.time() + seconds
while time.time() < end:
    session.process_frame(frame, time.time())
    time.sleep(0.1)
session.stop()
print(session.session_id, session.last_error, flush=True)
"""


@pytest.mark.parametrize("app_backend", ["postgresql"])
def test_lists_sessions_that_two_servers_wrote_at_once(app_env: Settings) -> None:
    """Two processes open the new database at once (racing to create its tables) and stream together."""
    outputs = run_together(APP_SERVER, [[app_env.db_url, "Server A", "happy", "4"],
                                        [app_env.db_url, "Server B", "sad", "4"]])
    assert [out.split()[1] for out in outputs] == ["None", "None"]  # no store error in either

    at = page_test("history").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["Name"]) == ["Server A", "Server B"]
    assert set(table["Dominant mood"]) == {"happy", "sad"} and list(table["Faces seen"]) == [2, 2]

    store = Store(app_env.db_url)
    sessions = store.list_sessions()
    assert set(sessions["status"]) == {"completed"}
    first, second = sessions.iloc[0], sessions.iloc[1]
    assert first["started_at"] < second["ended_at"] and second["started_at"] < first["ended_at"]  # overlapping
    for session_id in sessions["id"]:
        assert len(store.session_buckets(int(session_id))) >= 4
    store.dispose()
