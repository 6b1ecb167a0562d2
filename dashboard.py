"""ClassMood: the Streamlit entry point. Thin: page config, the app password, navigation."""

from __future__ import annotations

import streamlit as st

from pages.ui import role_unlocked

st.set_page_config(page_title="ClassMood", page_icon=":material/mood:", layout="wide")

if not role_unlocked("app"):
    st.stop()

navigation = st.navigation(
    [
        st.Page("pages/live.py", title="Live class", icon=":material/videocam:", default=True),
        st.Page("pages/history.py", title="History", icon=":material/history:"),
        st.Page("pages/model_training.py", title="Training", icon=":material/model_training:"),
    ]
)
navigation.run()
