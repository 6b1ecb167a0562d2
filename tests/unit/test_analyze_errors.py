"""analyze on files that are not usable videos: exit code 2, one clear line, nothing stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import analyze
from fer_core.settings import PROJECT_ROOT, Settings
from fer_core.store import Store
from tests.doubles import FakeClassifier


def small_video(path: Path, frames: int = 20, fourcc: str = "mp4v", fps: int = 10) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (160, 120))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((120, 160, 3), (i * 10) % 256, np.uint8))
    writer.release()
    return path


def bad_file(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "missing.mp4"
    if kind == "folder":
        (tmp_path / "dir.mp4").mkdir()
        return tmp_path / "dir.mp4"
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("These are my lesson notes, not a video.\n" * 20)
    elif kind == "truncated":
        data = small_video(tmp_path / "whole.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])  # mp4v puts the index at the end: it is gone
    return path


KINDS = ["missing", "folder", "empty", "text", "truncated"]


@pytest.mark.parametrize("kind", KINDS)
def test_cli_exit_code_2_and_one_line(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "db.sqlite"
    code = analyze.main([str(bad_file(kind, tmp_path)), "--db", f"sqlite:///{db}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not db.exists()  # rejected before any database work


@pytest.mark.parametrize("kind", KINDS)
def test_library_raises_video_error_and_stores_nothing(kind: str, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(analyze.VideoError):
        analyze.analyze_video(bad_file(kind, tmp_path), store, settings=settings, classifier=FakeClassifier())
    assert store.list_sessions().empty


def test_real_entry_point_exit_code(tmp_path: Path) -> None:
    text = bad_file("text", tmp_path)
    env = {**os.environ, "CLASSMOOD_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "fer_core.analyze", str(text)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "not a readable video" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_truncated_stream_keeps_what_was_read_as_partial(tmp_path: Path) -> None:
    """A file whose header survives (AVI) but whose end is cut: analysed up to the cut, status 'partial'."""
    whole = small_video(tmp_path / "whole.avi", frames=100, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = analyze.analyze_video_result(cut, store, settings=Settings(data_dir=tmp_path),
                                          classifier=FakeClassifier(), max_fps=5)
    assert not result.complete
    assert 2.0 <= result.video_seconds < 6.0  # about a third of 10 s
    assert store.get_session(result.session_id)["status"] == "partial"


def test_bad_out_suffix_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        analyze.main([str(tmp_path / "x.mp4"), "--out", str(tmp_path / "x.xlsx")])
    assert info.value.code == 2
