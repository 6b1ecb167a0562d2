"""One classifier shared by many video threads: their faces go through the model in micro-batches.

In an online class every student's stream has its own thread and its own pipeline. One model call
per student frame would run the network on 1-2 faces at a time; here a worker thread waits a few
milliseconds after the first request for others to arrive and classifies all of their faces in one
call (per-face cost falls steeply with the batch size on these CPUs). Results are split back in
order, so each caller sees exactly what a direct call would have returned.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from fer_core.classify import EmotionClassifier

DEFAULT_WINDOW_MS = 5.0
DEFAULT_MAX_FACES = 64
RESULT_TIMEOUT_S = 30.0


@dataclass
class _Request:
    faces: np.ndarray
    future: Future


@dataclass(frozen=True)
class BatchingStats:
    requests: int
    batches: int
    faces: int

    @property
    def mean_requests_per_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0

    @property
    def mean_faces_per_batch(self) -> float:
        return self.faces / self.batches if self.batches else 0.0


_STOP = object()


class BatchingClassifier(EmotionClassifier):
    """Wraps `inner`; `predict()` is safe from any number of threads and blocks until its batch is done."""

    def __init__(self, inner: EmotionClassifier, window_ms: float = DEFAULT_WINDOW_MS,
                 max_faces: int = DEFAULT_MAX_FACES) -> None:
        if window_ms < 0 or max_faces < 1:
            raise ValueError("window_ms must be >= 0 and max_faces >= 1")
        # The inner model's calibration, applied by EmotionClassifier.predict around the batched call.
        super().__init__(inner.source, inner.temperature, inner.flip_average)
        self.inner = inner
        self.backend = f"{inner.backend}, batched"
        self.window_s = window_ms / 1000.0
        self.max_faces = max_faces
        self._queue: queue.Queue[object] = queue.Queue()
        self._stats_lock = threading.Lock()
        self._requests = self._batches = self._faces = 0
        self._thread = threading.Thread(target=self._run, name="classmood-batching-classifier", daemon=True)
        self._thread.start()

    def _predict(self, faces: np.ndarray) -> np.ndarray:
        if not self._thread.is_alive():
            raise RuntimeError("the batching classifier has been closed")
        request = _Request(faces, Future())
        self._queue.put(request)
        return request.future.result(timeout=RESULT_TIMEOUT_S)

    def stats(self) -> BatchingStats:
        with self._stats_lock:
            return BatchingStats(self._requests, self._batches, self._faces)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5.0)

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """`first` and whatever arrives within the window (up to max_faces); True when asked to stop."""
        batch, count = [first], len(first.faces)
        deadline = time.monotonic() + self.window_s
        while count < self.max_faces:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Request)
            batch.append(item)
            count += len(item.faces)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Request)
            batch, stopping = self._collect(item)
            try:
                probs = self.inner.raw_predict(np.concatenate([r.faces for r in batch]))
            except Exception as exc:  # every waiting caller gets the error, the worker goes on
                for request in batch:
                    request.future.set_exception(exc)
                continue
            start = 0
            for request in batch:
                end = start + len(request.faces)
                request.future.set_result(probs[start:end])
                start = end
            with self._stats_lock:
                self._requests += len(batch)
                self._batches += 1
                self._faces += start
        # Anything still queued gets an answer rather than a 30 s wait.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request):
                item.future.set_exception(RuntimeError("the batching classifier has been closed"))


@functools.lru_cache(maxsize=4)
def shared_batching_classifier(inner: EmotionClassifier, window_ms: float = DEFAULT_WINDOW_MS) -> BatchingClassifier:
    """The process's one batching wrapper around `inner` (a cached classifier), so all streams share it."""
    return BatchingClassifier(inner, window_ms)
