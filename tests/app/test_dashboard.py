"""AppTests of the entry point: navigation renders every page, and the app password gates it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from fer_core.settings import Settings, get_settings
from tests.app.conftest import APP_TIMEOUT, PAGES, ROOT, texts

pytestmark = pytest.mark.app

needs_live_page = pytest.mark.skipif(
    not (PAGES / "live.py").is_file(), reason="pages/live.py (the lead's Live page) is not there yet"
)


def dashboard() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=APP_TIMEOUT)


@needs_live_page
def test_dashboard_opens_on_the_live_page(app_env: Settings, server_address: Callable) -> None:
    at = dashboard().run()
    assert not at.exception
    assert at.title[0].value == "Live class"


@needs_live_page
@pytest.mark.parametrize(("page", "title"), [("pages/history.py", "History"), ("pages/model_training.py", "Training")])
def test_navigation_reaches_every_page(app_env: Settings, server_address: Callable, page: str, title: str) -> None:
    at = dashboard().run()
    at.switch_page(page).run()
    assert not at.exception
    assert at.title[0].value == title


@needs_live_page
def test_app_password_locks_everything_until_given(
    app_env: Settings, server_address: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLASSMOOD_APP_PASSWORD", "open-sesame")
    get_settings.cache_clear()
    at = dashboard().run()
    assert not at.exception
    assert not at.title  # no page content before the password
    assert [b.label for b in at.button] == ["Unlock"]

    at.text_input(key="password_app").set_value("nope")
    at = at.button[0].click().run()
    assert "Wrong password" in texts(at.error)
    assert not at.title

    at.text_input(key="password_app").set_value("open-sesame")
    at = at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Live class"
    # The password is a per-browser-session unlock: other pages open without asking again.
    at.switch_page("pages/history.py").run()
    assert at.title[0].value == "History"
    assert "Unlock" not in [b.label for b in at.button]


@pytest.mark.parametrize("page", ["live", "history", "model_training"])
def test_a_page_opened_by_its_own_url_still_asks_for_the_app_password(
    app_env: Settings, server_address: Callable, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    # Streamlit can run a pages/ file for its URL without dashboard.py: each page gates itself too.
    monkeypatch.setenv("CLASSMOOD_APP_PASSWORD", "open-sesame")
    get_settings.cache_clear()
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=APP_TIMEOUT).run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Unlock"]
    assert not at.title or at.title[0].value in ("History", "Training")  # a title at most, never content
    assert not at.dataframe and not at.get("vega_lite_chart") and not at.tabs
