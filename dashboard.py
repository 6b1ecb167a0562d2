"""ClassMood: the Streamlit entry point. Thin: page config, the app password, navigation.

Students reach only the Join page (`/join?code=...`): it needs no password and shows no navigation.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st

from pages.class_support import JOIN_PATH
from pages.ui import role_unlocked

# A file, served by the app itself: a :material/...: icon as page icon is fetched from the internet.
PAGE_ICON = Path(__file__).resolve().parent / "assets" / "icon.png"
st.set_page_config(page_title="ClassMood", page_icon=str(PAGE_ICON), layout="wide")

# The gate comes before the navigation (which must only be built once the page may show).
student = urlsplit(st.context.url or "").path.rstrip("/").endswith(f"/{JOIN_PATH}")
if not student and not role_unlocked("app"):
    st.stop()

navigation = st.navigation(
    [
        st.Page("pages/live.py", title="Live class", icon=":material/videocam:", default=True),
        st.Page("pages/history.py", title="History", icon=":material/history:"),
        st.Page("pages/model_training.py", title="Training", icon=":material/model_training:"),
        st.Page("pages/join.py", title="Join a class", icon=":material/group_add:", url_path=JOIN_PATH),
    ],
    position="hidden" if student else "sidebar",
)
navigation.run()
