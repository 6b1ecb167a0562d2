"""Live class (the instructor): webcam over WebRTC, live class-mood charts, or a recording."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import av
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from fer_core.live import LiveController
from fer_core.model_io import ModelError
from fer_core.store import StoreError
from pages import charts, online_class
from pages.charts import on_video_clock
from pages.formatting import viewer_timezone
from pages.history_views import local_datetime
from pages.live_support import (
    analyse_upload,
    check_upload,
    confidence_note,
    face_rows,
    now_caption,
    open_live_session,
    recording_date_problem,
    rtc_configuration,
    sensitivity_levels,
)
from pages.ui import PRIVACY_NOTICE, RESPONSIBLE_USE_SHORT, app_settings, role_unlocked

if TYPE_CHECKING:
    from fer_core.session import LiveSession

CHART_REFRESH_S = 1.0
LIVE_WINDOW_S = 300  # the charts show the last five minutes

settings = app_settings()
if not role_unlocked("app"):  # also here: a page opened by its own URL may run without dashboard.py
    st.stop()
TZ = viewer_timezone(st.context.timezone)
levels = sensitivity_levels(settings)
st.title("Live class")
st.caption("Class-level mood from the faces in view. Numbers only: no video or face image is stored.")
st.info(RESPONSIBLE_USE_SHORT, icon=":material/gavel:")

controller: LiveController = st.session_state.setdefault("live_controller", LiveController())


def marker_form(session: LiveSession) -> None:
    """The instructor marks a moment of the lesson; it shows on every timeline and in the report."""
    with st.form("live_marker", clear_on_submit=True, border=False):
        label = st.text_input("Lesson marker", max_chars=120, placeholder="e.g. quiz starts",
                              key="live_marker_label", help="Marks this moment on every timeline and in the report.")
        dropped = st.form_submit_button("Drop marker", icon=":material/flag:")
    if dropped:
        try:
            marker = session.add_marker(label)
        except ValueError:
            st.warning("Give the marker a label first.", icon=":material/flag:")
        except StoreError as exc:
            st.error(f"The marker could not be stored: {exc}", icon=":material/database:")
        else:
            st.toast(f"Marker “{marker.label}” dropped.", icon=":material/flag:")


webcam_tab, class_tab, recording_tab = st.tabs(["Webcam", "Online class", "Analyse a recording"])

with class_tab:
    online_class.render(settings)

with webcam_tab:
    with st.container(border=True):
        st.markdown(PRIVACY_NOTICE)
        consent = st.checkbox(
            "Everyone on camera has been told what is recorded and agrees.",
            key="live_consent",
            disabled=controller.active,
        )
    left, right = st.columns([2, 3], gap="large")
    with left:
        name_col, class_col = st.columns(2)
        name = name_col.text_input("Session name", max_chars=120, key="live_name", disabled=controller.active)
        class_label = class_col.text_input("Class", max_chars=120, key="live_class", disabled=controller.active)
        sensitivity = st.select_slider(
            "Face detector sensitivity",
            options=list(levels),
            value="normal",
            help="Higher finds smaller or less frontal faces but also more false boxes.",
            key="live_sensitivity",
        )
        smoothing = st.slider(
            "Label smoothing over time",
            0.0, 0.95, float(settings.smoothing), 0.05,
            help="Weight of each face's recent past: higher means steadier labels that react more slowly.",
            key="live_smoothing",
        )
        if controller.active and controller.session is not None:
            controller.session.configure(min_neighbors=levels[sensitivity], smoothing=smoothing)

        if not consent and not controller.active:
            st.warning("Confirm the consent notice above to enable the camera.", icon=":material/videocam_off:")
        else:

            def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
                # The video thread: only the pipeline, never st.*, never I/O.
                annotated = controller.process(frame.to_ndarray(format="bgr24"), time.time())
                return av.VideoFrame.from_ndarray(annotated, format="bgr24")

            ctx = webrtc_streamer(
                key="live",
                mode=WebRtcMode.SENDRECV,
                rtc_configuration=rtc_configuration(settings),
                media_stream_constraints={"video": True, "audio": False},
                video_frame_callback=video_frame_callback,
                on_video_ended=controller.stop,  # camera stopped or tab closed
                async_processing=True,
            )
            # Start/stop follow the component's state on each rerun (the sample app's pattern);
            # frames that arrive before the rerun pass through unanalysed.
            if ctx.state.playing and not controller.active:
                try:
                    controller.start(
                        lambda: open_live_session(
                            settings, name, class_label, levels[sensitivity], smoothing
                        )
                    )
                except (ModelError, StoreError) as exc:
                    st.error(f"Cannot start the analysis: {exc}", icon=":material/error:")
            elif not ctx.state.playing and controller.active:
                controller.stop()
        if controller.active and controller.session is not None:
            marker_form(controller.session)

    def live_panel() -> None:
        session = controller.session
        if controller.last_error:
            st.error(f"Analysis problem: {controller.last_error}")
        if session is None:
            if controller.last_session_id is not None:
                st.success("Session saved. Review it on the History page.", icon=":material/check_circle:")
                st.page_link("pages/history.py", label="Open History", icon=":material/history:")
            else:
                st.caption("Charts appear here once the stream runs.")
            return
        snap = session.snapshot()
        buckets = snap.aggregate.frame().tail(LIVE_WINDOW_S)
        now = snap.aggregate.now()  # every figure below comes from this one window
        a, b, c, d = st.columns(4)
        a.metric("Faces in view", now.faces)
        b.metric("Analysed frames/s", f"{snap.analysed_fps:.1f}")
        c.metric("Dominant mood", now.dominant or "—")
        d.metric("Needs attention", "yes" if now.attention else "no")
        st.caption(now_caption(now, TZ))
        if now.attention and now.attention_reason:
            st.warning(now.attention_reason, icon=":material/priority_high:")
        markers = pd.DataFrame({"t": [m.t for m in snap.markers], "label": [m.label for m in snap.markers]})
        st.altair_chart(charts.timeline_chart(buckets, title="Class mood, last 5 minutes", markers=markers),
                        width="stretch")
        left_chart, right_chart = st.columns(2)
        left_chart.altair_chart(charts.distribution_chart(now.distribution, title=f"Now (last {now.window_s} s)",
                                                          empty_message="No face in view"), width="stretch")
        right_chart.altair_chart(charts.faces_chart(buckets, title="Faces in view", markers=markers),
                                 width="stretch")
        with st.expander("Faces (anonymous track numbers)"):
            st.dataframe(face_rows(now.faces_now, {t.track_id: t.time_in_view for t in snap.tracks}),
                         hide_index=True, width="stretch")
            classifier = session.pipeline.classifier
            st.caption(confidence_note(classifier.temperature, classifier.flip_average))

    with right:
        st.subheader("Class mood")
        st.fragment(live_panel, run_every=CHART_REFRESH_S if controller.active else None)()

with recording_tab:
    st.markdown(
        "Upload a recorded class video. It is analysed on the server into a session, "
        "exactly like a live stream; the video itself is deleted right after analysis."
    )
    upload = st.file_uploader(
        "Class recording", type=["mp4", "mov", "avi", "mkv", "webm", "m4v"], key="recording_upload"
    )
    rec_name = st.text_input("Session name", max_chars=120, key="recording_name")
    rec_class = st.text_input("Class", max_chars=120, key="recording_class")
    day_col, time_col = st.columns(2)
    rec_day = day_col.date_input("Recorded on", value=None, key="recording_day", format="YYYY-MM-DD",
                                 help="When the class took place: History dates and sorts the session by it. "
                                      "Leave empty if you do not know; you can set it later on History.")
    rec_time = time_col.time_input("at", value=None, key="recording_time", help=f"Time zone {TZ}.")
    rec_consent = st.checkbox("The people in this recording agreed to its analysis.", key="recording_consent")
    if st.button("Analyse", type="primary", disabled=upload is None or not rec_consent):
        problem = check_upload(upload, settings) or recording_date_problem(rec_day, rec_time)
        if problem:
            st.error(problem)
        else:
            bar = st.progress(0.0, text="Analysing…")
            recorded_at = local_datetime(rec_day, rec_time, TZ) if rec_day and rec_time else None
            result = analyse_upload(upload, rec_name, rec_class, settings, bar, recorded_at=recorded_at)
            bar.empty()
            if result.error:
                st.error(result.error)
            else:
                st.session_state["history_session_id"] = result.session_id
                st.success(f"Analysed {result.seconds} s of video into a session.")
                video = on_video_clock(result.buckets, result.origin)  # plotted in video time, from 0:00
                st.altair_chart(charts.timeline_chart(video, title="Class mood", clock="video"), width="stretch")
                st.altair_chart(charts.distribution_chart(video, title="Overall"), width="stretch")
                st.page_link("pages/history.py", label="Open it on the History page", icon=":material/history:")
