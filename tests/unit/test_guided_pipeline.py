"""Track-guided detection and the pipelined FramePipeline: where it looks, when it scans the whole frame,
faces entering and leaving, results one frame late, and a shared classifier called from many threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fer_core.batching import BatchingClassifier
from fer_core.detect import FaceBox
from fer_core.emotions import EMOTIONS
from fer_core.pipeline import FramePipeline
from fer_core.track import FaceTracker
from tests.doubles import FakeClassifier, StubDetector

A = FaceBox(40, 40, 60, 60)
B = FaceBox(300, 60, 70, 70)
C = FaceBox(500, 300, 60, 60)


def frame(value: int = 90) -> np.ndarray:
    return np.full((480, 640, 3), value, np.uint8)


def guided(boxes, full_scan_every: int = 3, pipelined: bool = False, classifier=None, max_age_s: float = 1.5):
    detector = StubDetector(boxes)
    pipeline = FramePipeline(detector, classifier or FakeClassifier(), FaceTracker(max_age_s=max_age_s),
                             detect_every=1, full_scan_every=full_scan_every, pipelined=pipelined)
    return pipeline, detector


def moved(box: FaceBox, dx: int, dy: int = 0) -> FaceBox:
    return FaceBox(box.x + dx, box.y + dy, box.w, box.h)


def test_full_scans_every_nth_frame_and_searches_near_the_tracks_in_between() -> None:
    pipeline, detector = guided([A, B], full_scan_every=3)
    results = [pipeline.process(frame(), now=i / 15)[1] for i in range(7)]
    assert len(detector.calls) == 3  # frames 0, 3 and 6
    assert len(detector.near_calls) == 4
    assert all(sorted(b.as_tuple() for b in around) == sorted([A.as_tuple(), B.as_tuple()])
               for around in detector.near_calls)
    assert all([f.track_id for f in faces] == [1, 2] and all(f.fresh for f in faces) for faces in results)
    stats = pipeline.stats()
    assert (stats.frames, stats.detect_frames, stats.full_scans) == (7, 7, 3)


def test_without_tracks_every_frame_is_a_full_scan() -> None:
    pipeline, detector = guided([], full_scan_every=5)
    for i in range(4):
        assert pipeline.process(frame(), now=i / 15)[1] == []
    assert len(detector.calls) == 4 and detector.near_calls == []


def test_full_scan_every_1_is_the_plain_pipeline() -> None:
    pipeline, detector = guided([A], full_scan_every=1)
    for i in range(3):
        pipeline.process(frame(), now=i / 15)
    assert len(detector.calls) == 3 and detector.near_calls == []


def test_a_face_moving_a_little_is_followed_by_the_near_search_with_its_track_number() -> None:
    pipeline, detector = guided([A], full_scan_every=10)
    ids = []
    for i in range(6):
        detector.boxes = [moved(A, 6 * i, 3 * i)]
        (face,) = pipeline.process(frame(), now=i / 15)[1]
        assert face.box == detector.boxes[0] and face.fresh
        ids.append(face.track_id)
    assert ids == [1] * 6
    assert len(detector.calls) == 1  # only the first frame scanned the whole frame


def test_a_face_entering_is_found_by_the_next_full_scan() -> None:
    pipeline, detector = guided([A], full_scan_every=3)
    seen = []
    for i in range(4):
        if i == 1:
            detector.boxes = [A, C]  # C walks in far from A: the near search cannot see it
        seen.append(sorted(f.track_id for f in pipeline.process(frame(), now=i / 15)[1]))
    assert seen == [[1], [1], [1], [1, 2]]  # frame 3 is the next full scan


def test_a_face_leaving_makes_that_same_frame_a_full_scan_which_finds_who_came_meanwhile() -> None:
    pipeline, detector = guided([A, B], full_scan_every=10)
    pipeline.process(frame(), now=0.0)
    detector.boxes = [A, C]  # B left, C came in
    faces = pipeline.process(frame(), now=1 / 15)[1]
    assert len(detector.calls) == 2  # the near search missed B, so frame 1 was scanned whole
    assert sorted(f.box.as_tuple() for f in faces) == sorted([A.as_tuple(), C.as_tuple()])
    assert pipeline.stats().full_scans == 2
    # B's track is not fresh any more: missing it again does not cost another full scan.
    pipeline.process(frame(), now=2 / 15)
    assert len(detector.calls) == 2 and len(detector.near_calls) == 2


def test_one_face_lost_among_several_waits_for_the_next_regular_full_scan() -> None:
    """Haar flickers on single faces; only when half of them go missing does the frame get scanned whole."""
    pipeline, detector = guided([A, B, C], full_scan_every=4)
    pipeline.process(frame(), now=0.0)
    detector.boxes = [A, B]  # C missed (or gone): 1 of 3
    assert len(pipeline.process(frame(), now=1 / 15)[1]) == 2
    assert len(detector.calls) == 1
    detector.boxes = [A]  # now B too: 1 of the 2 found last time is missing -> half
    pipeline.process(frame(), now=2 / 15)
    assert len(detector.calls) == 2


def test_a_face_leaving_for_good_expires_and_is_no_longer_searched() -> None:
    pipeline, detector = guided([A, B], full_scan_every=100, max_age_s=0.5)
    pipeline.process(frame(), now=0.0)
    detector.boxes = [A]
    for i in range(1, 12):
        faces = pipeline.process(frame(), now=i / 15)[1]
        assert [f.box for f in faces] == [A]
    assert len(detector.calls) == 2  # the first frame, and the frame B disappeared
    assert [len(around) for around in detector.near_calls][-1] == 1  # B's track expired after 0.5 s
    assert len(pipeline.tracker.active_tracks()) == 1


def test_a_face_that_jumps_is_found_again_on_the_same_frame() -> None:
    pipeline, detector = guided([A], full_scan_every=10)
    pipeline.process(frame(), now=0.0)
    detector.boxes = [moved(A, 400, 300)]  # too far for the near search
    faces = pipeline.process(frame(), now=1 / 15)[1]
    assert [f.box for f in faces] == detector.boxes and len(detector.calls) == 2


def test_faces_leaving_the_frame_edge_are_not_searched_outside_it() -> None:
    pipeline, detector = guided([FaceBox(600, 200, 40, 40)], full_scan_every=10)
    pipeline.process(frame(), now=0.0)
    detector.boxes = []  # walked out to the right
    assert pipeline.process(frame(), now=1 / 15)[1] == []
    assert pipeline.process(frame(), now=2 / 15)[1] == []


# --- pipelined --------------------------------------------------------------------------------------


def test_pipelined_returns_the_previous_frames_faces_and_flush_hands_out_the_last() -> None:
    pipeline, detector = guided([A], full_scan_every=1, pipelined=True)
    counts = []
    for i, boxes in enumerate([[A], [A, B], [A, B, C], [A, C]]):
        detector.boxes = boxes
        counts.append(len(pipeline.process(frame(), now=i / 15)[1]))
    assert counts == [0, 1, 2, 3]  # each call answers for the frame before
    last = pipeline.flush()
    assert sorted(f.box.as_tuple() for f in last) == sorted([A.as_tuple(), C.as_tuple()])
    assert pipeline.flush() == []
    assert pipeline.stats().faces_classified == 1 + 2 + 3 + 2
    pipeline.close()


def test_pipelined_draws_the_previous_faces_on_the_current_frame() -> None:
    pipeline, _ = guided([A], pipelined=True)
    pipeline.process(frame(10), now=0.0)
    annotated, faces = pipeline.process(frame(200), now=1 / 15)
    assert len(faces) == 1
    assert annotated[300, 300].tolist() == [200, 200, 200]  # this frame's pixels
    assert not np.array_equal(annotated, frame(200))  # with the box drawn
    pipeline.close()


def test_pipelined_and_plain_pipelines_find_the_same_faces() -> None:
    script = [[A], [A, B], [moved(A, 5), B], [moved(A, 10), B, C], [C], [C], [], [A]]
    found = {}
    for pipelined in (False, True):
        pipeline, detector = guided([], full_scan_every=3, pipelined=pipelined)
        per_frame = []
        for i, boxes in enumerate(script):
            detector.boxes = boxes
            per_frame.append(sorted(f.box.as_tuple() for f in pipeline.process(frame(), now=i / 15)[1]))
        per_frame.append(sorted(f.box.as_tuple() for f in pipeline.flush()))
        found[pipelined] = per_frame[:-1] if not pipelined else per_frame[1:]
        pipeline.close()
    assert found[True] == found[False]


def test_pipelined_detects_the_next_frame_while_classifying_this_one() -> None:
    """Frame 1's detection and frame 0's classification must both be running at one moment: each waits
    at a barrier for the other (a sequential pipeline would break the barrier on its timeout)."""
    meeting = threading.Barrier(2, timeout=2.0)
    armed = threading.Event()
    met: list[str] = []

    class MeetingDetector(StubDetector):
        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            if armed.is_set():
                meeting.wait()
                met.append("detector")
            return super().detect(frame)

    class MeetingClassifier(FakeClassifier):
        def _predict(self, faces: np.ndarray) -> np.ndarray:
            if armed.is_set():
                meeting.wait()
                met.append("classifier")
            return super()._predict(faces)

    pipeline = FramePipeline(MeetingDetector([A]), MeetingClassifier(), FaceTracker(), detect_every=1,
                             pipelined=True)
    pipeline.process(frame(), now=0.0)  # frame 0 detected; its classification waits for the next call
    armed.set()
    pipeline.process(frame(), now=1 / 15)  # frame 1 detected on the worker while frame 0 is classified
    assert sorted(met) == ["classifier", "detector"]
    pipeline.close()


def test_close_stops_the_worker_and_a_closed_pipeline_still_works() -> None:
    pipeline, _ = guided([A], pipelined=True)
    pipeline.process(frame(), now=0.0)
    assert any(t.name.startswith("classmood-detect") for t in threading.enumerate())
    pipeline.close()
    pipeline.close()  # idempotent
    assert [f.box for f in pipeline.process(frame(), now=1 / 15)[1]] == [A]
    pipeline.close()


def test_a_detector_error_reaches_the_caller() -> None:
    class Broken(StubDetector):
        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            raise RuntimeError("cascade broke")

    pipeline = FramePipeline(Broken([A]), FakeClassifier(), FaceTracker(), detect_every=1, pipelined=True)
    with pytest.raises(RuntimeError, match="cascade broke"):
        pipeline.process(frame(), now=0.0)
    pipeline.close()


def test_many_pipelined_streams_share_one_batching_classifier() -> None:
    """The online-class shape: one pipelined FramePipeline per student thread, one shared classifier
    whose predict() blocks until its micro-batch is done. Every stream gets its own faces back."""
    inner = FakeClassifier(label=None)  # the label follows the crop's brightness
    shared = BatchingClassifier(inner, window_ms=20)
    brightness = [20, 60, 100, 140, 180, 220]
    results: dict[int, list[list[str]]] = {}
    errors: list[BaseException] = []

    def student(k: int) -> None:
        try:
            boxes = [FaceBox(40 + 120 * j, 40, 80, 80) for j in range(k % 3 + 1)]
            pipeline, _ = guided(boxes, full_scan_every=4, pipelined=True, classifier=shared)
            labels = [[f.label for f in pipeline.process(frame(brightness[k]), now=i / 5)[1]] for i in range(8)]
            labels.append([f.label for f in pipeline.flush()])
            pipeline.close()
            results[k] = labels
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=student, args=(k,)) for k in range(len(brightness))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    shared.close()
    assert not errors
    for k, labels in results.items():
        expected = EMOTIONS[min(len(EMOTIONS) - 1, int(brightness[k] / 256 * len(EMOTIONS)))]
        assert labels[0] == [] and all(row == [expected] * (k % 3 + 1) for row in labels[1:])
    stats = shared.stats()
    assert stats.faces == sum(8 * (k % 3 + 1) for k in range(len(brightness)))
    assert stats.batches < stats.requests  # streams' faces went through the model together
