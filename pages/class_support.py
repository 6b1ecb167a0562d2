"""Glue for the online class (Live page's instructor tab and the Join page): settings -> engine objects.

No analysis here: it composes `fer_core.class_store`, `class_hub`, `class_view` and the classifier.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from fer_core.batching import shared_batching_classifier
from fer_core.class_hub import ClassHub, StreamSettings, hub_for
from fer_core.class_store import ClassInfo, ClassStore, MaintenanceReport, get_class_store
from fer_core.class_view import ClassView, read_class_view
from fer_core.registry import classifier_for
from fer_core.settings import Settings

JOIN_PATH = "join"
WINDOW_S = 300  # the instructor's charts show the last five minutes
SAVE_GRACE_S = 3.0  # after a class ends, every process has flushed its last seconds within this
# A class whose processes all stopped writing this long ago, with nobody watching, was interrupted.
STALE_S = 300.0


def class_store(settings: Settings) -> ClassStore:
    return get_class_store(settings.db_url, settings.db_pool_size, settings.db_max_overflow)


def stream_settings(settings: Settings) -> StreamSettings:
    return StreamSettings.from_settings(settings)


def class_hub(settings: Settings, info: ClassInfo) -> ClassHub:
    """This process's hub of the class; all its students share one micro-batching classifier."""
    classifier = classifier_for(settings)
    return hub_for(class_store(settings), info, shared_batching_classifier(classifier, settings.class_batch_window_ms),
                   stream_settings(settings), flush_interval_s=settings.flush_interval_s,
                   member_timeout_s=settings.class_member_timeout_s)


def class_view(settings: Settings, class_id: int) -> ClassView:
    return read_class_view(
        class_store(settings), class_id, window_s=WINDOW_S, negative_share=settings.attention_negative_share,
        attention_seconds=settings.attention_seconds, member_timeout_s=settings.class_member_timeout_s)


def upkeep(settings: Settings) -> MaintenanceReport:
    """End idle classes, mark abandoned ones interrupted and save ended ones (any process may do it)."""
    return class_store(settings).maintain(
        idle_s=settings.class_idle_timeout_min * 60.0, stale_s=STALE_S, save_grace_s=SAVE_GRACE_S,
        negative_share=settings.attention_negative_share, attention_seconds=settings.attention_seconds)


def media_constraints(settings: Settings) -> dict[str, Any]:
    """Low camera constraints: small frames at a few frames/s keep bandwidth, decoding and load small."""
    return {
        "video": {
            "width": {"ideal": settings.class_video_width},
            "height": {"ideal": settings.class_video_height},
            "frameRate": {"ideal": settings.class_video_fps, "max": settings.class_video_fps},
        },
        "audio": False,
    }


def join_link(code: str, page_url: str | None, public_url: str | None, base_path: str = "") -> str:
    """The link students open: `<app>/join?code=CODE`, on `public_url` if set, else on the page's own address."""
    if public_url:
        root = public_url.rstrip("/")
    elif page_url:
        parts = urlsplit(page_url)
        prefix = "/" + base_path.strip("/") if base_path.strip("/") else ""
        root = f"{parts.scheme}://{parts.netloc}{prefix}"
    else:
        root = ""
    return f"{root}/{JOIN_PATH}?{urlencode({'code': code})}"


def browser_key(cookies: dict[str, str], fallback: str) -> str:
    """A key that is the same in every tab of one browser: the XSRF token Streamlit's server gives a browser.

    Its cookie is set once per browser and shared by its tabs; only a hash of the token is used.
    Without it (XSRF protection turned off) each browser session counts on its own (`fallback`).
    """
    value = cookies.get("_streamlit_xsrf") or ""
    parts = value.split("|")
    token = value
    if len(parts) == 4 and parts[0] == "2":  # Tornado's masked form: 2|mask|masked token|timestamp
        try:
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            token = bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked)).hex()
        except ValueError:
            token = value
    if not token:
        return f"session:{fallback}"
    return "xsrf:" + hashlib.sha256(token.encode()).hexdigest()


def new_session_key() -> str:
    return secrets.token_hex(16)
