"""One detector for every camera of a box: the frames that wait at the same moment go through one inference call.

Each camera's thread prepares its own frame (letterbox, tiles) and decodes its own results, so that work stays
spread over the cores; only `session.run` happens here, on one thread, for whatever frames are waiting when the
previous call ends. Nothing is held back to fill a batch: a lone camera gets a call of its own at once. With a
model whose batch dimension is free (edge/train.py exports it so) a call of 2–4 frames costs ~20 % less CPU per
frame than one call each, and the cameras of a busy box naturally arrive together.

There is no queue to grow: each camera thread waits for its own result before it takes its next frame, so at most
one request per camera is ever waiting, and the readers keep only the freshest frame meanwhile (edge/sources.py).
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .detections import Detections
from .detector import Detector, frame_size, tile_crops
from .types import Pixels

log = logging.getLogger(__name__)
_POLL_S = 0.2


class DetectorClosed(RuntimeError):
    """The shared detector stopped while a frame waited for it."""


@dataclass
class _Request:
    batch: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    output: np.ndarray | None = None
    error: BaseException | None = None


class SharedDetector:
    """`Detector.detect_tiled` for many threads at once, batched. `start()` before use, `close()` after."""

    def __init__(self, detector: Detector, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.detector = detector
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sizes: Counter[int] = Counter()  # frames per call → calls
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)

    @property
    def class_names(self) -> list[str]:
        return self.detector.class_names

    def start(self) -> "SharedDetector":
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop; frames still waiting get DetectorClosed (their cameras are stopping too)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._fail_waiting(DetectorClosed("the detector stopped"))

    def detect_tiled(self, image: Pixels, tiles: Sequence[tuple[int, int, int, int]],
                     conf: float | Sequence[float] | np.ndarray | None = None) -> Detections:
        """As `Detector.detect_tiled`: the frame and its tiles, boxes in frame pixels. Blocks this thread until
        its batch has run; pre- and post-processing run here, on the caller's thread."""
        det = self.detector
        batch, params = det.preprocess(tile_crops(image, tiles))
        output = self._infer(batch)
        return det.merge_tiles(det.postprocess(output, params, conf), tiles, frame_size(image))

    def detect(self, image: Pixels, conf: float | Sequence[float] | np.ndarray | None = None) -> Detections:
        return self.detect_tiled(image, (), conf)

    def stats(self) -> dict[str, Any]:
        """Calls made, frames (with tiles) run, and how many calls had each batch size."""
        with self._lock:
            calls, frames = sum(self._sizes.values()), sum(k * v for k, v in self._sizes.items())
            return dict(calls=calls, frames=frames, batch_sizes=dict(sorted(self._sizes.items())),
                        mean_batch=round(frames / calls, 2) if calls else None)

    # ------------------------------------------------------------------ the inference thread
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._closed.is_set():
            raise DetectorClosed("the detector stopped")
        req = _Request(batch)
        self._queue.put(req)
        while not req.done.wait(_POLL_S):
            if self._closed.is_set() and not self._thread.is_alive():
                raise DetectorClosed("the detector stopped")
        if req.error is not None:
            raise req.error
        assert req.output is not None
        return req.output

    def _take(self) -> list[_Request]:
        """The first waiting request (blocking), then whatever else waits, up to max_batch frames."""
        try:
            first = self._queue.get(timeout=_POLL_S)
        except queue.Empty:
            return []
        reqs, n = [first], len(first.batch)
        while n < self.max_batch:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            reqs.append(req)
            n += len(req.batch)
        return reqs

    def _loop(self) -> None:
        while not self._closed.is_set():
            reqs = self._take()
            if not reqs:
                continue
            n = sum(len(r.batch) for r in reqs)
            try:
                batch = reqs[0].batch if len(reqs) == 1 else np.concatenate([r.batch for r in reqs])
                output = self.detector.run(batch)
                at = 0
                for r in reqs:
                    r.output = output[at:at + len(r.batch)]
                    at += len(r.batch)
            except Exception as e:  # a failed call fails its frames, not the thread (the next call may work)
                log.exception("inference failed for a batch of %d frames", n)
                for r in reqs:
                    r.error = e
            with self._lock:
                self._sizes[n] += 1
            for r in reqs:
                r.done.set()

    def _fail_waiting(self, error: BaseException) -> None:
        while True:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                return
            req.error = error
            req.done.set()
