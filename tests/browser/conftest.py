"""Real-browser fixtures: a fake-webcam clip of real faces, the app as its own process, Chromium.

Recipe: ../shared/docs/browser-webrtc-testing.md (system Chromium, never `playwright install`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GROUP_PHOTOS = ROOT.parent / "shared" / "datasets" / "group-photos"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
CLIP_SIZE = (640, 480)
CLIP_FPS = 15
CLIP_SECONDS = 4


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        message = "Chromium not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not GROUP_PHOTOS.is_dir():
        pytest.skip(f"real-face photos not found at {GROUP_PHOTOS}")


def write_y4m(frames: list[np.ndarray], path: Path, fps: int = CLIP_FPS) -> None:
    """Y4M (I420) is what Chromium's fake camera reads; it loops the file forever."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            handle.write(b"FRAME\n")
            handle.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


def real_faces_clip(seconds: int = CLIP_SECONDS) -> list[np.ndarray]:
    """A slow pan over a photo with three large frontal faces, at webcam size."""
    photo = cv2.imread(str(GROUP_PHOTOS / "2008_002506.jpg"))
    width, height = CLIP_SIZE
    scale = height / photo.shape[0] * 1.15
    big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    travel = max(0, big.shape[1] - width)
    count = seconds * CLIP_FPS
    frames = []
    for i in range(count):
        x = int(travel * (0.5 + 0.3 * np.sin(2 * np.pi * i / count)))
        crop = big[:height, x : x + width]
        frames.append(cv2.resize(crop, CLIP_SIZE) if crop.shape[:2] != (height, width) else crop.copy())
    return frames


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fake_webcam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_browser()
    path = tmp_path_factory.mktemp("webcam") / "faces.y4m"
    write_y4m(real_faces_clip(), path)
    return path


@contextlib.contextmanager
def running_app(data_dir: Path, extra_env: dict[str, str] | None = None, log_name: str = "server.log",
                ) -> Iterator[dict]:
    """The app started the way a user starts it (`streamlit run dashboard.py`) on a private data directory."""
    port = _free_port()
    env = {**os.environ, "CLASSMOOD_DATA_DIR": str(data_dir), **(extra_env or {})}
    env.pop("CLASSMOOD_APP_PASSWORD", None)
    log_path = data_dir / log_name
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "dashboard.py",
                "--server.address", "127.0.0.1", "--server.port", str(port),
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"app did not start; log:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "data_dir": data_dir, "log": log_path, "proc": proc}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The app on a private data directory, for the tests of one module."""
    _require_browser()
    with running_app(tmp_path_factory.mktemp("appdata")) as server:
        yield server


WEBRTC_COMPONENT = 'iframe[title="streamlit_webrtc.component.webrtc_streamer"]'


def launch_chromium(playwright, fake_webcam: Path | None = None):
    """Debian's Chromium (never a downloaded one); with a fake camera looping `fake_webcam` if given."""
    flags = list(CHROMIUM_FLAGS)
    if fake_webcam is not None:
        flags.append(f"--use-file-for-fake-video-capture={fake_webcam}")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
