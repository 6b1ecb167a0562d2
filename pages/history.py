"""History page (analyst): stored sessions, one in detail, exports, comparison, deletion.

Everything comes from `fer_core.store.Store`; this page only lays it out. User-given names
are shown through st.dataframe / widgets / escaped markdown, never as HTML.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pandas as pd
import streamlit as st

from fer_core.aggregate import overall_distribution
from fer_core.store import Store, StoreError, run_maintenance, store_for
from pages import charts
from pages.class_support import upkeep
from pages.formatting import as_timestamp, format_duration, format_time, to_local, viewer_timezone
from pages.formatting import escape_markdown as md
from pages.ui import PRIVACY_NOTICE, RESPONSIBLE_USE_SHORT, app_settings, role_unlocked

PURGE_EVERY_S = 300.0  # retention purge at most every 5 minutes per database
SELECTED_KEY = "history_session"
COMPARE_KEY = "history_compare"
FLASH_KEY = "history_flash"
LINKED_KEY = "history_session_id"  # set by the Live page after it analysed a recording

settings = app_settings()
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


# --- views of the store's frames ----------------------------------------------------------------


def session_label(row: pd.Series) -> str:
    """Selectbox text (rendered as plain text by Streamlit)."""
    return f"{row['name']} · {row['class_label'] or 'no class'} · {format_time(row['started_at'], TZ)}"


def duration_text(session: pd.Series) -> str:
    started, ended = as_timestamp(session["started_at"]), as_timestamp(session["ended_at"])
    if started is None or ended is None:
        return str(session.get("status") or "running")  # still open, or ended without closing
    return format_duration((ended - started).total_seconds())


def sessions_view(sessions: pd.DataFrame) -> pd.DataFrame:
    """The store's session rows as the table analysts read (user text stays plain cell text)."""
    return pd.DataFrame(
        {
            "Name": sessions["name"].astype(str),
            "Class": sessions["class_label"].fillna("").astype(str),
            "Started": to_local(sessions["started_at"], TZ),
            "Duration": [duration_text(row) for _, row in sessions.iterrows()],
            "Faces seen": sessions["faces_seen"],
            "Dominant mood": sessions["dominant_emotion"].fillna("–"),
            "Source": sessions["source"],
            "Status": sessions["status"],
        }
    )


def dominant_with_confidence(session: pd.Series, buckets: pd.DataFrame) -> str:
    """The session's dominant mood next to its share of faces over the session."""
    overall = overall_distribution(buckets)
    if overall.sum() <= 0:
        return "–"
    emotion = session.get("dominant_emotion") or overall.idxmax()  # open sessions have none stored yet
    return f"{emotion} ({overall[emotion]:.0%} of faces)"


def tracks_view(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per-track rows: anonymous number, time in view, dominant emotion next to its mean probability."""
    return pd.DataFrame(
        {
            "Track": [f"#{int(n)}" for n in tracks["track"]],
            "First seen": to_local(tracks["first_t"], TZ, unit="s"),
            "Seconds in view": tracks["seconds"].astype(int),
            "Dominant emotion": [
                f"{label} ({conf:.0%})" for label, conf in zip(tracks["dominant_emotion"], tracks["confidence"],
                                                              strict=True)
            ],
            "Confidence": tracks["confidence"].astype(float),
        }
    )


def events_view(events: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "From": to_local(events["t_start"], TZ, unit="s"),
            "To": to_local(events["t_end"], TZ, unit="s"),
            "Reason": events["reason"].astype(str),
        }
    )


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# --- sections -------------------------------------------------------------------------------------


def session_charts(buckets: pd.DataFrame, events: pd.DataFrame, *, compact: bool = False) -> None:
    st.altair_chart(charts.timeline_chart(buckets, height=200 if compact else charts.TIMELINE_HEIGHT),
                    width="stretch")
    if compact:
        st.altair_chart(charts.distribution_chart(buckets), width="stretch")
        return
    left, right = st.columns(2)
    left.markdown("**Overall distribution** (faces-weighted)")
    left.altair_chart(charts.distribution_chart(buckets), width="stretch")
    right.markdown("**Faces in view**")
    right.altair_chart(charts.faces_chart(buckets, height=charts.BAR_HEIGHT), width="stretch")
    st.markdown("**Needs attention** (negative share; shaded where the signal fired)")
    st.altair_chart(charts.attention_chart(buckets, events, event_label_column="reason"), width="stretch")


def detail_section(store: Store, session: pd.Series) -> None:
    session_id = int(session["id"])  # numpy ints would bind as blobs in SQLite and match nothing
    try:
        buckets = store.session_buckets(session_id)
        tracks = store.session_tracks(session_id)
        events = store.session_events(session_id)
    except StoreError as exc:
        db_error(exc)
        return

    st.subheader(md(session["name"]))
    st.caption(f"Class: {md(session['class_label'] or '–')} · Source: {md(session['source'])}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Duration", duration_text(session))
    c2.metric("Faces seen", f"{int(session['faces_seen'] or 0)}", help="Most faces in view in any one second.")
    c3.metric("Dominant mood", dominant_with_confidence(session, buckets))
    c4.metric("Needs attention", f"{len(events)} time(s)", help=f"{int(buckets['needs_attention'].sum())} s flagged")

    if buckets.empty:
        st.info("This session has no per-second figures (it ended before its first full second).")
    else:
        session_charts(buckets, events)
    if session["source"] == "class":
        st.markdown("**Students connected** (an online class: class-level figures only; expressions are kept only "
                    "for seconds when enough students' faces were in view)")
        st.altair_chart(charts.students_chart(buckets), width="stretch")
    if not events.empty:
        st.dataframe(events_view(events), hide_index=True, width="stretch")

    st.markdown("**Tracks** (anonymous; numbers are new in every session)")
    if session["source"] == "class":
        st.caption("Online classes store no per-face or per-student rows, only class-level seconds.")
    elif tracks.empty:
        st.caption("No face tracks were stored for this session.")
    else:
        st.dataframe(
            tracks_view(tracks),
            hide_index=True,
            width="stretch",
            column_config={"Confidence": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)},
        )

    st.markdown("**Export** (per-second figures)")
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Download CSV", to_csv(buckets), file_name=f"classmood-session-{session_id}.csv",
                       mime="text/csv", icon=":material/download:", key="download_csv")
    d2.download_button("Download Parquet", to_parquet(buckets), file_name=f"classmood-session-{session_id}.parquet",
                       mime="application/vnd.apache.parquet", icon=":material/download:", key="download_parquet")


def compare_section(store: Store, sessions: pd.DataFrame, selected: Any, labels: dict[Any, str]) -> None:
    others = [int(sid) for sid in sessions["id"] if sid != selected]
    if not others:
        st.caption("Store a second session to compare two side by side.")
        return
    other = st.selectbox("Compare with", [None, *others], key=COMPARE_KEY,
                         format_func=lambda sid: "(choose a session)" if sid is None else labels[sid])
    if other is None:
        return
    columns = st.columns(2)
    for column, sid in zip(columns, (selected, other), strict=True):
        row = sessions.loc[sessions["id"] == sid].iloc[0]
        with column:
            st.markdown(f"**{md(row['name'])}** · {md(format_time(row['started_at'], TZ))}")
            try:
                buckets = store.session_buckets(sid)
                events = store.session_events(sid)
            except StoreError as exc:
                db_error(exc)
                continue
            st.metric("Dominant mood", dominant_with_confidence(row, buckets))
            session_charts(buckets, events, compact=True)


def delete_section(store: Store, session: pd.Series) -> None:
    session_id = int(session["id"])  # numpy ints would bind as blobs in SQLite and match nothing
    with st.expander("Delete this session", icon=":material/delete:"):
        st.write("Deletes its per-second figures, tracks and events for good. This cannot be undone.")
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


# --- page -------------------------------------------------------------------------------------------

if message := st.session_state.pop(FLASH_KEY, None):
    st.success(message)

try:
    store = store_for(settings)
    purge_if_due(store, settings.db_url)
    sessions = store.list_sessions()
except StoreError as exc:
    db_error(exc)
    st.stop()

if sessions.empty:
    st.info(
        "No sessions stored yet. Run a class on the **Live class** page (or analyse a recording with "
        "`python -m fer_core.analyze`); its per-second figures appear here when it ends. "
        f"Sessions older than {settings.retention_days} days are deleted automatically.",
        icon=":material/history:",
    )
    st.caption(PRIVACY_NOTICE)
    st.stop()

st.subheader("Sessions")
st.dataframe(
    sessions_view(sessions),
    hide_index=True,
    width="stretch",
    column_config={"Started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", help=f"Time zone {TZ}")},
)
st.caption(f"Sessions are kept for {settings.retention_days} days, then deleted automatically.")

labels = {int(row["id"]): session_label(row) for _, row in sessions.iterrows()}
ids = list(labels)
if (linked := st.session_state.pop(LINKED_KEY, None)) in ids:
    st.session_state[SELECTED_KEY] = linked
if st.session_state.get(SELECTED_KEY) not in ids:
    st.session_state[SELECTED_KEY] = ids[0]
selected = st.selectbox("Session", ids, key=SELECTED_KEY, format_func=labels.__getitem__)
session = sessions.loc[sessions["id"] == selected].iloc[0]

detail_tab, compare_tab = st.tabs(["Details", "Compare"])
with detail_tab:
    detail_section(store, session)
    delete_section(store, session)
with compare_tab:
    compare_section(store, sessions, selected, labels)
