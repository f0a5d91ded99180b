"""ONNX object detector: letterbox -> onnxruntime -> vectorised decode and class-aware NMS.

The model is checked against its manifest once, at load, so a model exported at another size
or with other classes fails loudly at start-up instead of producing shifted boxes or wrong labels.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge.detections import Detections, box_inside_share, box_iou
from edge.manifest import MANIFEST_SUFFIX, Manifest, ManifestError, load_manifest, manifest_path_for, model_path_of
from edge.types import Pixels, Yuv420

__all__ = ["Detector", "LetterboxParams", "ModelMismatchError", "letterbox", "nms", "verify_model_matches_manifest"]

logger = logging.getLogger(__name__)

# Cap on candidates entering NMS (as ultralytics' max_nms): bounds the cost of a frame full of noise.
MAX_NMS_CANDIDATES = 30000
# A tile's box within this many pixels of the tile's edge inside the frame is cut by it; it gives way to an uncut
# box (any view, any class) that holds at least CUT_HELD_SHARE of it and shows the thing going on past the cut by
# at least CUT_BEYOND_SHARE of the cut box's size across it. A box the edge only trims (a cover 3 px short of its
# whole-frame box, a puddle's last tenth) is most of its thing and often the surest view of it: it stays.
# The app uses the same tolerance for boxes cut by the frame's own edge (they build no sustained evidence).
CUT_EDGE_PX = 2.0
CUT_HELD_SHARE = 0.6
CUT_BEYOND_SHARE = 0.25
# Mirror test-time augmentation (`flip`): each view keeps its boxes down to FLIP_FLOOR of the class threshold, and a
# box becomes the mean (place and score) of itself and the surest same-class box of the other view overlapping it by
# FLIP_MATCH_IOU (a score of 0 where none does): a thing both views see keeps its score, one that only a single view
# sees loses half.
FLIP_FLOOR = 0.5
FLIP_MATCH_IOU = 0.55


class ModelMismatchError(ValueError):
    """The ONNX model does not match its manifest (input size, class count or class names)."""


@dataclass(frozen=True)
class LetterboxParams:
    """How one frame was placed in the model input, to map boxes back to frame pixels.

    Attributes:
        gain_x, gain_y: resize factors frame -> input per axis; they differ slightly because each
            side is rounded to whole pixels (ultralytics ``scale_boxes`` maps back the same way).
        left: padding columns left of the resized frame.
        top: padding rows above the resized frame.
        orig_height: frame height in pixels.
        orig_width: frame width in pixels.
    """

    gain_x: float
    gain_y: float
    left: int
    top: int
    orig_height: int
    orig_width: int


def letterbox(image: Pixels, height: int, width: int, pad_value: int = 114) -> tuple[np.ndarray, LetterboxParams]:
    """Resize keeping aspect ratio and centre-pad to ``(height, width)``, exactly as ultralytics does.

    Args:
        image: ``(h, w, 3)`` frame (BGR uint8 from OpenCV), or a camera's I420 planes.
        height, width: model input size.
        pad_value: grey level of the padding.

    Returns:
        ``(height, width, 3)`` image and the parameters to undo the mapping.
    """
    if isinstance(image, Yuv420):
        h, w = image.height, image.width
    else:
        h, w = image.shape[:2]
    gain = min(height / h, width / w)
    new_w, new_h = max(1, int(round(w * gain))), max(1, int(round(h * gain)))
    if isinstance(image, Yuv420):  # shrink the planes, then convert the small picture (see Yuv420)
        image = image.resized_bgr(new_w, new_h) if (new_w, new_h) != (w, h) else image.bgr()
    elif (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top = int(round((height - new_h) / 2 - 0.1))
    left = int(round((width - new_w) / 2 - 0.1))
    canvas = np.full((height, width, 3), pad_value, dtype=image.dtype)
    canvas[top : top + new_h, left : left + new_w] = image
    params = LetterboxParams(gain_x=new_w / w, gain_y=new_h / h, left=left, top=top, orig_height=h, orig_width=w)
    return canvas, params


def nms(xyxy: np.ndarray, scores: np.ndarray, class_id: np.ndarray, iou_threshold: float, max_detections: int) -> np.ndarray:
    """Class-aware greedy NMS; returns indices of kept boxes, highest score first.

    Boxes of different classes never suppress each other: each class is shifted by a multiple of
    the coordinate span (the offset trick), so one IoU pass handles all classes. The loop runs
    once per *kept* box (at most ``max_detections``), each step vectorised over the remainder.

    Args:
        xyxy: ``(n, 4)`` boxes.
        scores: ``(n,)`` scores.
        class_id: ``(n,)`` integer classes.
        iou_threshold: a box is dropped when its IoU with a kept same-class box exceeds this.
        max_detections: stop after keeping this many.
    """
    if len(scores) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    boxes = xyxy[order].astype(np.float64)
    span = float(boxes.max() - boxes.min()) + 1.0
    boxes += (class_id[order].astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    keep: list[int] = []
    remaining = np.arange(len(order))
    while remaining.size and len(keep) < max_detections:
        i, rest = remaining[0], remaining[1:]
        keep.append(int(i))
        inter_w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        inter_h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)  # 0, not NaN, for degenerate pairs
        remaining = rest[iou <= iou_threshold]
    return order[np.asarray(keep, dtype=np.int64)]


def _dim(value: object) -> int | None:
    """An ONNX dimension as int, or None when symbolic/dynamic."""
    return value if isinstance(value, int) and value > 0 else None


def _shape_text(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) if _dim(d) is not None else f"{d or '?'}(dynamic)" for d in shape) + "]"


def verify_model_matches_manifest(session: ort.InferenceSession, manifest: Manifest, model_path: Path) -> None:
    """Raise :class:`ModelMismatchError` unless the model's input/output/names agree with the manifest.

    Checks: one input ``[1|dynamic, 3, H, W]`` with H, W as in the manifest (dynamic H/W accepted);
    output ``[1|dynamic, 4+nc, N]`` with nc the manifest's class count; metadata ``names`` (when
    present) equal to the manifest's class names in order.
    """
    where = f"model {model_path} does not match its manifest"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ModelMismatchError(f"{where}: expected 1 input and at least 1 output, model has {len(inputs)} and {len(outputs)}")

    want_h, want_w = manifest.input.height, manifest.input.width
    in_shape = list(inputs[0].shape)
    expected_in = f"[1, 3, {want_h}, {want_w}]"
    ok = (
        len(in_shape) == 4
        and _dim(in_shape[0]) in (None, 1)
        and _dim(in_shape[1]) == 3
        and _dim(in_shape[2]) in (None, want_h)
        and _dim(in_shape[3]) in (None, want_w)
    )
    if not ok:
        raise ModelMismatchError(
            f"{where}: manifest input is {want_w}x{want_h} (width x height), so input {expected_in} is expected; "
            f"model input '{inputs[0].name}' is {_shape_text(in_shape)}"
        )

    nc = len(manifest.classes)
    out_shape = list(outputs[0].shape)
    ok = len(out_shape) == 3 and _dim(out_shape[0]) in (None, 1) and _dim(out_shape[1]) in (None, 4 + nc)
    if not ok:
        found = (
            f" ({out_shape[1] - 4} class scores)" if len(out_shape) == 3 and _dim(out_shape[1]) is not None else ""
        )
        raise ModelMismatchError(
            f"{where}: manifest lists {nc} classes, so output [1, {4 + nc}, N] is expected; "
            f"model output '{outputs[0].name}' is {_shape_text(out_shape)}{found}"
        )

    names_text = session.get_modelmeta().custom_metadata_map.get("names")
    if names_text is not None:
        try:
            raw = ast.literal_eval(names_text)
            names = [raw[k] for k in sorted(raw)] if isinstance(raw, dict) else list(raw)
        except (ValueError, SyntaxError, TypeError) as e:
            raise ModelMismatchError(f"{where}: model metadata 'names' is not a Python literal: {names_text!r}") from e
        if [str(n) for n in names] != manifest.class_names:
            raise ModelMismatchError(
                f"{where}: manifest classes are {manifest.class_names}; model metadata 'names' are {names}"
            )


class Detector:
    """One ONNX model with its manifest: frames in, :class:`Detections` in frame pixels out.

    The onnxruntime session is created once and reused; the detector keeps no per-call state.
    """

    def __init__(self, path: str | Path, *, intra_op_num_threads: int = 2, verify_sha256: bool = True,
                 flip: bool = False) -> None:
        """Load a model from its manifest path, or from the model path with ``<stem>.manifest.json`` beside it.

        Args:
            path: ``x.manifest.json`` or ``x.onnx``.
            intra_op_num_threads: onnxruntime threads for one inference. More threads cut latency
                but compete with decoding and other cameras on a small box; 2 suits a 2-core edge node.
            verify_sha256: hash the model against the manifest at load (catches swapped files).
            flip: also run every input mirrored left-right and average the two views (twice the inference; what it
                buys is measured in the README, 'The detector').

        Raises:
            ManifestError: missing or invalid manifest.
            ModelMismatchError: the model disagrees with its manifest.
        """
        path = Path(path)
        if path.name.endswith(MANIFEST_SUFFIX):
            manifest_path, given_model = path, None
        else:
            manifest_path, given_model = manifest_path_for(path), path
            if not manifest_path.is_file():
                raise ManifestError(f"{path}: no manifest beside the model (expected {manifest_path})")
        self.manifest: Manifest = load_manifest(manifest_path, verify_sha256=verify_sha256)
        self.manifest_path: Path = manifest_path
        self.model_path: Path = model_path_of(manifest_path, self.manifest)
        if given_model is not None and given_model.resolve() != self.model_path.resolve():
            raise ModelMismatchError(
                f"{given_model}: its manifest {manifest_path} names model_file {self.manifest.model_file!r}, not this file"
            )

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        options.inter_op_num_threads = 1
        # onnxruntime's worker threads spin for a while after each run, waiting for the next one. A box scans
        # every couple of seconds, so that spinning is pure waste: measured on the shipped model, 91 → 43 ms of
        # CPU per inference (2 threads), the wall time unchanged or better
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"])
        verify_model_matches_manifest(self._session, self.manifest, self.model_path)

        model_input = self._session.get_inputs()[0]
        self._input_name: str = model_input.name
        self._output_name: str = self._session.get_outputs()[0].name
        self.dynamic_batch: bool = _dim(model_input.shape[0]) is None
        self._thresholds = np.asarray(self.manifest.thresholds, dtype=np.float32)
        self._names = np.asarray(self.manifest.class_names)
        self.flip: bool = flip
        logger.info(
            "loaded %s (%s %s): input %dx%d, %d classes, batch %s%s",
            self.model_path,
            self.manifest.name,
            self.manifest.version,
            self.manifest.input.width,
            self.manifest.input.height,
            len(self._names),
            "dynamic" if self.dynamic_batch else "1",
            ", mirrored views averaged" if flip else "",
        )

    @property
    def class_names(self) -> list[str]:
        """Class names in model id order (from the manifest, verified against the model)."""
        return self.manifest.class_names

    def preprocess(self, images: Sequence[Pixels]) -> tuple[np.ndarray, list[LetterboxParams]]:
        """Letterbox BGR frames (or I420 planes) into one ``(n, 3, H, W)`` float32 batch in the manifest's colour
        and scale; with `flip`, ``(2n, 3, H, W)``: the n inputs, then the same n mirrored (the canvas itself, so a
        box maps back exactly: x -> W - x)."""
        spec = self.manifest.input
        batch = np.empty((len(images), 3, spec.height, spec.width), dtype=np.float32)
        params: list[LetterboxParams] = []
        for i, image in enumerate(images):
            image = image if isinstance(image, Yuv420) else _as_bgr(image)
            canvas, p = letterbox(image, spec.height, spec.width, spec.pad_value)
            if spec.color == "RGB":
                canvas = canvas[..., ::-1]
            batch[i] = canvas.transpose(2, 0, 1)
            params.append(p)
        batch *= np.float32(spec.scale)
        if self.flip:
            batch = np.concatenate([batch, batch[..., ::-1]])
        return batch, params

    def _resolve_thresholds(self, conf: float | Sequence[float] | np.ndarray | None) -> np.ndarray:
        if conf is None:
            return self._thresholds
        arr = np.asarray(conf, dtype=np.float32)
        if arr.ndim == 0:
            return np.full(len(self._names), float(arr), dtype=np.float32)
        if arr.shape != (len(self._names),):
            raise ValueError(f"conf must be a scalar or one threshold per class, shape ({len(self._names)},); got {arr.shape}")
        return arr

    def postprocess(
        self,
        output: np.ndarray,
        params: Sequence[LetterboxParams],
        conf: float | Sequence[float] | np.ndarray | None = None,
    ) -> list[Detections]:
        """Decode ``[n, 4+nc, N]`` model output into one :class:`Detections` per frame.

        Each candidate takes its best class (single label per box); it is kept when its score is
        at or above that class's threshold: the manifest's per-class thresholds, or ``conf`` (a
        scalar for all classes or one value per class). Then class-aware NMS, the manifest's
        ``max_detections`` cap, mapping to frame pixels and clipping to the frame.
        """
        output = np.asarray(output)
        nc = len(self._names)
        n = len(params) * (2 if self.flip else 1)
        if output.ndim != 3 or output.shape[1] != 4 + nc or output.shape[0] != n:
            raise ValueError(f"output must have shape ({n}, {4 + nc}, N), got {output.shape}")
        thresholds = self._resolve_thresholds(conf)
        if self.flip:
            return [self._decode_mirrored(pred, mirrored, p, thresholds)
                    for pred, mirrored, p in zip(output[:len(params)], output[len(params):], params)]
        return [self._to_frame(*self._view(pred, thresholds), p) for pred, p in zip(output, params)]

    def _view(self, pred: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One input's boxes (input pixels), scores and classes at or above `thresholds`, after class-aware NMS."""
        scores = pred[4:]  # (nc, N)
        class_id = scores.argmax(axis=0)
        confidence = np.take_along_axis(scores, class_id[None, :], axis=0)[0]
        keep = np.flatnonzero(confidence >= thresholds[class_id])
        if keep.size > MAX_NMS_CANDIDATES:
            keep = keep[np.argpartition(-confidence[keep], MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]]
        cx, cy, w, h = pred[:4, keep].astype(np.float32)
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        confidence, class_id = confidence[keep].astype(np.float32), class_id[keep]
        kept = nms(xyxy, confidence, class_id, self.manifest.nms_iou, self.manifest.max_detections)
        return xyxy[kept], confidence[kept], class_id[kept]

    def _decode_mirrored(self, pred: np.ndarray, mirrored: np.ndarray, p: LetterboxParams,
                         thresholds: np.ndarray) -> Detections:
        """Fuse an input's view and its mirror's: scores averaged over the two views (see FLIP_MATCH_IOU), then
        the thresholds and NMS over both views' boxes."""
        floor = thresholds * np.float32(FLIP_FLOOR)
        a, b = self._view(pred, floor), self._view(mirrored, floor)
        width = np.float32(self.manifest.input.width)
        b_xyxy = np.stack([width - b[0][:, 2], b[0][:, 1], width - b[0][:, 0], b[0][:, 3]], axis=1)
        xyxy = np.concatenate([a[0], b_xyxy])
        confidence, class_id = np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]])
        view = np.repeat([0, 1], [len(a[1]), len(b[1])])
        if len(confidence):
            overlap = box_iou(xyxy, xyxy)
            other = (overlap >= FLIP_MATCH_IOU) & (class_id[:, None] == class_id[None, :]) & (view[:, None] != view[None, :])
            match = np.where(other, confidence[None, :], -1.0).argmax(axis=1)  # the other view's surest match
            has = other[np.arange(len(match)), match]
            # a matched pair becomes one box, the mean of both in place and score, whichever view it is read from
            xyxy = np.where(has[:, None], (xyxy + xyxy[match]) / 2, xyxy)
            confidence = ((confidence + np.where(has, confidence[match], 0.0)) / 2).astype(np.float32)
        keep = np.flatnonzero(confidence >= thresholds[class_id])
        xyxy, confidence, class_id = xyxy[keep], confidence[keep], class_id[keep]
        kept = nms(xyxy, confidence, class_id, self.manifest.nms_iou, self.manifest.max_detections)
        return self._to_frame(xyxy[kept], confidence[kept], class_id[kept], p)

    def _to_frame(self, xyxy: np.ndarray, confidence: np.ndarray, class_id: np.ndarray,
                  p: LetterboxParams) -> Detections:
        """Boxes from input pixels to the frame's, clipped to it."""
        xyxy = xyxy.astype(np.float32, copy=True)
        xyxy -= np.array([p.left, p.top, p.left, p.top], dtype=np.float32)
        xyxy /= np.array([p.gain_x, p.gain_y, p.gain_x, p.gain_y], dtype=np.float32)
        np.clip(xyxy[:, 0::2], 0, p.orig_width, out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0, p.orig_height, out=xyxy[:, 1::2])
        return Detections(xyxy=xyxy, confidence=confidence, class_id=class_id, data={"class_name": self._names[class_id]})

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.dynamic_batch or len(batch) == 1:
            return self._session.run([self._output_name], {self._input_name: batch})[0]
        return np.concatenate(
            [self._session.run([self._output_name], {self._input_name: batch[i : i + 1]})[0] for i in range(len(batch))]
        )

    def detect_batch(
        self, images: Sequence[Pixels], conf: float | Sequence[float] | np.ndarray | None = None
    ) -> list[Detections]:
        """Detect in several BGR frames (or I420 planes): one ``session.run`` if the batch dim is dynamic, else one
        per frame."""
        if len(images) == 0:
            return []
        batch, params = self.preprocess(images)
        return self.postprocess(self._run(batch), params, conf)

    def detect(self, image: Pixels, conf: float | Sequence[float] | np.ndarray | None = None) -> Detections:
        """Detect in one BGR frame (or I420 planes); boxes in that frame's pixels."""
        return self.detect_batch([image], conf)[0]

    def detect_tiled(self, image: Pixels, tiles: Sequence[tuple[int, int, int, int]],
                     conf: float | Sequence[float] | np.ndarray | None = None) -> Detections:
        """Detect in the whole frame and in each pixel rectangle `tiles` (x0, y0, x1, y1) as its own crop, so a
        small far thing is seen at up to native resolution; boxes in frame pixels, duplicates removed by NMS."""
        if not tiles:
            return self.detect(image, conf)
        return self.merge_tiles(self.detect_batch(tile_crops(image, tiles), conf), tiles, frame_size(image))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model on a preprocessed batch (one call where the batch dimension is free)."""
        return self._run(batch)

    def merge_tiles(self, found: Sequence[Detections], tiles: Sequence[tuple[int, int, int, int]],
                    size: tuple[int, int]) -> Detections:
        """Detections of the whole frame (`size` = width, height) and of its tile crops (as `tile_crops` made them)
        as one set in frame pixels: each crop's boxes shifted to its place, and one box kept where the whole frame
        and a tile (or two overlapping tiles) saw the same thing. A tile's box cut by the tile's edge inside the
        frame sees part of a thing, and is dropped where another view's uncut box holds it and goes on well past the
        cut: held-out scenario 821, a far puddle split by the two half tiles read as a material pile on one side of
        the cut (0.91). A box the edge only trims stays (851: a puddle's 0.86 box, 14 px short, had given way to a
        0.78 whole-frame box under ponding's threshold)."""
        if not tiles:
            return found[0]
        shifted = [found[0]] + [replace(d, xyxy=d.xyxy + np.array([x0, y0, x0, y0], dtype=d.xyxy.dtype))
                                for d, (x0, y0, _, _) in zip(found[1:], tiles)]
        merged = Detections.merge(shifted)
        if len(merged) == 0:
            return merged
        w, h = size
        inner = [np.zeros(4)] + [np.array([x0, y0, -x1, -y1], np.float64) * [x0 > 0, y0 > 0, x1 < w, y1 < h]
                                 for x0, y0, x1, y1 in tiles]  # the tile's edges inside the frame (0: none)
        signs = np.array([1.0, 1.0, -1.0, -1.0])
        edge = np.concatenate([np.repeat(e[None], len(d), axis=0) for e, d in zip(inner, shifted)])
        sides = (edge != 0) & (np.abs(merged.xyxy * signs - edge) <= CUT_EDGE_PX)  # (n, 4): which sides are cut
        cut = sides.any(axis=1)
        if cut.any() and (~cut).any():
            part, whole = merged.xyxy[cut].astype(np.float64), merged.xyxy[~cut].astype(np.float64)
            beyond = (part[:, None, :] - whole[None, :, :]) * signs  # how far each uncut box reaches past each side
            across = np.tile(part[:, 2:] - part[:, :2], 2)  # the part's width, height, width, height
            reaches = ((beyond >= CUT_BEYOND_SHARE * across[:, None, :]) & sides[cut][:, None, :]).any(axis=2)
            held = ((box_inside_share(part, whole) >= CUT_HELD_SHARE) & reaches).any(axis=1)
            drop = np.flatnonzero(cut)[held]
            if len(drop):
                merged = merged[np.setdiff1d(np.arange(len(merged)), drop)]
        return merged[nms(merged.xyxy, merged.confidence, merged.class_id, self.manifest.nms_iou,
                          self.manifest.max_detections)]


def frame_size(image: Pixels) -> tuple[int, int]:
    """(width, height) of a BGR frame or I420 planes."""
    if isinstance(image, Yuv420):
        return image.width, image.height
    return int(image.shape[1]), int(image.shape[0])


def tile_crops(image: Pixels, tiles: Sequence[tuple[int, int, int, int]]) -> list[Pixels]:
    """The frame itself, then each tile rectangle (x0, y0, x1, y1) of it as a crop (views, no copies). Crops
    are cut from BGR: I420 planes with tiles are converted here (the caller can pass a BGR it keeps anyway)."""
    if not tiles:
        return [image]
    if isinstance(image, Yuv420):
        image = image.bgr()
    return [image] + [image[y0:y1, x0:x1] for x0, y0, x1, y1 in tiles]


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept grey and BGRA frames too, so a camera's pixel format is not the detector's problem."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"image must be (h, w, 3) BGR, (h, w) grey or (h, w, 4) BGRA; got shape {image.shape}")
