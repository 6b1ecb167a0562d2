"""AppTests of the History page over a seeded temporary database: SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, time, timedelta

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


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The one table on the page that has this column."""
    (frame,) = [d.value for d in at.dataframe if column in d.value.columns]
    return frame


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
    metrics = {m.label: m for m in at.metric}
    # Short values (long ones were cut off in the browser); the share sits under the label.
    assert metrics["Dominant mood"].value == "sad" and metrics["Dominant mood"].delta == "67% of faces"
    assert metrics["Needs attention"].value == "1×" and metrics["Needs attention"].delta == "30 s flagged"
    assert metrics["Duration"].value == "1 min"
    specs = chart_specs(at)
    assert len(specs) == 4 + 3  # timeline, distribution, faces, attention; the class trend tab's three
    assert any('"Share of faces"' in s and '"step-after"' in s for s in specs)
    assert any('"Faces"' in s and '"line"' in s for s in specs)
    assert any('"Negative share"' in s and "rect" in s for s in specs)  # shaded attention span
    assert all('"fit-x"' in s for s in specs)  # plots keep their height (see pages/charts.py)

    events, tracks = at.dataframe[1].value, at.dataframe[2].value
    assert list(tracks["Track"]) == ["#1", "#2", "#3", "#4"]
    # 20 s happy then 40 s sad: each track's label, and its mean probability once, as a whole percentage.
    assert list(tracks["Dominant emotion"]) == ["sad"] * 4
    assert list(tracks["Confidence"]) == [48] * 4
    # Times read as times: a recording's in video time from its first frame.
    assert list(tracks["First seen"]) == ["0:00:00"] * 4
    assert events.to_dict("records")[0] == {"From": "0:00:30", "To": "0:01:00",
                                            "Reason": "more than half of the faces look sad for 10 s"}

    at.selectbox(key="history_session").set_value(1).run()
    assert "Monday maths" in texts(at.subheader)
    dominant = next(m for m in at.metric if m.label == "Dominant mood")
    assert (dominant.value, dominant.delta) == ("happy", "100% of faces")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", at.dataframe[1].value["First seen"].iloc[0])  # a live session: clock


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


def test_downloads_carry_name_class_events_and_markers(app_env: Settings, store: Store, downloads: dict) -> None:
    session_id = seed_session(store, "Export me", class_label="9C", seconds=30, attention_from=5)
    t0 = int(store.session_buckets(session_id)["t"].iloc[0])
    store.add_marker(session_id, t0 + 3.4, "quiz starts")
    at = page_test("history").run()
    assert not at.exception
    assert [b.label for b in at.get("download_button")] == ["Report (HTML)", "CSV", "Parquet"]

    csv = pd.read_csv(io.BytesIO(downloads[f"classmood-session-{session_id}.csv"]), keep_default_na=False)
    parquet = pd.read_parquet(io.BytesIO(downloads[f"classmood-session-{session_id}.parquet"]))
    expected = store.session_buckets(session_id)
    for frame in (csv, parquet):
        assert len(frame) == 30
        assert {"session", "class", "t", "faces", "p_happy", "share_happy", "needs_attention", "event",
                "marker"} <= set(frame.columns)
        assert set(frame["session"]) == {"Export me"} and set(frame["class"]) == {"9C"}
        assert list(frame["t"]) == list(expected["t"])
        assert frame.loc[frame["t"] == t0 + 3, "marker"].tolist() == ["quiz starts"]
        assert frame.loc[frame["t"] == t0 + 15, "event"].tolist() == ["more than half of the faces look sad for 10 s"]
    assert "Export me" in parquet.attrs["classmood_session"]


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


def test_compare_overlays_two_sessions_with_their_differences(app_env: Settings, store: Store) -> None:
    first = seed_session(store, "Calm class", emotion="neutral", started_at=datetime.now(UTC) - timedelta(days=1))
    store.add_marker(first, int(store.session_buckets(first)["t"].iloc[0]) + 12, "quiz")
    seed_session(store, "Happy class", emotion="happy", attention_from=20)
    at = page_test("history").run()
    at.selectbox(key="history_compare").set_value(first).run()
    assert not at.exception
    table = frame_with(at, "Figure").set_index("Figure")
    assert list(table.columns) == ["Happy class", "Calm class", "Difference"]
    assert table.loc["Dominant mood"].tolist() == ["happy", "neutral", "differs"]
    assert table.loc["Share neutral"].tolist() == ["0%", "100%", "+100 points"]
    assert table.loc["Needs attention (times)"].tolist() == ["1", "0", "-1"]
    specs = chart_specs(at)
    assert len(specs) == 4 + 2 + 3  # details; the overlaid distribution and negative share; the class trend
    assert sum('"Happy class"' in s and '"Calm class"' in s for s in specs) == 2
    # The calm class's marker is on the overlay, named by its session, 12 s from its start.
    overlay = next(s for s in specs if "from each session's start" in s)
    assert '"rule"' in overlay and '"Marker"' in overlay


def test_compare_warns_when_two_sessions_used_different_models(app_env: Settings, store: Store) -> None:
    from fer_core.store import Provenance

    old = store.create_session("Old model", "7B", started_at=datetime.now(UTC) - timedelta(days=1),
                               provenance=Provenance("fer-inceptionv3", "a" * 64, {"backend": "litert"}))
    store.close_session(old)
    store.create_session("New model", "7B", provenance=Provenance("erase-a/export", "b" * 64, {"backend": "litert"}))
    at = page_test("history").run()
    assert "Model: erase-a/export · bbbbbbbbbbbb" in texts(at.caption)
    assert list(at.dataframe[0].value["Model"]) == ["erase-a/export", "fer-inceptionv3"]
    at.selectbox(key="history_compare").set_value(old).run()
    assert not at.exception
    assert "different models" in texts(at.warning)
    assert "fer-inceptionv3 · aaaaaaaaaaaa" in texts(at.warning)


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


# --- issue 28: what the page shows must be right, classes over weeks, editing, markers ------------------------


def test_a_session_without_faces_says_so_instead_of_drawing_zeros(app_env: Settings, store: Store) -> None:
    from fer_core.aggregate import Bucket

    session_id = store.create_session("Empty room", "7B")
    t0 = int(datetime.now(UTC).timestamp())
    store.add_batch(session_id, [Bucket(t0 + k, 0, 3, 0, (float("nan"),) * 7, (0.0,) * 7, False) for k in range(20)])
    store.close_session(session_id)
    at = page_test("history").run()
    assert not at.exception
    assert "No faces were seen in this session (20 s analysed)" in texts(at.info)
    specs = chart_specs(at)
    assert not any('"bar"' in s and '"emotion"' in s for s in specs)  # no seven 0% bars
    assert not any('"Faces"' in s for s in specs)  # no flat 0.000000 axis
    assert {m.label: m.value for m in at.metric}["Dominant mood"] == "–"


def test_recordings_are_dated_and_sorted_by_when_they_were_recorded(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC)
    filmed = seed_session(store, "Filmed in October", source="recording", started_at=now)
    store.update_session(filmed, recorded_at=datetime(2026, 10, 5, 9, 30, tzinfo=UTC))
    seed_session(store, "Undated film", source="recording", started_at=now - timedelta(minutes=5))
    seed_session(store, "Live yesterday", started_at=now - timedelta(days=1))
    at = page_test("history").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Name"]) == ["Undated film", "Live yesterday", "Filmed in October"]
    assert table["Date"].iloc[2] == "2026-10-05 09:30" and table["Date"].iloc[0] == "date not given"
    at.selectbox(key="history_session").set_value(filmed).run()
    assert "Recording, recorded 2026-10-05 09:30" in texts(at.caption)


def test_filter_by_class_and_date_range(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC).replace(hour=10)
    for week in range(4):
        seed_session(store, f"7B week {week + 1}", class_label="7B", started_at=now - timedelta(weeks=3 - week))
    seed_session(store, "8A only", class_label="8A", started_at=now - timedelta(days=2))
    seed_session(store, "Unlabelled", class_label="", started_at=now - timedelta(days=1))
    at = page_test("history").run()
    assert set(at.multiselect(key="history_classes").options) == {"7B", "8A", "(no class)"}
    at.multiselect(key="history_classes").select("7B").run()
    assert list(at.dataframe[0].value["Name"]) == ["7B week 4", "7B week 3", "7B week 2", "7B week 1"]
    two_weeks_ago = (now - timedelta(weeks=2)).date()
    at.date_input(key="history_dates").set_value((two_weeks_ago, now.date())).run()
    assert not at.exception
    assert list(at.dataframe[0].value["Name"]) == ["7B week 4", "7B week 3", "7B week 2"]
    assert "3 of 6 session(s)" in texts(at.caption)
    at.multiselect(key="history_classes").select("(no class)").unselect("7B").run()
    assert list(at.dataframe[0].value["Name"]) == ["Unlabelled"]


def test_a_class_trend_over_weeks(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC)
    seed_session(store, "Week 1", class_label="7B", started_at=now - timedelta(weeks=2), emotion="happy")
    seed_session(store, "Week 2", class_label="7B", started_at=now - timedelta(weeks=1), attention_from=10)
    seed_session(store, "Week 3", class_label="7B", started_at=now - timedelta(days=1), emotion="neutral")
    seed_session(store, "Other class", class_label="8A", started_at=now, emotion="surprise")
    at = page_test("history").run()
    at.selectbox(key="history_trend_class").set_value("7B").run()
    assert not at.exception
    trend = frame_with(at, "Negative share")
    assert trend.to_dict("records") == [
        {"Date": trend["Date"].iloc[0], "Session": "Week 1", "Dominant mood": "happy", "Negative share": "0%",
         "Needs attention": 0},
        {"Date": trend["Date"].iloc[1], "Session": "Week 2", "Dominant mood": "sad", "Negative share": "75%",
         "Needs attention": 1},
        {"Date": trend["Date"].iloc[2], "Session": "Week 3", "Dominant mood": "neutral", "Negative share": "0%",
         "Needs attention": 0},
    ]
    specs = chart_specs(at)
    assert any('"Dominant mood"' in s and '"held_at"' in s for s in specs)
    assert any('"Negative share"' in s and '"held_at"' in s for s in specs)
    assert any('"Times"' in s and '"held_at"' in s for s in specs)


def test_rename_reclass_and_redate_a_session(app_env: Settings, store: Store) -> None:
    session_id = seed_session(store, "IMG_0042", class_label="", source="recording")
    at = page_test("history").run()
    at.text_input(key=f"edit_name_{session_id}").set_value("Fractions, week 3")
    at.text_input(key=f"edit_class_{session_id}").set_value("7B")
    at.date_input(key=f"edit_day_{session_id}").set_value(datetime(2026, 11, 3).date())
    at.time_input(key=f"edit_time_{session_id}").set_value(time(8, 45))
    at = at.button[next(i for i, b in enumerate(at.button) if b.label == "Save changes")].click().run()
    assert not at.exception
    assert "Session changed" in texts(at.success)
    row = store.get_session(session_id)
    assert (row["name"], row["class_label"]) == ("Fractions, week 3", "7B")
    assert row["recorded_at"] == datetime(2026, 11, 3, 8, 45, tzinfo=UTC)  # the viewer's zone is UTC here
    assert list(at.dataframe[0].value["Name"]) == ["Fractions, week 3"]


def test_delete_several_sessions_after_confirming(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC)
    ids = [seed_session(store, f"Session {i}", started_at=now - timedelta(hours=i)) for i in range(4)]
    at = page_test("history").run()
    assert at.button(key="bulk_delete").disabled
    at.multiselect(key="history_bulk_delete").select(ids[1]).select(ids[3]).run()
    assert at.button(key="bulk_delete").disabled  # chosen, not yet confirmed
    assert "delete 2 session(s)" in at.checkbox(key="confirm_bulk_delete").label
    at.checkbox(key="confirm_bulk_delete").check().run()
    at = at.button(key="bulk_delete").click().run()
    assert not at.exception
    assert "Deleted 2 session(s)" in texts(at.success)
    assert sorted(store.list_sessions()["id"]) == [ids[0], ids[2]]
    assert store.session_buckets(ids[1]).empty


def test_lesson_markers_show_on_every_timeline_and_in_a_table(app_env: Settings, store: Store) -> None:
    session_id = seed_session(store, "With markers", seconds=60)
    t0 = int(store.session_buckets(session_id)["t"].iloc[0])
    store.add_marker(session_id, t0 + 12, "quiz starts")
    store.add_marker(session_id, t0 + 40, "group work")
    at = page_test("history").run()
    assert not at.exception
    markers = frame_with(at, "Marker")
    assert list(markers["Marker"]) == ["quiz starts", "group work"]
    timelines = [s for s in chart_specs(at) if '"t"' in s and '"held_at"' not in s]
    assert len(timelines) == 3  # mood, faces, negative share
    assert all('"Marker"' in s and '"rule"' in s for s in timelines)


def test_the_date_filter_widens_when_an_earlier_session_appears(app_env: Settings, store: Store) -> None:
    now = datetime.now(UTC)
    seed_session(store, "This week", started_at=now - timedelta(days=2))
    at = page_test("history").run()
    filmed = seed_session(store, "Filmed last month", source="recording", started_at=now)
    store.update_session(filmed, recorded_at=now - timedelta(days=30))
    at.run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["Name"]) == ["Filmed last month", "This week"]
