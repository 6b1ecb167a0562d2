"""Display-only helpers for the pages: safe text, durations, times. No Streamlit calls, no analysis."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

# Every character CommonMark (and Streamlit's extensions: :emoji:, $math$, ~~) can give meaning to.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


def escape_markdown(text: Any) -> str:
    """User text -> markdown that renders literally (no links, images, HTML or formatting)."""
    flat = " ".join(str(text).split())  # newlines would start new markdown blocks
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def format_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) or seconds < 0:
        return "–"
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def viewer_timezone(name: str | None) -> str:
    """The browser's IANA time zone (st.context.timezone) if valid, else UTC."""
    if not name:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name


def as_timestamp(value: Any) -> pd.Timestamp | None:
    """Datetime, pandas Timestamp or epoch seconds -> UTC Timestamp (None for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float):
        return pd.Timestamp(value, unit="s", tz="UTC")
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def format_time(value: Any, tz: str = "UTC") -> str:
    stamp = as_timestamp(value)
    return "–" if stamp is None else stamp.tz_convert(tz).strftime("%Y-%m-%d %H:%M")


def format_epoch(value: float | None, tz: str = "UTC") -> str:
    if not value:
        return "–"
    return datetime.fromtimestamp(float(value), tz=UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def to_local(values: pd.Series, tz: str = "UTC", unit: str | None = None) -> pd.Series:
    """Epoch seconds (with `unit="s"`) or datetimes -> datetimes in the viewer's time zone."""
    stamps = pd.to_datetime(values, unit=unit, utc=True) if unit else pd.to_datetime(values, utc=True)
    return stamps.dt.tz_convert(tz)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    return format_duration(seconds)


def safe_db_url(url: str) -> str:
    """A database URL fit for an error message: the password is masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL we can parse: say nothing about it
        return "(the configured database)"
