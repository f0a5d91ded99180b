"""Rendering a planned scenario into an H.264 clip: the street and the static things present are drawn
and lit once per distinct set of them; each frame adds the moving traffic (lit and blurred on its own
pixels) and sensor noise, and is piped to ffmpeg/x264 as raw BGR. It also measures, frame by frame, when a
stopped vehicle hides an incident: those runs become the truth's occlusions."""
from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from . import traffic
from .camera import PoleCamera
from .render import Layer, composite
from .scene import FLAT, Scene, Thing, apply_lighting, render_background, shadow_layer

if TYPE_CHECKING:
    from .scenario import Plan, View

NOISE_SIGMA = 1.5  # temporal sensor noise, grey levels
# optics: blur σ (px at 1280 wide) grows from near to far ground. The street is drawn by warping a texture
# without prefiltering, so far ground aliases into pixel noise that no camera shows and that doubles the
# size of every keyframe; more blur shrinks clips further, but softens small far incidents
BLUR_NEAR, BLUR_FAR, BLUR_D0, BLUR_D1 = 0.7, 1.4, 10.0, 50.0
DRAW_RANGE_M = 90.0  # the rendered ground ends near here (scene._ground_canvas); movers beyond are skipped
OCCLUDED = 0.5  # a stopped vehicle covering at least this share of an incident's pixels is an occlusion
MIN_OCCLUSION_S = 2.0  # shorter cover (a vehicle braking past another incident) counts as passing traffic

# x264 for small, deterministic clips: a keyframe every 2 s at 5 fps (the pipeline scans keyframes), one
# thread (bit-exact output). CRF trades keyframe detail for size; measured per 5 minutes at 1280x720, 5 fps:
# CRF 26 → 16.8 MB, 28 → 11.7 MB, 30 → 5–9 MB (tiled pavements cost most); a slower preset does not help
CRF = 30
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(CRF), "-g", "10", "-keyint_min", "10", "-sc_threshold", "0",
        "-bf", "0", "-pix_fmt", "yuv420p", "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-map_metadata", "-1", "-movflags", "+faststart"]


def require_ffmpeg() -> str:
    """The ffmpeg executable, or one RuntimeError that says to install it."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg was not found on PATH; scenario clips are encoded with it: install ffmpeg "
                           "(e.g. apt-get install ffmpeg) and try again")
    return exe


class _Lit:
    """A camera's lighting, fixed for the clip, as a per-pixel affine map (img·G + B) read off
    scene.apply_lighting by probing it twice with one random stream: it lights the cached street once and
    each moving layer on its own pixels, instead of re-lighting every full frame."""

    def __init__(self, scene: Scene, bg: np.ndarray, seed: int) -> None:
        h, w = bg.shape[:2]
        probe = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, 1.0, -1.0).astype(np.float32)[..., None]
        l0 = apply_lighting(scene, bg, np.random.default_rng(seed)).astype(np.float32)
        l1 = apply_lighting(scene, bg + probe, np.random.default_rng(seed)).astype(np.float32)
        self.G = (l1 - l0) * probe  # probe is ±1 with zero mean, so global terms (overcast's mean) cancel
        self.B = l0 - self.G * bg

    def image(self, img: np.ndarray) -> np.ndarray:
        return img * self.G + self.B

    def layer(self, lay: Layer) -> Layer:
        h, w = lay.alpha.shape
        sl = (slice(lay.y0, lay.y0 + h), slice(lay.x0, lay.x0 + w))
        return Layer(lay.rgb * self.G[sl] + self.B[sl] * lay.alpha[..., None], lay.alpha, lay.x0, lay.y0)


class _Optics:
    """The lens: a blur that grows with ground distance (BLUR_NEAR → BLUR_FAR), for the cached street image
    and, by each one's distance, for the layers composited on it."""

    def __init__(self, cam: PoleCamera, dist: np.ndarray) -> None:
        self.scale = cam.width / 1280
        d = np.where(np.isfinite(dist), dist, BLUR_D1)
        self.w = np.clip((d - BLUR_D0) / (BLUR_D1 - BLUR_D0), 0, 1).astype(np.float32)[..., None]
        self.width, self.height = cam.width, cam.height

    def sigma(self, d: float) -> float:
        k = min(max((d - BLUR_D0) / (BLUR_D1 - BLUR_D0), 0.0), 1.0)
        return (BLUR_NEAR + (BLUR_FAR - BLUR_NEAR) * k) * self.scale

    def image(self, img: np.ndarray) -> np.ndarray:
        near = cv2.GaussianBlur(img, (0, 0), BLUR_NEAR * self.scale)
        far = cv2.GaussianBlur(img, (0, 0), BLUR_FAR * self.scale)
        return near + (far - near) * self.w

    def layer(self, lay: Layer, d: float) -> Layer:
        """Blur a premultiplied layer, grown by the blur's reach so its edge softens outwards too."""
        s = self.sigma(d)
        p = int(math.ceil(2.5 * s))
        h, w = lay.alpha.shape
        x0, y0 = max(lay.x0 - p, 0), max(lay.y0 - p, 0)
        x1, y1 = min(lay.x0 + w + p, self.width), min(lay.y0 + h + p, self.height)
        rgb = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
        rgb[lay.y0 - y0:lay.y0 - y0 + h, lay.x0 - x0:lay.x0 - x0 + w] = lay.rgb
        alpha[lay.y0 - y0:lay.y0 - y0 + h, lay.x0 - x0:lay.x0 - x0 + w] = lay.alpha
        return Layer(cv2.GaussianBlur(rgb, (0, 0), s), cv2.GaussianBlur(alpha, (0, 0), s), x0, y0)


def render_camera(plan: Plan, view: View, path: Path, progress: Callable[[int, int], None] | None, done: int,
                   total: int) -> list[dict]:
    """Render one camera's clip into `path` through ffmpeg/x264; returns the occlusions seen in it.

    The street and the static things present are drawn and lit once per distinct set of present things;
    a frame is that image plus the movers (lit on their own pixels) and sensor noise."""
    cam, scene = view.cam, view.scene
    bg, dist = render_background(scene)
    lit = _Lit(scene, bg, int(plan.rng("light").integers(2**31)))
    optics = _Optics(cam, dist)
    fixed = plan.items
    day = scene.lighting == "day"
    noise = plan.rng(f"noise-{view.name}")
    t_start = np.array([m.t_start for m in plan.movers])
    t_end = np.array([m.t_end for m in plan.movers])
    incidents = plan.incidents
    covered: dict[str, list[tuple[int, float]]] = {}
    key: tuple[int, ...] | None = None
    base = np.zeros(0, np.float32)
    uprights: list[tuple[float, Layer]] = []
    fps = Fraction(plan.fps).limit_denominator(1001)
    cmd = [require_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{cam.width}x{cam.height}", "-r", f"{fps.numerator}/{fps.denominator}", "-i", "-", *X264, str(path)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            for k in range(plan.n_frames):
                t = k / plan.fps
                now = tuple(j for j, it in enumerate(fixed) if it.active(t))
                if now != key:
                    key = now
                    base, uprights = _static_image(view, bg, lit, optics, [fixed[j].thing for j in now], day)
                frame = base.copy()
                movers = []
                for i in np.nonzero((t_start <= t) & (t_end >= t))[0]:
                    m = plan.movers[i]
                    xy = m.position(t)
                    d = view.depth(xy)
                    if d > DRAW_RANGE_M or not _near_image(cam, xy):
                        continue
                    lay = traffic.draw(m, cam, xy)
                    if lay is None:
                        continue
                    movers.append((d, optics.layer(lit.layer(lay), d), m, lay))
                    if day and (sh := shadow_layer(scene, Thing(-1, "car" if m.lane >= 0 else "pedestrian", None,
                                                                  xy[0], xy[1], m.length, 0))) is not None:
                        composite(frame, optics.layer(lit.layer(sh), d))
                for _, lay in sorted(uprights + [(d, lay) for d, lay, _, _ in movers], key=lambda o: -o[0]):
                    composite(frame, lay)
                for d, _, m, lay in movers:
                    if m.stop_for is None:
                        continue
                    for it in incidents:
                        if it.active(t) and (it.thing.kind in FLAT or d < view.depth(it.thing.xy)):
                            c = view.coverage(it.thing, [lay])
                            if c >= OCCLUDED:
                                covered.setdefault(it.name, []).append((k, c))
                frame += noise.standard_normal(frame.shape[:2], dtype=np.float32)[..., None] * NOISE_SIGMA
                np.clip(frame, 0, 255, out=frame)
                proc.stdin.write(frame.astype(np.uint8).tobytes())
                if progress:
                    progress(done + k + 1, total)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed ({rc}) writing {path}: {err.read().decode(errors='replace')[-800:]}")
    return _intervals(covered, plan.fps, view.name)


def _near_image(cam: PoleCamera, xy: tuple[float, float]) -> bool:
    """Cheap cull: is a mover's centre in front of the camera and within half a frame of the image?"""
    uv, z = cam.project(np.array([[xy[0], xy[1], 0.8]]))
    u, v = uv[0]
    return z[0] > 0.5 and -0.5 * cam.width < u < 1.5 * cam.width and -0.5 * cam.height < v < 1.5 * cam.height


def _static_image(view: View, bg: np.ndarray, lit: _Lit, optics: _Optics, things: list[Thing],
                  day: bool) -> tuple[np.ndarray, list[tuple[float, Layer]]]:
    """The lit street with its flat things and shadows painted in (far to near), and the lit upright layers
    to sort with the movers in each frame."""
    scene = view.scene
    img = bg.copy()
    flats = sorted(((d, lay) for t in things if t.kind in FLAT for d, lay in view.layers(t)), key=lambda o: -o[0])
    for _, lay in flats:
        composite(img, lay)
    if day:
        for t in things:
            if t.kind not in FLAT and (sh := shadow_layer(scene, t)) is not None:
                composite(img, sh)
    ups = [(d, optics.layer(lit.layer(lay), d)) for t in things if t.kind not in FLAT for d, lay in view.layers(t)]
    return optics.image(lit.image(img)) + np.float32(0.5), ups  # +0.5: the uint8 cast then rounds


def _intervals(covered: dict[str, list[tuple[int, float]]], fps: float, camera: str) -> list[dict]:
    """Runs of consecutive covered frames → occlusion records [start_s, end_s) of at least MIN_OCCLUSION_S."""
    out = []
    for name, frames in covered.items():
        frames.sort()
        run = [frames[0]]
        for f in frames[1:] + [(-10, 0.0)]:
            if f[0] == run[-1][0] + 1:
                run.append(f)
                continue
            s, e = run[0][0] / fps, (run[-1][0] + 1) / fps
            if e - s >= MIN_OCCLUSION_S - 1e-9:
                out.append({"incident_id": name, "start_s": round(s, 3), "end_s": round(e, 3), "camera": camera,
                            "max_coverage": round(max(c for _, c in run), 3)})
            run = [f]
    return out
