"""Evidence pictures: the frame with the incident's box drawn, as a JPEG a seat operator can judge at a glance."""
from __future__ import annotations

import cv2
import numpy as np

COLOURS = {"manhole_open": (0, 0, 255), "ponding": (255, 160, 0), "garbage_pile": (0, 200, 255),
           "material_pile": (0, 128, 255), "illegal_structure": (255, 0, 255), "manhole_cover": (0, 200, 0)}


def draw_box(image: np.ndarray, box: np.ndarray, label: str, colour: tuple[int, int, int]) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    t = max(2, int(round(min(h, w) / 300)))
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x0, y0), (x1, y1), colour, t)
    scale = max(0.5, min(h, w) / 900)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, t // 2))
    ty = y0 - 4 if y0 - th - 6 > 0 else min(y1 + th + 6, h - 2)
    cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 6, ty + base - 2), colour, -1)
    cv2.putText(out, label, (x0 + 3, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, t // 2), cv2.LINE_AA)
    return out


def evidence_jpeg(image: np.ndarray, box: np.ndarray, class_name: str, confidence: float,
                  max_width: int = 1280, quality: int = 80) -> bytes:
    """The whole frame (context matters to a human), box and label drawn, at most `max_width` wide."""
    img = draw_box(image, box, f"{class_name} {confidence:.2f}", COLOURS.get(class_name, (0, 255, 255)))
    return frame_jpeg(img, max_width, quality)


def frame_jpeg(img: np.ndarray, max_width: int = 1280, quality: int = 80) -> bytes:
    """A frame as it is (the centre's `snapshot` command), at most `max_width` wide, like evidence pictures."""
    h, w = img.shape[:2]
    if w > max_width:
        img = cv2.resize(img, (max_width, int(h * max_width / w)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def draw_zones(image: np.ndarray, zones: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Zones (normalised polygons) drawn over a frame, for operators checking a rule file."""
    out = image.copy()
    h, w = out.shape[:2]
    overlay = out.copy()
    for i, (name, poly) in enumerate(zones):
        pts = (np.asarray(poly) * [w, h]).astype(np.int32)
        col = [(0, 255, 0), (255, 128, 0), (0, 128, 255), (255, 0, 255)][i % 4]
        cv2.fillPoly(overlay, [pts], col)
        cv2.polylines(out, [pts], True, col, 2)
        c = pts.mean(axis=0).astype(int)
        cv2.putText(out, name, (int(c[0]), int(c[1])), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return cv2.addWeighted(overlay, 0.25, out, 0.75, 0)
