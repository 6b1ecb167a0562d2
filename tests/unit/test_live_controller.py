"""LiveController: the bridge between the Streamlit thread and the WebRTC video thread."""

from __future__ import annotations

import threading

import numpy as np

from fer_core.live import LiveController


class FakeSession:
    def __init__(self, session_id: int, fail: bool = False) -> None:
        self.session_id = session_id
        self.frames = 0
        self.stops = 0
        self.fail = fail

    def process_frame(self, frame: np.ndarray, now: float) -> tuple[np.ndarray, list]:
        if self.fail:
            raise RuntimeError("model exploded")
        self.frames += 1
        return frame + 1, []

    def stop(self) -> None:
        self.stops += 1


def test_frames_pass_through_until_a_session_starts() -> None:
    controller = LiveController()
    frame = np.zeros((4, 4, 3), np.uint8)
    assert controller.process(frame) is frame
    session = FakeSession(7)
    controller.start(lambda: session)
    assert controller.process(frame).max() == 1
    assert session.frames == 1 and controller.active


def test_a_rerun_never_opens_a_second_session() -> None:
    controller = LiveController()
    opened: list[FakeSession] = []

    def open_session() -> FakeSession:
        opened.append(FakeSession(len(opened) + 1))
        return opened[-1]

    controller.start(open_session)
    controller.start(open_session)
    assert len(opened) == 1


def test_stop_is_idempotent_and_safe_from_two_threads() -> None:
    controller = LiveController()
    session = FakeSession(3)
    controller.start(lambda: session)
    threads = [threading.Thread(target=controller.stop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert session.stops == 1
    assert not controller.active and controller.last_session_id == 3
    assert controller.stop() is None


def test_an_analysis_error_is_reported_not_raised_into_the_video_thread() -> None:
    controller = LiveController()
    controller.start(lambda: FakeSession(1, fail=True))
    frame = np.zeros((4, 4, 3), np.uint8)
    assert controller.process(frame) is frame
    assert controller.last_error == "RuntimeError: model exploded"
