"""Privacy by default: analysing real faces writes no frame and no face image anywhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import analyze
from fer_core.session import LiveSession
from fer_core.settings import Settings
from fer_core.store import Store
from tests.integration.test_analyze_video import pan_video

pytestmark = pytest.mark.slow

DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"YUV4MPEG2", b"RIFF")


class WriteAudit:
    """Records every file Python opens for writing while armed (an audit hook can't be removed)."""

    def __init__(self) -> None:
        self.armed = False
        self.written: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.armed or event != "open":
            return
        path, mode, flags = (*args, None, None)[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & 0o3  # O_WRONLY / O_RDWR
        )
        if writing and isinstance(path, str | bytes | Path):
            self.written.append(str(path))


_AUDIT = WriteAudit()


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteAudit]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image or video writer was called")

    monkeypatch.setattr(cv2, "imwrite", refuse)
    monkeypatch.setattr(cv2, "VideoWriter", refuse)
    _AUDIT.written.clear()
    _AUDIT.armed = True
    yield _AUDIT
    _AUDIT.armed = False


def _only_database_files(written: list[str], db: Path) -> list[str]:
    allowed = {str(db) + suffix for suffix in DB_SUFFIXES}
    return [p for p in written if p not in allowed and not p.startswith(("/proc/", "/dev/"))]


def test_live_session_on_real_faces_writes_only_numbers(
    group_photos: Path, real_classifier, tmp_path: Path, audit: WriteAudit
) -> None:
    db = tmp_path / "classmood.db"
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{db}")
    store = Store(settings.db_url)
    photo = cv2.imread(str(group_photos / "2008_002506.jpg"))
    frame = cv2.resize(photo, (640, 480))
    session = LiveSession(store, real_classifier, name="privacy", settings=settings, detect_every=1)
    faces = 0
    for i in range(12):
        _, observed = session.process_frame(frame, 1_800_000_000 + i * 0.25)
        faces = max(faces, len(observed))
    session.stop()
    assert faces >= 2  # real faces were found and classified
    assert _only_database_files(audit.written, db) == []
    for path in tmp_path.rglob("*"):
        assert path.name.startswith("classmood.db"), f"unexpected file {path}"
    # The database holds numbers: no blob column can carry pixels.
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            types = {r[2].upper() for r in conn.execute(f"pragma table_info({table})")}
            assert "BLOB" not in types, table
    assert not any(magic in db.read_bytes() for magic in IMAGE_MAGIC[:3])


def test_analysing_a_recording_writes_no_frames(
    group_photos: Path, real_classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = pan_video(group_photos / "2008_002506.jpg", tmp_path / "class.mp4", seconds=2)
    video_bytes = video.read_bytes()
    video.unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    db = out_dir / "classmood.db"
    settings = Settings(data_dir=out_dir, database_url=f"sqlite:///{db}")
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: pytest.fail("imwrite called"))
    _AUDIT.written.clear()
    _AUDIT.armed = True
    try:
        # As the Live page does with an upload: straight from memory, never a temporary file.
        upload = analyze.InMemoryVideo("class.mp4", video_bytes)
        store = Store(settings.db_url)
        session_id = analyze.analyze_video(upload, store, settings=settings, classifier=real_classifier)
    finally:
        _AUDIT.armed = False
    assert _only_database_files(_AUDIT.written, db) == []
    assert sorted(p.name for p in tmp_path.rglob("*") if not p.name.startswith("classmood.db") and p.is_file()) == []
    assert len(Store(settings.db_url).session_buckets(session_id)) >= 1
    assert np.isfinite(Store(settings.db_url).session_buckets(session_id)["faces"]).all()


def test_the_audit_itself_sees_a_written_file(tmp_path: Path, audit: WriteAudit) -> None:
    (tmp_path / "frame.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(AssertionError, match="writer was called"):
        cv2.imwrite(str(tmp_path / "face.png"), np.zeros((4, 4), np.uint8))
    assert _only_database_files(audit.written, tmp_path / "classmood.db") == [str(tmp_path / "frame.jpg")]
