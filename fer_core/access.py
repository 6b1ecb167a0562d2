"""Access control without Streamlit: roles, password checks, and the exposure rule.

Passwords come from settings (env or secrets). They are compared in constant time and
never logged or shown.
"""

from __future__ import annotations

import hmac
from typing import Literal

from pydantic import SecretStr

from fer_core.settings import Settings

Role = Literal["app", "analyst", "trainer"]
LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})


def required_password(settings: Settings, role: Role) -> SecretStr | None:
    return {"app": settings.app_password, "analyst": settings.analyst_password, "trainer": settings.trainer_password}[
        role
    ]


def check_password(expected: SecretStr | None, attempt: str) -> bool:
    """True when no password is set, or `attempt` matches it (constant-time)."""
    if expected is None:
        return True
    return hmac.compare_digest(expected.get_secret_value().encode("utf-8"), attempt.encode("utf-8"))


def is_local_address(address: str | None) -> bool:
    """Streamlit's server.address; empty means all interfaces, which is not local."""
    return bool(address) and address.strip().lower() in LOCAL_ADDRESSES


def training_locked_reason(settings: Settings, server_address: str | None) -> str | None:
    """The Training page launches processes and takes uploads: never open to a network unprotected."""
    if is_local_address(server_address):
        return None
    if settings.trainer_password is None and settings.app_password is None:
        return (
            "The Training page is locked: this app listens on a network address "
            f"({server_address or 'all interfaces'}) and no trainer or app password is set. "
            "Set CLASSMOOD_TRAINER_PASSWORD (or trainer_password in .streamlit/secrets.toml), "
            "or run on 127.0.0.1."
        )
    return None
