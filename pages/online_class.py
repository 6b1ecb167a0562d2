"""The Live page's "Online class" tab (the instructor): open a class, share its code, watch one class-level view.

Class-level figures only: students connected, faces in view, and expressions only while at least the
class's minimum number of students contribute. Never a student's video, face or row. Closing this tab
does not end the class; it ends with "End class" or after the idle timeout.
"""

from __future__ import annotations

import contextlib
import time

import streamlit as st

from fer_core.class_store import ClassInfo, ClassNotFound
from fer_core.join_code import display
from fer_core.settings import Settings
from fer_core.store import StoreError
from pages import charts
from pages.class_support import class_store, class_view, join_link, upkeep
from pages.formatting import escape_markdown as md

CLASS_KEY = "online_class_id"
REFRESH_S = 1.0
INSTRUCTOR_HEARTBEAT_S = 5.0
UPKEEP_EVERY_S = 10.0


def _open_form(settings: Settings) -> None:
    with st.form("open_class", border=True):
        st.markdown("**Open an online class.** Students join from their own browsers with the code or link "
                    "you share; you see class-level figures only.")
        name_col, label_col = st.columns(2)
        name = name_col.text_input("Class name", max_chars=120, placeholder="e.g. Algebra, week 3")
        label = label_col.text_input("Class label", max_chars=120, placeholder="e.g. 9A")
        told = st.checkbox("My students have been told what ClassMood analyses, and joining is voluntary.")
        opened = st.form_submit_button("Open class", type="primary", icon=":material/groups:")
    if not opened:
        return
    if not told:
        st.error("Tell your students what is analysed first, and tick the box.", icon=":material/gavel:")
        return
    try:
        info = class_store(settings).open_class(
            name.strip() or "Online class", label.strip(), min_students=settings.class_min_students,
            max_students=settings.class_max_students, code_ttl_s=settings.class_code_ttl_hours * 3600.0)
    except StoreError as exc:
        st.error(f"Cannot open the class: {md(exc)}", icon=":material/database:")
        return
    st.session_state[CLASS_KEY] = info.id
    st.rerun()


def _open_classes(settings: Settings) -> None:
    try:
        running = class_store(settings).open_classes()
    except StoreError as exc:
        st.error(f"Cannot list open classes: {md(exc)}", icon=":material/database:")
        return
    if not running:
        return
    st.markdown("**Open classes** (still running; reopen one to watch it or end it)")
    for info in running:
        left, right = st.columns([4, 1])
        left.markdown(f"{md(info.name)} · {md(info.class_label or 'no label')} · code `{display(info.code)}`")
        if right.button("Watch", key=f"watch_class_{info.id}"):
            st.session_state[CLASS_KEY] = info.id
            st.rerun()


def _header(settings: Settings, info: ClassInfo) -> None:
    st.subheader(md(info.name) + (f" · {md(info.class_label)}" if info.class_label else ""))
    link = join_link(info.code, st.context.url, settings.public_url, st.get_option("server.baseUrlPath") or "")
    code_col, link_col = st.columns([1, 2])
    code_col.metric("Join code", display(info.code))
    with link_col:
        st.markdown("**Join link** (copy it into your call's chat)")
        st.code(link, language=None)
    st.caption(f"Students open the link, or the **Join a class** page and type the code. Expressions are shown "
               f"only while at least {info.min_students} students' faces are in view. At most "
               f"{info.max_students} students can join. The code works until "
               f"{info.expires_at.astimezone().strftime('%H:%M')} (server time).")


def _end_controls(settings: Settings, info: ClassInfo) -> None:
    end_col, away_col, _ = st.columns([1, 1, 3])
    with end_col.popover("End class", icon=":material/stop_circle:"):
        st.write("Ends the class for every student and saves its class-level figures to History.")
        if st.button("End the class now", type="primary", key=f"end_class_{info.id}"):
            try:
                class_store(settings).end_class(info.id, "instructor")
            except StoreError as exc:
                st.error(f"Cannot end the class: {md(exc)}")
                return
            st.rerun()
    if away_col.button("Stop watching", key=f"leave_view_{info.id}",
                       help="The class keeps running; reopen it from this tab."):
        st.session_state.pop(CLASS_KEY, None)
        st.rerun()


def _live_panel(settings: Settings, class_id: int) -> None:
    clock = st.session_state.setdefault("online_class_clock", {"heartbeat": 0.0, "upkeep": 0.0})
    now = time.time()
    store = class_store(settings)
    try:
        if now - clock["heartbeat"] >= INSTRUCTOR_HEARTBEAT_S:
            store.touch_instructor(class_id)
            clock["heartbeat"] = now
        view = class_view(settings, class_id)
    except StoreError as exc:
        st.error(f"Class figures cannot be read right now: {md(exc)}", icon=":material/database:")
        return
    if not view.info.is_open:
        if view.info.saved_at is None:  # saved once every process had time to flush its last seconds
            try:
                upkeep(settings)
                view = class_view(settings, class_id)
            except StoreError as exc:
                st.warning(f"Saving the class is waiting for the database: {md(exc)}")
        if view.info.saved_at is None:
            st.info("Class ended. Saving its figures…", icon=":material/hourglass_top:")
        else:
            st.success("Class ended and saved. Review it on the History page.", icon=":material/check_circle:")
            st.page_link("pages/history.py", label="Open History", icon=":material/history:")
        return
    if now - clock["upkeep"] >= UPKEEP_EVERY_S:
        clock["upkeep"] = now
        with contextlib.suppress(StoreError):  # the next refresh tries again
            upkeep(settings)

    a, b, c, d = st.columns(4)
    a.metric("Students connected", view.students_now)
    b.metric("Faces in view", view.faces_now, help="In the latest complete second, across all students.")
    if view.emotions_shown:
        distribution = view.distribution_now
        top = distribution.idxmax()
        c.metric("Dominant mood", f"{top} ({distribution[top]:.0%})",
                 help=f"Share of faces over the last {view.now_window_s} s.")
        d.metric("Needs attention", "yes" if view.attention else "no")
        if view.attention and view.attention_reason:
            st.warning(view.attention_reason, icon=":material/priority_high:")
        shown = view.buckets.dropna(subset=["p_happy"])
        st.altair_chart(charts.timeline_chart(shown, title="Class mood, last 5 minutes"), width="stretch")
        left, right = st.columns(2)
        left.altair_chart(charts.distribution_chart(distribution, title=f"Now (last {view.now_window_s} s)"),
                          width="stretch")
        right.altair_chart(charts.students_chart(view.buckets, title="Students and faces"), width="stretch")
    else:
        c.metric("Dominant mood", "withheld")
        d.metric("Needs attention", "–")
        st.info(view.withheld_reason, icon=":material/visibility_off:")
        st.altair_chart(charts.students_chart(view.buckets, title="Students and faces"), width="stretch")


def render(settings: Settings) -> None:
    class_id = st.session_state.get(CLASS_KEY)
    if class_id is None:
        _open_form(settings)
        _open_classes(settings)
        return
    try:
        info = class_store(settings).get_class(class_id)
    except ClassNotFound:
        st.session_state.pop(CLASS_KEY, None)
        st.warning("That class no longer exists (it was deleted).")
        return
    except StoreError as exc:
        st.error(f"Cannot read the class: {md(exc)}", icon=":material/database:")
        return
    if info.is_open:
        _header(settings, info)
        _end_controls(settings, info)
    else:
        st.subheader(md(info.name))
        if st.button("Open another class", key="another_class"):
            st.session_state.pop(CLASS_KEY, None)
            st.rerun()
    refresh = None if info.saved_at is not None else REFRESH_S
    st.fragment(lambda: _live_panel(settings, class_id), run_every=refresh)()
