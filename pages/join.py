"""Join an online class (a student): no login, no name; a consent box gates the camera.

The student's webcam streams to this server over WebRTC at low resolution and frame rate. Their frames
are analysed here and only added into class-level sums; nothing of them is shown to the instructor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import av
import streamlit as st
import streamlit.components.v1 as components
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from fer_core.class_hub import StudentStream
from fer_core.class_store import ClassError, ClassInfo
from fer_core.join_code import JoinCodeError, display, normalise
from fer_core.model_io import ModelError
from fer_core.store import StoreError
from pages.class_support import browser_key, class_hub, class_store, media_constraints, new_session_key
from pages.formatting import escape_markdown as md
from pages.live_support import rtc_configuration
from pages.ui import app_settings

STATUS_REFRESH_S = 2.0

WHAT_IS_ANALYSED = """
**What happens when you join**
- Your camera's video goes to the ClassMood server of this class. There, about {fps:g} frames a second are
  checked for faces, and each face's facial expression is estimated (for example *happy* or *neutral*).
- Your instructor sees **only class-level figures**: how many students are connected, how many faces are
  in view, and the mix of expressions across the class, and that only while at least {k} students' faces
  are in view. They never see your video, your face, your name or a row about you.
- **Nothing that identifies you is stored**: no video, no picture, no name. Only per-second sums over the
  whole class are kept, and they are deleted after {days} days.
- Facial expressions are weak evidence of how anyone feels. This is not a test and nothing is graded.
- You can leave at any time with **Leave** (or by closing this tab).
"""


# The student's own preview, drawn in their browser from their camera: it is never sent back from the server,
# which would cost a video encode per student (the stream to the server is send-only).
PREVIEW_HTML = """
<video id="preview" autoplay muted playsinline
       style="width:100%;max-width:{width}px;border-radius:8px;background:#111;transform:scaleX(-1)"></video>
<div id="note" style="font-family:sans-serif;font-size:13px;color:#555">Your camera, as only you see it.</div>
<script>
navigator.mediaDevices.getUserMedia({{video: {{width: {{ideal: {width}}}, height: {{ideal: {height}}}}}, audio: false}})
  .then(stream => {{ document.getElementById("preview").srcObject = stream; }})
  .catch(error => {{ document.getElementById("note").textContent = "Preview unavailable (" + error.name + ")."; }});
</script>
"""


@dataclass
class StreamHolder:
    """Shared by this browser session's script thread and its video thread."""

    stream: StudentStream | None = None


settings = app_settings()
st.title("Join an online class")

holder: StreamHolder = st.session_state.setdefault("join_holder", StreamHolder())
session_key: str = st.session_state.setdefault("join_session_key", new_session_key())


def leave() -> None:
    stream, holder.stream = holder.stream, None
    if stream is not None:
        stream.leave()


def find_class() -> ClassInfo | None:
    """The class the typed or linked code opens, or None after saying why not."""
    typed = st.text_input("Join code", value=st.query_params.get("code", ""), max_chars=40,
                          placeholder="e.g. K7QM-4RZT-9X", key="join_code")
    try:
        code = normalise(typed)
    except JoinCodeError as exc:
        if typed.strip():
            st.error(str(exc), icon=":material/error:")
        else:
            st.info("Enter the join code your instructor gave you, or open their join link.", icon=":material/key:")
        return None
    try:
        info = class_store(settings).find_class(code)
    except StoreError as exc:
        st.error(f"The class list cannot be reached right now: {md(exc)}. Try again in a moment.",
                 icon=":material/database:")
        return None
    if info is None:
        st.error(f"No class has the code {display(code)}. Check it with your instructor.", icon=":material/error:")
        return None
    if not info.is_open:
        st.warning("This class has ended. Thank you for taking part.", icon=":material/event_busy:")
        return None
    if info.expired(datetime.now(UTC)) and holder.stream is None:
        st.warning("This join code has expired. Ask your instructor for a new one.", icon=":material/timer_off:")
        return None
    return info


def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
    # The video thread: only the student's stream (pipeline + in-memory sums), never st.*, never the database.
    stream = holder.stream
    if stream is not None:
        stream.process(frame.to_ndarray(format="bgr24"), time.time())
    return frame


def on_video_ended() -> None:
    leave()


info = find_class()
if info is None:
    leave()
    st.stop()

st.subheader(f"Class: {md(info.name)}" + (f" · {md(info.class_label)}" if info.class_label else ""))
st.markdown(WHAT_IS_ANALYSED.format(fps=settings.class_analysis_fps, k=info.min_students,
                                    days=settings.retention_days))
consent = st.checkbox("I have read this and agree that my camera is analysed as described.", key="join_consent")
if not consent:
    leave()
    st.warning("Tick the box above to turn on your camera. Without it nothing is sent.",
               icon=":material/videocam_off:")
    st.stop()

@st.fragment(run_every=STATUS_REFRESH_S)
def status_panel() -> None:
    stream = holder.stream
    if stream is None:
        return
    if stream.hub.ended:
        leave()
        st.rerun()  # the class ended: the next run says so and stops the camera
    if stream.frames_received:
        st.success(f"You are in class {md(info.name)}. Your camera is on; only class-level figures are kept.",
                   icon=":material/check_circle:")
    else:
        st.info("Connecting your camera…", icon=":material/hourglass_top:")


left = st.session_state.get("join_left_class") == info.id
controls, preview = st.columns([3, 2], gap="large")
with controls:
    ctx = webrtc_streamer(
        key=f"join-{info.id}",
        mode=WebRtcMode.SENDONLY,
        rtc_configuration=rtc_configuration(settings),
        media_stream_constraints=media_constraints(settings),
        video_frame_callback=video_frame_callback,
        on_video_ended=on_video_ended,
        async_processing=True,
        desired_playing_state=False if left else None,
    )
    if ctx.state.playing and holder.stream is None and not left:
        try:
            hub = class_hub(settings, info)
            holder.stream = hub.join(browser_key(dict(st.context.cookies), session_key))
        except ClassError as exc:
            st.error(str(exc), icon=":material/block:")
        except (ModelError, StoreError) as exc:
            st.error(f"The class cannot take your stream right now: {md(exc)}", icon=":material/error:")
    elif not ctx.state.playing and holder.stream is not None:
        leave()

    if left:
        st.info("You have left the class. Your camera is off.", icon=":material/logout:")
        if st.button("Join again", icon=":material/login:", key="join_again"):
            st.session_state.pop("join_left_class", None)
            st.rerun()
    elif holder.stream is not None and st.button("Leave", icon=":material/logout:", key="join_leave"):
        leave()
        st.session_state["join_left_class"] = info.id
        st.rerun()
    elif holder.stream is None:
        st.caption("Press **Start** to turn on your camera. If nothing happens, allow camera access in your "
                   "browser (the camera icon in the address bar).")
    status_panel()
with preview:
    if holder.stream is not None:
        components.html(PREVIEW_HTML.format(width=settings.class_video_width, height=settings.class_video_height),
                        height=settings.class_video_height + 40)
