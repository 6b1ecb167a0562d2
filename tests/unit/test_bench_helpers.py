"""The benchmark's clip and backend discovery (no timing is asserted: speed figures live in the bench)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_core.bench import available_backends, pan_zoom_clip
from fer_core.detector_eval import load_ground_truth


def test_pan_zoom_clip_has_the_size_and_moves(group_photos: Path) -> None:
    photos = [i.path for i in load_ground_truth(group_photos)]
    frames = list(pan_zoom_clip(photos, (1280, 720), 18))
    assert len(frames) == 18
    assert all(f.shape == (720, 1280, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # panning/zooming, not a still


def test_pan_zoom_clip_needs_photos(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        next(pan_zoom_clip([tmp_path / "missing.jpg"], (640, 480), 3))


def test_available_backends(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"x")
    assert available_backends(tmp_path, "all") == ["keras"]
    assert available_backends(tmp_path, "litert") == []
    (tmp_path / "model_int8.tflite").write_bytes(b"x")
    assert available_backends(tmp_path, "all") == ["keras", "litert"]
    assert available_backends(tmp_path, "auto") == ["litert"]
    assert available_backends(tmp_path / "model.keras", "all") == ["keras"]


# --- the photo clip's ground truth and the comparison against fer's settings -------------------------


def test_pan_zoom_frames_carry_the_photos_faces_into_each_frame(group_photos: Path) -> None:
    from fer_core.bench import pan_zoom_frames
    from fer_core.detect import FER_SETTINGS, HaarFaceDetector
    from fer_core.detector_eval import match_count

    images = load_ground_truth(group_photos)
    clip = list(pan_zoom_frames(images, (640, 360), 2 * 6, per_photo=6))
    assert len(clip) == 12
    for frame, truth in clip:
        assert frame.shape == (360, 640, 3)
        assert all(x >= 0 and y >= 0 and x + w <= 640 and y + h <= 360 and w > 10 for x, y, w, h in truth)
    assert 0 < len(clip[0][1]) <= len(images[0].boxes)
    assert {len(t) for _, t in clip[6:]} != {0}  # the second photo's faces from frame 6 on
    # The mapped boxes are where the faces are: a detector finds them there.
    detector = HaarFaceDetector(FER_SETTINGS)
    found = sum(match_count(truth, detector.detect(frame)) for frame, truth in clip)
    assert found >= 0.6 * sum(len(t) for _, t in clip)


def scripted(script, detector):
    """Frames whose faces (for the stub detector, and as ground truth) follow `script`."""
    for boxes in script:
        detector.boxes = list(boxes)
        yield np.zeros((480, 640, 3), np.uint8), [b.as_tuple() for b in boxes]


def test_compare_counts_each_sides_faces_against_the_frame_they_belong_to() -> None:
    from fer_core.baseline import PipelineSide, compare
    from fer_core.detect import FaceBox
    from fer_core.pipeline import FramePipeline
    from fer_core.track import FaceTracker
    from tests.doubles import FakeClassifier, StubDetector

    a, b = FaceBox(40, 40, 60, 60), FaceBox(300, 60, 70, 70)
    script = [[a], [a], [a, b], [a, b], [], [], [b], [a, b], [a], [a]]
    stub = StubDetector()

    def side(label: str, pipelined: bool) -> PipelineSide:
        return PipelineSide(label, FramePipeline(stub, FakeClassifier(), FaceTracker(), detect_every=1,
                                                 full_scan_every=1, pipelined=pipelined))

    plain, piped = side("plain", False), side("pipelined", True)
    tallies = compare(scripted(script, stub), [plain, piped], warmup=2)
    counted = script[2:]
    for tally in tallies:
        assert tally.frames == len(counted) and len(tally.seconds) == len(counted)
        assert tally.frames_with_face == sum(1 for boxes in counted if boxes)
        assert tally.faces == tally.hits == tally.truth == sum(len(boxes) for boxes in counted)
        assert tally.precision == 1.0
    assert tallies[1].full_scans == len(script)


def test_coasted_frames_find_no_faces_and_a_stale_box_is_no_hit() -> None:
    from fer_core.baseline import PipelineSide, compare
    from fer_core.detect import FaceBox
    from fer_core.pipeline import FramePipeline
    from fer_core.track import FaceTracker
    from tests.doubles import FakeClassifier, StubDetector

    a = FaceBox(40, 40, 60, 60)
    stub = StubDetector()
    coasting = PipelineSide("coasting", FramePipeline(stub, FakeClassifier(), FaceTracker(), detect_every=2))
    (tally,) = compare(scripted([[a]] * 6, stub), [coasting], warmup=0)
    assert (tally.frames, tally.frames_with_face, tally.faces, tally.truth) == (6, 3, 3, 6)


def test_fer_settings_side_and_the_table(group_photos: Path) -> None:
    import cv2

    from fer_core.baseline import FerSettingsSide, compare
    from fer_core.bench import comparison_table

    photo = cv2.imread(str(group_photos / "2008_002470.jpg"))
    side = FerSettingsSide()
    (tally,) = compare([(photo, None)] * 3, [side], warmup=1)
    assert tally.frames == 2 and tally.faces >= 6 and tally.frames_with_face == 2 and tally.truth == 0
    table = comparison_table([tally], [side])
    assert "| fer settings, detection only |" in table and "1.00x" in table


def test_process_rounds_pair_each_analyze_run_with_the_fer_loop_before_it(capsys) -> None:
    from fer_core.bench import print_processes

    runs = [{"process": "fer", "seconds": 30.0}, {"process": "analyze", "seconds": 10.0},
            {"process": "fer", "seconds": 40.0}, {"process": "analyze", "seconds": 20.0}]
    assert print_processes(runs, 300) == [3.0, 2.0]
    out = capsys.readouterr().out
    assert "| 1 | analyze | 10.0 | 30.0 | 3.00x |" in out and "Median over the rounds: analyze at 2.50x" in out
