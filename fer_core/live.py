"""The bridge between a UI thread and a video thread for one live stream.

The video thread calls `process()` for every frame; the UI thread calls `start()`,
`stop()` and `snapshot()`. A session exists only between start and stop; frames that
arrive outside it pass through unanalysed. The lock guards only the swap of the
current session, never analysis, so neither thread waits on the other's work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fer_core.session import LiveSession


class LiveController:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: LiveSession | None = None
        self.last_session_id: int | None = None
        self.last_error: str | None = None

    @property
    def active(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> LiveSession | None:
        return self._session

    def start(self, open_session: Callable[[], LiveSession]) -> LiveSession:
        """Open a session unless one is open (a rerun must not open a second)."""
        with self._lock:
            if self._session is None:
                self._session = open_session()
                self.last_session_id = self._session.session_id
                self.last_error = None
            return self._session

    def process(self, frame: np.ndarray, now: float | None = None) -> np.ndarray:
        session = self._session  # one atomic read; stop() may swap it out concurrently
        if session is None:
            return frame
        try:
            annotated, _ = session.process_frame(frame, time.time() if now is None else now)
        except Exception as exc:  # never kill the video thread; show the error on the page
            self.last_error = f"{type(exc).__name__}: {exc}"
            return frame
        return annotated

    def stop(self) -> int | None:
        """Close and flush the session (idempotent; safe from any thread)."""
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return None
        session.stop()
        return session.session_id
