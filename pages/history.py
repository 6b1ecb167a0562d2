"""History page (analyst): stored sessions filtered by class and date, one in detail with its report and
exports, two compared, a class's trend over weeks, editing and deletion.

Everything comes from `fer_core.store.Store`; `pages.history_views` turns it into what is shown, and
this page only lays it out. User-given names are shown through st.dataframe / widgets / escaped
markdown, never as HTML.
"""

from __future__ import annotations

import io
import time
from datetime import time as day_time

import pandas as pd
import streamlit as st

from fer_core.store import Store, StoreError, run_maintenance, store_for
from pages import charts
from pages import history_views as views
from pages.class_support import upkeep
from pages.formatting import as_timestamp, format_time, viewer_timezone
from pages.formatting import escape_markdown as md
from pages.report import build_report, report_file_name
from pages.ui import PRIVACY_NOTICE, RESPONSIBLE_USE_SHORT, app_settings, role_unlocked

PURGE_EVERY_S = 300.0  # retention purge at most every 5 minutes per database
SELECTED_KEY = "history_session"
COMPARE_KEY = "history_compare"
CLASSES_KEY = "history_classes"
DATES_KEY = "history_dates"
TREND_KEY = "history_trend_class"
BULK_KEY = "history_bulk_delete"
FLASH_KEY = "history_flash"
TABLE_ROW_PX = 35  # st.dataframe's row height: a table this tall shows every row without scrolling
LINKED_KEY = "history_session_id"  # set by the Live page after it analysed a recording

settings = app_settings()
if not role_unlocked("app"):  # also here: a page opened by its own URL may run without dashboard.py
    st.stop()
TZ = viewer_timezone(st.context.timezone)  # tables show the viewer's clock, like the charts do

st.title("History")
if not role_unlocked("analyst"):
    st.stop()
st.caption(RESPONSIBLE_USE_SHORT)


@st.cache_resource(show_spinner=False)
def purge_clock() -> dict[str, float]:
    """When each database was last purged: shared by all browser sessions of this server."""
    return {}


def purge_if_due(store: Store, url: str) -> None:
    clock = purge_clock()
    if time.time() - clock.get(url, 0.0) < PURGE_EVERY_S:
        return
    clock[url] = time.time()  # set first: a failing (read-only) database is not retried on every rerun
    try:  # online classes: end idle ones, save ended ones (on its own: the steps below never wait on it)
        upkeep(settings)
    except StoreError as exc:
        st.warning(f"Online classes could not be looked after: {md(exc)}", icon=":material/groups:")
    # Two steps that each run and report on their own: the purge never waits on the other step.
    done = run_maintenance(store, settings.retention_days)
    if done.interrupted.error:
        st.warning(f"Live sessions whose server stopped could not be marked interrupted: {md(done.interrupted.error)}",
                   icon=":material/sync_problem:")
    if done.purged.error:  # e.g. a read-only database: the page stays usable for reading
        st.warning(f"Sessions older than {settings.retention_days} days could not be deleted: "
                   f"{md(done.purged.error)}", icon=":material/auto_delete:")
    elif done.purged.count:
        st.toast(f"Deleted {done.purged.count} session(s) older than {settings.retention_days} days (retention).")


def db_error(exc: StoreError) -> None:
    """StoreError messages say what failed and why, without SQL text or passwords."""
    st.error(f"Session database problem: {md(exc)}. Check that it is reachable (and writable to delete).",
             icon=":material/database:")


def flash(message: str) -> None:
    st.session_state[FLASH_KEY] = message


# --- small pieces --------------------------------------------------------------------------------


def session_label(row: pd.Series) -> str:
    """Selectbox text (rendered as plain text by Streamlit)."""
    return f"{row['name']} · {row['class_label'] or 'no class'} · {views.held_text(row, TZ)}"


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)  # frame.attrs (the session's metadata) go into the file's metadata
    return buffer.getvalue()


def read_session(store: Store, row: pd.Series) -> views.SessionData | None:
    try:
        return views.load_session(store, row)
    except StoreError as exc:
        db_error(exc)
        return None


def held_caption(data: views.SessionData) -> str:
    row = data.row
    if data.is_recording:
        held = views.held_text(row, TZ)
        when = f"recorded {held}" if held != "date not given" else "recording date not given (set it under Edit)"
        return f"Recording, {when}; analysed {format_time(row['started_at'], TZ)}. Times are video time."
    return f"{str(row['source']).capitalize()} session, started {format_time(row['started_at'], TZ)} ({TZ})."


# --- sections -------------------------------------------------------------------------------------


def session_charts(data: views.SessionData) -> None:
    buckets, markers = data.on_clock(data.buckets), data.on_clock(data.markers)
    events = data.on_clock(data.events, ("t", "t_start", "t_end"))
    st.altair_chart(charts.timeline_chart(buckets, clock=data.clock, markers=markers), width="stretch")
    left, right = st.columns(2)
    left.markdown("**Overall distribution** (faces-weighted)")
    left.altair_chart(charts.distribution_chart(buckets), width="stretch")
    right.markdown("**Faces in view**")
    right.altair_chart(charts.faces_chart(buckets, height=charts.BAR_HEIGHT - 40, clock=data.clock,
                                          markers=markers), width="stretch")
    st.markdown("**Needs attention** (negative share; shaded where the signal fired)")
    st.altair_chart(charts.attention_chart(buckets, events, event_label_column="reason", clock=data.clock,
                                           markers=markers), width="stretch")


def detail_section(data: views.SessionData) -> None:
    row = data.row
    st.subheader(md(row["name"]))
    st.caption(f"Class: {md(row['class_label'] or '–')} · {md(held_caption(data))}")
    st.caption(f"Model: {md(views.model_text(data.provenance))} · Settings: {md(views.settings_text(data.provenance))}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Duration", views.short_duration(views.duration_seconds(row)), help=views.duration_text(row))
    c2.metric("Faces seen", f"{int(row['faces_seen'] or 0)}", help="Most faces in view in any one second.")
    dominant = data.dominant
    c3.metric("Dominant mood", dominant or "–",
              delta=f"{data.distribution[dominant]:.0%} of faces" if dominant else None,
              delta_color="off", delta_arrow="off", help="The largest share in the overall distribution below.")
    attention = int((data.events["kind"] == "needs_attention").sum()) if len(data.events) else 0
    flagged = int(data.buckets["needs_attention"].sum()) if len(data.buckets) else 0
    c4.metric("Needs attention", f"{attention}×", delta=f"{flagged} s flagged", delta_color="off",
              delta_arrow="off")

    if data.buckets.empty:
        st.info("This session has no per-second figures (it ended before its first full second).")
    elif not data.faces_seen:
        st.info(f"No faces were seen in this session ({len(data.buckets)} s analysed), so there is no mood "
                "to chart.", icon=":material/face_retouching_off:")
    else:
        session_charts(data)
    if row["source"] == "class":
        st.markdown("**Students connected** (an online class: class-level figures only; expressions are kept only "
                    "for seconds when enough students' faces were in view)")
        st.altair_chart(charts.students_chart(data.buckets), width="stretch")
    if not data.events.empty:
        st.dataframe(views.events_view(data, TZ), hide_index=True, width="stretch")
    if not data.markers.empty:
        st.markdown("**Lesson markers**")
        st.dataframe(views.markers_view(data, TZ), hide_index=True, width="stretch")

    st.markdown("**Tracks** (anonymous; numbers are new in every session)")
    if row["source"] == "class":
        st.caption("Online classes store no per-face or per-student rows, only class-level seconds.")
    elif data.tracks.empty:
        st.caption("No face tracks were stored for this session.")
    else:
        st.dataframe(
            views.tracks_view(data, TZ),
            hide_index=True,
            width="stretch",
            column_config={"Confidence": st.column_config.ProgressColumn(
                format="%d%%", min_value=0, max_value=100,
                help="Mean probability of the dominant emotion over the seconds the face was in view.")},
        )
    export_section(data)


def export_section(data: views.SessionData) -> None:
    session_id = data.session_id
    st.markdown("**Export** (the report; the per-second figures with the session's name, class, events and markers)")
    d0, d1, d2, _ = st.columns([1.3, 1, 1, 1.5])
    d0.download_button("Report (HTML)", lambda: build_report(data, TZ).encode("utf-8"),
                       file_name=report_file_name(data), mime="text/html", icon=":material/description:",
                       key="download_report", type="primary",
                       help="One file with the charts inside: opens without the internet and prints to PDF.")
    table = views.export_frame(data)
    d1.download_button("CSV", to_csv(table), file_name=f"classmood-session-{session_id}.csv",
                       mime="text/csv", icon=":material/download:", key="download_csv")
    d2.download_button("Parquet", to_parquet(table), file_name=f"classmood-session-{session_id}.parquet",
                       mime="application/vnd.apache.parquet", icon=":material/download:", key="download_parquet")


def compare_section(store: Store, sessions: pd.DataFrame, first: views.SessionData, labels: dict[int, str]) -> None:
    others = [int(sid) for sid in sessions["id"] if int(sid) != first.session_id]
    if not others:
        st.caption("Store a second session to compare two.")
        return
    other = st.selectbox("Compare with", [None, *others], key=COMPARE_KEY,
                         format_func=lambda sid: "(choose a session)" if sid is None else labels[sid])
    if other is None:
        return
    second = read_session(store, sessions.loc[sessions["id"] == other].iloc[0])
    if second is None:
        return
    names = (str(first.row["name"]), str(second.row["name"]))
    if names[0] == names[1]:
        names = (f"{names[0]} ({views.held_text(first.row, TZ)})", f"{names[1]} ({views.held_text(second.row, TZ)})")
    same = views.same_model(first, second)
    if same is False:
        st.warning(f"These sessions were made with different models ({md(views.model_text(first.provenance))} and "
                   f"{md(views.model_text(second.provenance))}): part of any difference comes from the models, "
                   "not the classes.", icon=":material/compare_arrows:")
    elif same is None:
        st.info("At least one of these sessions did not record its model, so whether the same model made both "
                "is unknown.", icon=":material/help:")
    table = views.comparison_table(first, second, names)
    st.dataframe(table, hide_index=True, width="stretch", height=TABLE_ROW_PX * (len(table) + 1) + 3)
    st.altair_chart(charts.compare_distribution_chart({names[0]: first.distribution, names[1]: second.distribution},
                                                      title="Overall distribution"), width="stretch")
    starts = {name: float(data.buckets["t"].min()) if len(data.buckets) else 0.0
              for name, data in zip(names, (first, second), strict=True)}
    from_start = {name: charts.on_video_clock(data.buckets, starts[name])
                  for name, data in zip(names, (first, second), strict=True)}
    markers = pd.concat([charts.on_video_clock(data.markers, starts[name]).assign(
        label=lambda m, name=name: name + ": " + m["label"].astype(str))
        for name, data in zip(names, (first, second), strict=True)], ignore_index=True)
    st.altair_chart(charts.compare_timeline_chart(from_start, markers=markers,
                                                  title="Negative share from each session's start"), width="stretch")


def trend_section(sessions: pd.DataFrame, figures: pd.DataFrame, selected: pd.Series) -> None:
    options = views.class_options(sessions)
    default = selected["class_label"] or views.NO_CLASS
    if st.session_state.get(TREND_KEY) not in options:
        st.session_state[TREND_KEY] = default if default in options else options[0]
    chosen = st.selectbox("Class", options, key=TREND_KEY)
    of_class = views.filter_sessions(sessions, [chosen], None, TZ)
    trend = views.trend_frame(of_class, figures)
    st.caption(f"{len(trend)} session(s) of {md(chosen)} within the dates chosen above, in date order. Each "
               "session's figures are over all its seconds, faces-weighted, as in its details.")
    if trend.empty:
        return
    st.altair_chart(charts.trend_mood_chart(trend, title="Dominant mood"), width="stretch")
    st.altair_chart(charts.trend_negative_chart(trend, title="Negative share"), width="stretch")
    st.altair_chart(charts.trend_attention_chart(trend, title="Needs attention (times per session)"),
                    width="stretch")
    table = pd.DataFrame({
        "Date": [views.held_text(row, TZ) for _, row in of_class.set_index("id").loc[trend["id"]].reset_index()
                 .iterrows()],
        "Session": trend["name"].astype(str),
        "Dominant mood": trend["dominant"].fillna("–").astype(str),
        "Negative share": [f"{v:.0%}" if pd.notna(d) else "–" for v, d in zip(trend["negative_share"],
                                                                               trend["dominant"], strict=True)],
        "Needs attention": trend["attention_events"].astype(int),
    })
    st.dataframe(table, hide_index=True, width="stretch")


def edit_section(store: Store, data: views.SessionData) -> None:
    row, session_id = data.row, data.session_id
    with st.form(f"edit_{session_id}", border=True):
        st.markdown("**Edit this session**")
        name = st.text_input("Name", value=str(row["name"]), max_chars=200, key=f"edit_name_{session_id}")
        class_label = st.text_input("Class", value=str(row["class_label"] or ""), max_chars=200,
                                    key=f"edit_class_{session_id}")
        day = at = None
        if data.is_recording:
            recorded = as_timestamp(row.get("recorded_at"))
            local = recorded.tz_convert(TZ) if recorded is not None else None
            left, right = st.columns(2)
            day = left.date_input("Recorded on", value=local.date() if local is not None else None,
                                  key=f"edit_day_{session_id}", help="Leave empty when it is not known.")
            at = right.time_input("at", value=local.time() if local is not None else day_time(9, 0),
                                  key=f"edit_time_{session_id}", help=f"Time zone {TZ}.")
        saved = st.form_submit_button("Save changes", type="primary", icon=":material/save:")
    if not saved:
        return
    if not name.strip():
        st.error("A session needs a name.")
        return
    changes: dict = {"name": name, "class_label": class_label}
    if data.is_recording:
        changes["recorded_at"] = views.local_datetime(day, at or day_time(0, 0), TZ) if day is not None else None
    try:
        store.update_session(session_id, **changes)
    except StoreError as exc:
        db_error(exc)
        return
    flash("Session changed.")
    st.rerun()


def delete_section(store: Store, session: pd.Series) -> None:
    session_id = int(session["id"])  # numpy ints would bind as blobs in SQLite and match nothing
    with st.expander("Delete this session", icon=":material/delete:"):
        st.write("Deletes its per-second figures, tracks, events and markers for good. This cannot be undone.")
        confirmed = st.checkbox("Yes, delete this session permanently", key=f"confirm_delete_{session_id}")
        if st.button("Delete session", type="primary", disabled=not confirmed, key=f"delete_{session_id}"):
            try:
                store.delete_session(session_id)
            except StoreError as exc:
                db_error(exc)
                return
            st.session_state.pop(SELECTED_KEY, None)
            st.session_state.pop(COMPARE_KEY, None)
            flash("Session deleted.")
            st.rerun()


def delete_several_section(store: Store, sessions: pd.DataFrame, labels: dict[int, str]) -> None:
    st.markdown("**Delete several sessions**")
    chosen = st.multiselect("Sessions to delete", [int(i) for i in sessions["id"]], key=BULK_KEY,
                            format_func=labels.__getitem__, placeholder="Choose sessions")
    confirmed = st.checkbox(f"Yes, delete {len(chosen)} session(s) and all their figures permanently",
                            key="confirm_bulk_delete", disabled=not chosen)
    if st.button("Delete sessions", type="primary", disabled=not (chosen and confirmed), key="bulk_delete",
                 icon=":material/delete_sweep:"):
        try:
            removed = store.delete_sessions(chosen)
        except StoreError as exc:
            db_error(exc)
            return
        for key in (SELECTED_KEY, COMPARE_KEY, BULK_KEY, "confirm_bulk_delete"):
            st.session_state.pop(key, None)
        flash(f"Deleted {removed} session(s).")
        st.rerun()


def filters(sessions: pd.DataFrame) -> pd.DataFrame:
    """Class and date-range filters; the sessions they keep."""
    days = views.held_dates(sessions, TZ)
    first, last = min(days), max(days)
    if st.session_state.get(DATES_KEY + "_span") != (first, last):  # sessions came, went or were redated
        st.session_state[DATES_KEY + "_span"] = (first, last)
        st.session_state.pop(DATES_KEY, None)  # back to every date, and never outside the new span
    left, right = st.columns([3, 2])
    classes = left.multiselect("Classes", views.class_options(sessions), key=CLASSES_KEY,
                               placeholder="All classes")
    picked = right.date_input("Held between", value=(first, last), min_value=first, max_value=last, key=DATES_KEY,
                              format="YYYY-MM-DD")
    dates = (picked[0], picked[-1]) if isinstance(picked, tuple | list) and picked else None
    return views.filter_sessions(sessions, classes, dates, TZ)


# --- page -------------------------------------------------------------------------------------------

if message := st.session_state.pop(FLASH_KEY, None):
    st.success(message)

try:
    store = store_for(settings)
    purge_if_due(store, settings.db_url)
    all_sessions = store.list_sessions()
    figures = store.session_figures()
except StoreError as exc:
    db_error(exc)
    st.stop()

if all_sessions.empty:
    st.info(
        "No sessions stored yet. Run a class on the **Live class** page (or analyse a recording with "
        "`python -m fer_core.analyze`); its per-second figures appear here when it ends. "
        f"Sessions older than {settings.retention_days} days are deleted automatically.",
        icon=":material/history:",
    )
    st.caption(PRIVACY_NOTICE)
    st.stop()

st.subheader("Sessions")
sessions = filters(all_sessions)
if sessions.empty:
    st.info("No session matches these filters.", icon=":material/filter_alt_off:")
    st.stop()
st.dataframe(views.sessions_view(sessions, figures, TZ), hide_index=True, width="stretch",
             column_config={"Date": st.column_config.TextColumn(help=f"When the class took place, time zone {TZ}")})
st.caption(f"{len(sessions)} of {len(all_sessions)} session(s), latest first. Sessions are kept for "
           f"{settings.retention_days} days after they were stored, then deleted automatically.")

labels = {int(row["id"]): session_label(row) for _, row in sessions.iterrows()}
ids = list(labels)
if (linked := st.session_state.pop(LINKED_KEY, None)) in ids:
    st.session_state[SELECTED_KEY] = linked
if st.session_state.get(SELECTED_KEY) not in ids:
    st.session_state[SELECTED_KEY] = ids[0]
selected = st.selectbox("Session", ids, key=SELECTED_KEY, format_func=labels.__getitem__)
session = sessions.loc[sessions["id"] == selected].iloc[0]
data = read_session(store, session)

detail_tab, compare_tab, trend_tab, edit_tab = st.tabs(["Details", "Compare", "Class trend", "Edit and delete"])
with detail_tab:
    if data is not None:
        detail_section(data)
with compare_tab:
    if data is not None:
        compare_section(store, sessions, data, labels)
with trend_tab:
    trend_section(sessions, figures, session)
with edit_tab:
    if data is not None:
        edit_section(store, data)
    delete_section(store, session)
    delete_several_section(store, sessions, labels)
