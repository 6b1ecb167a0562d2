"""Streamlit helpers shared by the pages: settings, access gates, the responsible-use notice."""

from __future__ import annotations

import streamlit as st

from fer_core.access import Role, check_password, required_password
from fer_core.settings import Settings, get_settings

ROLE_TITLES: dict[Role, str] = {"app": "ClassMood", "analyst": "analyst", "trainer": "trainer"}

RESPONSIBLE_USE_SHORT = (
    "**Responsible use.** Emotion recognition in educational institutions is prohibited in the EU "
    "(AI Act Art. 5(1)(f), since 2 Feb 2025). Facial expressions are weak evidence of what anyone feels, "
    "and the model inherits FER2013's label noise and demographic skew. Use ClassMood for research, "
    "demos and consenting self-review, not to judge or grade people."
)

PRIVACY_NOTICE = (
    "**What ClassMood records.** No video frame or face image is ever stored. Faces get anonymous track "
    "numbers that are new in every session: no names, no identities. Only per-second class-level figures "
    "and per-track emotion scores are kept, and they are deleted automatically after the retention period "
    "or at any time from the History page. Everyone on camera must know and agree before you start."
)


def app_settings() -> Settings:
    return get_settings()


def role_unlocked(role: Role) -> bool:
    """Show a password form when `role` has a password and this browser session hasn't given it."""
    expected = required_password(app_settings(), role)
    if expected is None or st.session_state.get(f"unlocked_{role}"):
        return True
    with st.form(f"login_{role}"):
        st.markdown(f"#### This page needs the {ROLE_TITLES[role]} password")
        attempt = st.text_input("Password", type="password", key=f"password_{role}")
        submitted = st.form_submit_button("Unlock")
    if submitted:
        if check_password(expected, attempt):
            st.session_state[f"unlocked_{role}"] = True
            st.rerun()
        st.error("Wrong password.")
    return False
