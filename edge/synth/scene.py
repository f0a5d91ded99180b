"""A street scene: camera, ground layout, lighting and the things on the ground; sampled from a seed and
rendered to an image with labels that carry their ground positions."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import objects as ob
from .camera import PoleCamera
from .render import Face, Layer, composite, ground_patch, render_faces
from .textures import asphalt, concrete, smooth_noise, tiles

CLASSES = ["manhole_cover", "manhole_open", "ponding", "garbage_pile", "material_pile", "illegal_structure"]
# vans and box trucks stand in for the parked vehicles a structure detector must not take for a shed
NEGATIVES = ["grate", "painted", "oil", "repair", "wet", "shadow_tree", "car", "pedestrian", "bin", "cart", "tree",
             "van", "truck"]
VEHICLES = ("car", "van", "truck")
FLAT = {"manhole_cover", "manhole_open", "ponding", "grate", "painted", "oil", "repair", "wet", "shadow_tree"}
LIGHTING = ["day", "day", "day", "overcast", "overcast", "dusk", "night", "rain", "wet"]

# typical ground size (m) and the smallest size in pixels at which a label is still worth learning
SIZE_M = {"manhole_cover": (0.6, 0.85), "manhole_open": (0.6, 0.85), "ponding": (1.2, 7.0), "garbage_pile": (0.8, 2.5),
          "material_pile": (1.0, 3.0), "illegal_structure": (2.0, 4.5), "grate": (0.4, 0.9), "painted": (0.5, 1.5),
          "oil": (0.5, 2.5), "repair": (0.8, 3.0), "wet": (2.0, 8.0), "shadow_tree": (2.0, 6.0), "car": (4.5, 4.5),
          "pedestrian": (0.5, 0.5), "bin": (0.8, 1.5), "cart": (1.3, 1.3), "tree": (1.0, 1.0), "van": (5.5, 5.5),
          "truck": (7.0, 7.0)}
MIN_PX = {"manhole_cover": 9, "manhole_open": 9, "ponding": 14, "garbage_pile": 12, "material_pile": 12, "illegal_structure": 16}


@dataclass
class Thing:
    """One object on the ground: `cls` is its label class, None for negatives and traffic."""

    id: int
    kind: str
    cls: str | None
    x: float
    y: float
    size: float
    seed: int
    yaw: float = 0.0

    @property
    def xy(self) -> tuple[float, float]:
        return (self.x, self.y)


@dataclass
class Scene:
    camera: PoleCamera
    layout: str  # road, plaza, alley
    lighting: str
    seed: int
    road_x: float = 0.0
    road_w: float = 10.0
    pave_w: float = 4.0
    things: list[Thing] = field(default_factory=list)
    sun_dir: float = 0.0


# ----------------------------------------------------------------------------- sampling
def sample_camera(rng: np.random.Generator, width: int, height: int) -> PoleCamera:
    h = rng.uniform(3.0, 12.0)
    tilt = rng.uniform(15.0, 60.0)
    hfov = rng.uniform(45.0, 90.0)
    vfov = 2 * math.degrees(math.atan(math.tan(math.radians(hfov) / 2) * height / width))
    # keep the view on the ground: the top edge must not look far above the horizon
    tilt = max(tilt, vfov / 2 - 12)
    return PoleCamera.from_hfov(width, height, hfov, h, tilt, heading_deg=rng.uniform(-60, 60))


def building_line(scene: Scene) -> float | None:
    """Lateral distance from the road's axis to the building walls (None on a plaza, which has none)."""
    if scene.layout == "plaza":
        return None
    return scene.road_w / 2 + (0.15 + scene.pave_w if scene.layout == "road" else 0)


def region_at(scene: Scene, x: np.ndarray) -> np.ndarray:
    """0 road, 1 curb, 2 pavement, 3 beyond (building line) — by lateral position."""
    if scene.layout == "plaza":
        return np.full(np.shape(x), 2)
    d = np.abs(np.asarray(x) - scene.road_x)
    half = scene.road_w / 2
    if scene.layout == "alley":
        return np.where(d < half, 0, 3)
    return np.where(d < half, 0, np.where(d < half + 0.15, 1, np.where(d < half + 0.15 + scene.pave_w, 2, 3)))


def _visible_ground_sample(rng: np.random.Generator, cam: PoleCamera, n: int) -> np.ndarray:
    hv = max(cam.horizon_v() + 0.06 * cam.height, 0)
    u = rng.uniform(0.03 * cam.width, 0.97 * cam.width, n)
    v = rng.uniform(hv + (cam.height - hv) * 0.05, cam.height * 0.98, n)
    return cam.image_to_ground(np.column_stack([u, v]))


def _clear_of(xy: np.ndarray, r: float, foot: list[tuple[float, float, float]]) -> bool:
    """Whether a footprint of radius `r` at ground `xy` keeps clear of every (x, y, radius) already placed."""
    return not any(math.hypot(xy[0] - fx, xy[1] - fy) < r + fr for fx, fy, fr in foot)


def sample_things(rng: np.random.Generator, scene: Scene, n_incidents: int, n_negatives: int,
                  classes: list[str] | None = None, max_dist: float = 60.0) -> list[Thing]:
    """Place incidents and negatives where they are visible, big enough to learn, not overlapping, and on
    plausible ground (structures off the carriageway, covers and water anywhere)."""
    cam = scene.camera
    things: list[Thing] = []
    foot: list[tuple[float, float, float]] = []

    def place(kind: str, cls: str | None) -> None:
        lo, hi = SIZE_M[kind]
        for _ in range(40):
            size = float(rng.uniform(lo, hi))
            xy = _visible_ground_sample(rng, cam, 1)[0]
            if not np.isfinite(xy).all() or cam.ground_distance(xy) > max_dist or cam.ground_distance(xy) < 1.5:
                continue
            reg = int(region_at(scene, xy[0]))
            if kind in ("illegal_structure", "tree", "bin", "pedestrian", "cart") and reg == 0 and scene.layout == "road":
                continue
            if kind in VEHICLES and reg not in (0,):
                continue
            wall = building_line(scene)
            if wall is not None and abs(xy[0] - scene.road_x) + size / 2 > wall:
                # behind (or through) a building wall: the walls are painted before the things, so a cover or a
                # puddle there came out painted on the facade, labelled (a fifth of all covers in a test set)
                continue
            mpp = float(cam.metres_per_pixel(xy[None])[0])
            if cls is not None and size / mpp < MIN_PX[cls] * cam.width / 640:
                continue
            if size / mpp > cam.width * 0.6:
                continue
            r = size / 2 + (1.2 if kind in (*VEHICLES, "illegal_structure") else 0.3)
            if not _clear_of(xy, r, foot):
                continue
            yaw = (float(rng.uniform(0, 2 * math.pi)) if kind not in VEHICLES
                   else (0.0 if rng.random() < 0.8 else math.pi / 2))
            things.append(Thing(len(things), kind, cls, float(xy[0]), float(xy[1]), size, int(rng.integers(2**31)), yaw))
            foot.append((float(xy[0]), float(xy[1]), r))
            return

    cls_pool = classes or CLASSES
    for _ in range(n_incidents):
        c = cls_pool[rng.integers(len(cls_pool))]
        place(c, c)
    for _ in range(n_negatives):
        k = NEGATIVES[rng.integers(len(NEGATIVES))]
        place(k, None)
    return things


def add_water_at_covers(scene: Scene, rng: np.random.Generator, share: float) -> list[Thing]:
    """Standing water under some covers, open manholes and drain grates: where rain actually collects.

    The sampler keeps things apart, so the model never saw a cover inside a puddle, and in scenario 781 a small
    puddle around a cover read as manhole_cover/manhole_open (0.55) and never as ponding (0.33). Each host gets
    a puddle with probability `share`, painted before it (the cover lies on top) and labelled as ponding; added
    after sampling with its own generator, so that scenes rendered without them stay byte-identical."""
    cam = scene.camera
    added: list[Thing] = []
    next_id = max((t.id for t in scene.things), default=-1) + 1
    for host in [t for t in scene.things if t.kind in ("manhole_cover", "manhole_open", "grate")]:
        if rng.random() >= share:
            continue
        size = float(rng.uniform(max(1.3, 1.8 * host.size), 4.0))
        ang, off = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.0, 0.3)) * size
        xy = np.array([host.x + off * math.cos(ang), host.y + off * math.sin(ang)])
        mpp = float(cam.metres_per_pixel(xy[None])[0])
        if not np.isfinite(mpp) or size / mpp < MIN_PX["ponding"] * cam.width / 640 or size / mpp > cam.width * 0.6:
            continue
        others = [(t.x, t.y, t.size / 2) for t in scene.things if t is not host]
        if not _clear_of(xy, size / 2, others):
            continue
        t = Thing(next_id, "ponding", "ponding", float(xy[0]), float(xy[1]), size, int(rng.integers(2**31)),
                  float(rng.uniform(0, 2 * math.pi)))
        next_id += 1
        scene.things.insert(scene.things.index(host), t)
        added.append(t)
    return added


def add_edge_vehicles(scene: Scene, rng: np.random.Generator, n: int) -> list[Thing]:
    """Vehicles on the carriageway whose middle lies just outside the frame, so only their front or back shows.

    Real footage is full of them (a car driving in or out of view); the fully visible cars of the other
    negatives did not teach the model that half a car is still no garbage pile (real road clips: cut-off cars
    read as garbage_pile at 0.74-0.86). Added to a scene after sampling, with their own generator, so that
    scenes rendered without them stay byte-identical."""
    cam = scene.camera
    w, h = cam.width, cam.height
    hv = max(cam.horizon_v() + 0.06 * h, 0)
    foot = [(t.x, t.y, t.size / 2 + 1.2) for t in scene.things]
    added: list[Thing] = []
    for _ in range(n):
        for _ in range(60):
            side = int(rng.integers(3))
            if side == 2:  # below the frame: the camera looks down on a vehicle passing under it
                u, v = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(1.0 * h, 1.12 * h)
            else:
                u = rng.uniform(-0.12 * w, -0.01 * w) if side == 0 else rng.uniform(1.01 * w, 1.12 * w)
                v = rng.uniform(hv + (h - hv) * 0.2, h * 1.05)
            xy = cam.image_to_ground(np.array([[u, v]]))[0]
            if not np.isfinite(xy).all() or not 2.0 < float(cam.ground_distance(xy)) < 45.0:
                continue
            if scene.layout != "plaza" and int(region_at(scene, xy[0])) != 0:
                continue
            kind = VEHICLES[int(rng.integers(len(VEHICLES)))]
            size = SIZE_M[kind][0]
            if size / float(cam.metres_per_pixel(xy[None])[0]) > w * 0.8:
                continue
            r = size / 2 + 1.2
            if not _clear_of(xy, r, foot):
                continue
            yaw = 0.0 if rng.random() < 0.8 else math.pi / 2
            # it must straddle the edge: part of its body (a little inside its real box, ground to roof) in the
            # frame, part not; box axes as objects.box_faces lays them: width along yaw, length across
            hw, hl = {"car": 0.8, "van": 0.9, "truck": 1.0}[kind], 0.45 * size
            c, sn = math.cos(yaw), math.sin(yaw)
            body = np.array([[xy[0] + a * hw * c - b * hl * sn, xy[1] + a * hw * sn + b * hl * c, z]
                             for a in (-1, 0, 1) for b in (-1, 0, 1) for z in (0.0, 1.2)])
            uv, depth = cam.project(body)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            # (the renderer drops a body that reaches behind the camera: such a vehicle would not show at all)
            if (depth <= 0.5).any() or inside.sum() < 2 or inside.all():
                continue
            t = Thing(len(scene.things), kind, None, float(xy[0]), float(xy[1]), size, int(rng.integers(2**31)), yaw)
            scene.things.append(t)
            added.append(t)
            foot.append((t.x, t.y, r))
            break
    return added


def sample_scene(seed: int, width: int = 640, height: int = 384, n_incidents: int | None = None,
                 n_negatives: int | None = None, classes: list[str] | None = None) -> Scene:
    rng = np.random.default_rng(seed)
    cam = sample_camera(rng, width, height)
    layout = str(rng.choice(["road", "road", "road", "plaza", "alley"]))
    road_w = float(rng.uniform(3.5, 6.0) if layout == "alley" else rng.uniform(6.0, 16.0))
    scene = Scene(cam, layout, str(rng.choice(LIGHTING)), seed, road_x=float(rng.uniform(-road_w * 0.7, road_w * 0.7)),
                  road_w=road_w, pave_w=float(rng.uniform(2.0, 6.0)), sun_dir=float(rng.uniform(0, 2 * math.pi)))
    if n_incidents is None:
        n_incidents = int(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5]))
    if n_negatives is None:
        n_negatives = int(rng.integers(2, 10))
    scene.things = sample_things(rng, scene, n_incidents, n_negatives, classes)
    return scene


# ----------------------------------------------------------------------------- rendering
def _sky(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Sky colours at the zenith and the horizon (BGR) for the lighting."""
    return {
        "day": (np.array([230, 190, 150.0]), np.array([240, 225, 210.0])),
        "overcast": (np.array([200, 200, 200.0]), np.array([225, 225, 225.0])),
        "dusk": (np.array([150, 110, 120.0]), np.array([120, 170, 240.0])),
        "night": (np.array([40, 25, 20.0]), np.array([60, 50, 50.0])),
        "rain": (np.array([160, 160, 160.0]), np.array([190, 190, 190.0])),
        "wet": (np.array([190, 185, 180.0]), np.array([215, 215, 215.0])),
    }[scene.lighting]


def _ground_canvas(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-down picture of the ground over the visible area: (canvas, A canvas→ground, fog distance)."""
    cam = scene.camera
    hv = max(cam.horizon_v() + 2, 0)
    us = np.linspace(0, cam.width, 9)
    vs = np.linspace(hv, cam.height, 9)
    uv = np.array([(u, v) for u in us for v in vs])
    g = cam.image_to_ground(uv)
    g = g[np.isfinite(g).all(axis=1)]
    c = np.array([cam.x_m, cam.y_m])
    d = g - c
    dist = np.hypot(d[:, 0], d[:, 1])
    far = 90.0
    g = c + d * np.minimum(1, far / np.maximum(dist, 1e-6))[:, None]
    xmin, ymin = g.min(axis=0) - 1
    xmax, ymax = g.max(axis=0) + 1
    area = (xmax - xmin) * (ymax - ymin)
    res = max(0.025, math.sqrt(area / 1.2e6))
    W, H = int((xmax - xmin) / res), int((ymax - ymin) / res)
    ppm = 1 / res
    xs = xmin + (np.arange(W) + 0.5) * res
    ys = ymax - (np.arange(H) + 0.5) * res  # canvas row 0 is the far (max y) edge
    reg = region_at(scene, xs)[None, :].repeat(H, 0) if scene.layout != "plaza" else np.full((H, W), 2)
    base = float(rng.uniform(60, 120))
    asph = asphalt(rng, H, W, base)
    if scene.layout == "plaza":
        canvas = tiles(rng, H, W, ppm) if rng.random() < 0.7 else concrete(rng, H, W, ppm)
    else:
        pave = tiles(rng, H, W, ppm) if rng.random() < 0.75 else concrete(rng, H, W, ppm)
        road = asph if (scene.layout == "road" or rng.random() < 0.5) else concrete(rng, H, W, ppm)
        canvas = np.where((reg == 0)[..., None], road, pave)
        canvas[reg == 1] = rng.uniform(140, 200)
        if scene.layout == "road":
            _markings(scene, rng, canvas, xs, ys, reg)
    A = np.array([[res, 0, xmin], [0, -res, ymax], [0, 0, 1]])
    return canvas.astype(np.float32), A, np.array([xmin, ymin, xmax, ymax])


def _markings(scene: Scene, rng: np.random.Generator, canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, reg: np.ndarray) -> None:
    half = scene.road_w / 2
    lanes = max(1, int(scene.road_w / 3.5))
    lw = scene.road_w / lanes
    white = np.array([215, 215, 215], np.float32) * rng.uniform(0.75, 1.0)
    yellow = np.array([40, 180, 220], np.float32) * rng.uniform(0.75, 1.0)
    X = xs[None, :]
    Y = ys[:, None]
    period, dash = rng.uniform(6, 15), rng.uniform(2, 6)
    for k in range(1, lanes):
        x = scene.road_x - half + k * lw
        centre = k == lanes // 2 and lanes >= 2 and rng.random() < 0.6
        line = np.abs(X - x) < 0.075
        if centre:
            m = (np.abs(X - x - 0.15) < 0.075) | (np.abs(X - x + 0.15) < 0.075)
            canvas[np.broadcast_to(m, canvas.shape[:2])] = yellow
        else:
            m = line & ((Y % period) < dash)
            canvas[m] = white
    edge = (np.abs(X - (scene.road_x - half + 0.3)) < 0.075) | (np.abs(X - (scene.road_x + half - 0.3)) < 0.075)
    if rng.random() < 0.6:
        canvas[np.broadcast_to(edge, canvas.shape[:2])] = white
    if rng.random() < 0.3:  # zebra crossing
        y0 = rng.uniform(ys.min() + 5, ys.min() + 25)
        zebra = (Y > y0) & (Y < y0 + 4) & (np.abs(X - scene.road_x) < half - 0.3) & (((X - scene.road_x) % 1.0) < 0.45)
        canvas[zebra] = white
    wear = smooth_noise(rng, canvas.shape[0], canvas.shape[1], 40) * 0.25
    canvas *= (1 + np.clip(wear, -0.25, 0)[..., None] * (canvas.mean(axis=2, keepdims=True) > 170))


def _facades(scene: Scene, rng: np.random.Generator, img: np.ndarray) -> None:
    """Building walls along the edge of the pavement (roads, alleys): vertical textured quads."""
    half = building_line(scene)
    if half is None:
        return
    cam = scene.camera
    for side in (-1, 1):
        x = scene.road_x + side * half
        col = rng.uniform(80, 210, 3)
        height = rng.uniform(3.5, 18)
        tex = np.zeros((128, 128, 3), np.float32) + col
        for r in range(8, 128, 32):
            for c in range(8, 128, 24):
                cv2.rectangle(tex, (c, r), (c + 12, r + 16), tuple(float(v) for v in rng.uniform(20, 90, 3)), -1)
        shop = tex.copy()
        cv2.rectangle(shop, (0, 70), (127, 127), tuple(float(v) for v in rng.uniform(20, 140, 3)), -1)
        faces = []
        for y0 in np.arange(cam.y_m - 60, cam.y_m + 100, 8.0):
            pts = np.array([[x, y0, height], [x, y0 + 8, height], [x, y0 + 8, 0], [x, y0, 0]], float)
            if side > 0:
                pts = pts[[1, 0, 3, 2]]
            faces.append(Face(pts, shop if rng.random() < 0.5 else tex, rng.uniform(0.7, 1.0)))
        for f in faces:
            _, z = cam.project(f.pts)
            if (z > 0.5).all():
                lay = render_faces(cam, [f], cull=True, margin=0)
                if lay is not None:
                    composite(img, lay)


def render_background(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Sky, ground and buildings: (float BGR image, per-pixel ground distance in metres, inf above the horizon)."""
    rng = np.random.default_rng(scene.seed ^ 0x5EED)
    cam = scene.camera
    top, hor = _sky(scene)
    hv = cam.horizon_v()
    rows = np.clip((np.arange(cam.height) - (hv - cam.height)) / max(cam.height, 1), 0, 1)[:, None, None]
    img = (top * (1 - rows) + hor * rows).astype(np.float32) * np.ones((1, cam.width, 1), np.float32)
    canvas, A, _ = _ground_canvas(scene, rng)
    rgba = np.concatenate([canvas, np.full(canvas.shape[:2] + (1,), 255, np.float32)], axis=2)
    M = cam.ground_to_image_h() @ A
    warped = cv2.warpPerspective(rgba, M, (cam.width, cam.height), flags=cv2.INTER_LINEAR, borderValue=0)
    vv, uu = np.mgrid[0:cam.height, 0:cam.width]
    g = cam.image_to_ground(np.column_stack([uu.ravel(), vv.ravel()]).astype(np.float64))
    dist = np.hypot(g[:, 0] - cam.x_m, g[:, 1] - cam.y_m).reshape(cam.height, cam.width)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    a = (warped[..., 3:4] / 255.0) * (dist[..., None] < np.inf)
    img = img * (1 - a) + warped[..., :3] * a
    # far ground fades into haze
    fog = (1 - np.exp(-np.where(np.isfinite(dist), dist, 1e4) / rng.uniform(90, 250)))[..., None]
    img = img * (1 - fog) + hor * fog
    _facades(scene, rng, img)
    return img.astype(np.float32), dist


def _thing_layers(scene: Scene, t: Thing, cutouts: list[np.ndarray]) -> list[tuple[tuple[float, float], Layer]]:
    rng = np.random.default_rng(t.seed)
    cam = scene.camera
    night = scene.lighting == "night"
    if t.kind in FLAT:
        if t.kind == "manhole_cover":
            rgba, res = ob.manhole_cover(rng, t.size)
        elif t.kind == "manhole_open":
            ang = math.atan2(cam.y_m - t.y, cam.x_m - t.x) - t.yaw
            rgba, res = ob.manhole_open(rng, t.size, ang)
        elif t.kind == "ponding":
            top, hor = _sky(scene)
            elev = math.degrees(math.atan2(cam.height_m, max(cam.ground_distance(np.array(t.xy)), 0.1)))
            rgba, res = ob.ponding(rng, t.size, (top, hor), night, elev)
        elif t.kind == "grate":
            rgba, res = ob.drain_grate(rng, t.size)
        elif t.kind == "painted":
            rgba, res = ob.painted_circle(rng, t.size)
        else:
            rgba, res = ob.stain(rng, t.size, t.kind)
        lay = ground_patch(cam, rgba, t.xy, res, t.yaw)
        return [(t.xy, lay)] if lay is not None else []
    if t.kind == "garbage_pile":
        return ob.garbage_pile(rng, cam, t.xy, t.size, cutouts)
    if t.kind == "material_pile":
        return ob.material_pile(rng, cam, t.xy, t.size)
    fn = {"illegal_structure": lambda: ob.illegal_structure(rng, cam, t.xy, t.size),
          "car": lambda: ob.car(rng, cam, t.xy, t.yaw), "pedestrian": lambda: ob.pedestrian(rng, cam, t.xy),
          "van": lambda: ob.van(rng, cam, t.xy, t.yaw), "truck": lambda: ob.truck(rng, cam, t.xy, t.yaw),
          "bin": lambda: ob.bin_(rng, cam, t.xy), "cart": lambda: ob.cart(rng, cam, t.xy),
          "tree": lambda: ob.tree(rng, cam, t.xy)}[t.kind]
    lay = fn()
    return [(t.xy, lay)] if lay is not None else []


def _shadow(scene: Scene, t: Thing) -> Layer | None:
    if scene.lighting not in ("day",) or t.kind in FLAT:
        return None
    h = {"illegal_structure": 2.5, "car": 1.5, "van": 2.2, "truck": 3.2, "tree": 6.0, "pedestrian": 1.7}.get(t.kind, 0.8)
    length = h * 0.8
    n = 64
    m = np.zeros((n, n), np.float32)
    cv2.ellipse(m, (n // 2, n // 2), (n // 2 - 2, n // 5), 0, 0, 360, 1.0, -1)
    m = cv2.GaussianBlur(m, (7, 7), 0)
    rgba = np.concatenate([np.zeros((n, n, 3), np.float32), m[..., None] * 255 * 0.45], axis=2)
    off = (math.cos(scene.sun_dir) * length / 2, math.sin(scene.sun_dir) * length / 2)
    span = max(t.size, length) + 0.5
    return ground_patch(scene.camera, rgba, (t.x + off[0], t.y + off[1]), span / n, scene.sun_dir)


def thing_layers(scene: Scene, t: Thing, cutouts: list[np.ndarray]) -> list[tuple[tuple[float, float], Layer]]:
    """One thing's layers with the ground point each stands on: public so a video renderer can cache static
    things once and re-sort them with moving traffic every frame."""
    return _thing_layers(scene, t, cutouts)


def shadow_layer(scene: Scene, t: Thing) -> Layer | None:
    """The soft ground shadow an upright thing casts in day light (None otherwise)."""
    return _shadow(scene, t)


@dataclass
class Label:
    thing_id: int
    cls: str
    xyxy: tuple[float, float, float, float]
    ground_xy: tuple[float, float]
    visible: float


def draw_things(scene: Scene, img: np.ndarray, things: list[Thing], cutouts: list[np.ndarray],
                min_visible: float = 0.45) -> list[Label]:
    """Paint things far to near (flat ones first) and return labels for the classed ones that stay visible."""
    cam = scene.camera
    owner = np.full((cam.height, cam.width), -1, np.int32)
    # every pixel a thing painted, as a union: a pile's own bags and bricks overlap each other, and counting
    # them once per layer made a dense pile look "hidden" and lose its label
    painted: dict[int, np.ndarray] = {}
    # paint order: flat things (as listed), then shadows, then upright things far to near
    layers: list[tuple[int, int, float, Layer]] = []  # (thing id or -2 for shadows, group, -depth, layer)
    for t in things:
        if (sh := _shadow(scene, t)) is not None:
            layers.append((-2, 1, 0.0, sh))
    for t in things:
        for xy, lay in _thing_layers(scene, t, cutouts):
            depth = math.hypot(xy[0] - cam.x_m, xy[1] - cam.y_m)
            layers.append((t.id, 0, 0.0, lay) if t.kind in FLAT else (t.id, 2, -depth, lay))
    for tid, _, _, lay in sorted(layers, key=lambda l: (l[1], l[2])):
        composite(img, lay)
        h, w = lay.alpha.shape
        sl = (slice(lay.y0, lay.y0 + h), slice(lay.x0, lay.x0 + w))
        strong = (lay.alpha if lay.label_alpha is None else lay.label_alpha) > 0.6
        if tid >= 0:
            if tid not in painted:
                painted[tid] = np.zeros((cam.height, cam.width), bool)
            painted[tid][sl] |= strong
            owner[sl][strong] = tid
    labels = []
    by_id = {t.id: t for t in things}
    for tid, mask in painted.items():
        t = by_id[tid]
        total = int(mask.sum())
        if t.cls is None or total == 0:
            continue
        ys, xs = np.nonzero(owner == tid)
        if len(xs) == 0:
            continue
        vis = len(xs) / total
        if vis < min_visible:
            continue
        labels.append(Label(tid, t.cls, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                            t.xy, float(vis)))
    return labels


def apply_lighting(scene: Scene, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cam = scene.camera
    L = scene.lighting
    if L == "overcast":
        img = img * 0.9 + img.mean() * 0.1
    elif L == "dusk":
        img = img * np.array([0.55, 0.62, 0.8], np.float32)
    elif L == "night":
        img = img * np.array([0.38, 0.38, 0.42], np.float32)
        for _ in range(int(rng.integers(1, 4))):  # street-light pools
            cx, cy = rng.uniform(0, cam.width), rng.uniform(cam.height * 0.3, cam.height)
            yy, xx = np.mgrid[0:cam.height, 0:cam.width].astype(np.float32)
            r = rng.uniform(0.2, 0.6) * cam.width
            g = np.exp(-(((xx - cx) / r) ** 2 + ((yy - cy) / (r * 0.6)) ** 2))[..., None]
            img = img * (1 + g * np.array([1.6, 2.4, 3.2], np.float32) * rng.uniform(0.5, 1.0))
    elif L in ("rain", "wet"):
        img = img * 0.78
        sheen = smooth_noise(rng, cam.height, cam.width, cam.width / 6) * 0.5 + 0.5
        img = img + (sheen * rng.uniform(5, 25))[..., None] * np.linspace(0, 1, cam.height)[:, None, None]
        if L == "rain":
            streaks = np.zeros((cam.height, cam.width), np.float32)
            n = int(rng.integers(200, 800))
            xs, ys = rng.uniform(0, cam.width, n), rng.uniform(0, cam.height, n)
            ln = rng.uniform(8, 20)
            ang = rng.uniform(-0.3, 0.3)
            for x, y in zip(xs.astype(int), ys.astype(int)):
                cv2.line(streaks, (x, y), (int(x + ln * math.sin(ang)), int(y + ln * math.cos(ang))), 1.0, 1)
            img = img + streaks[..., None] * rng.uniform(25, 60)
    gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return img * gain * rng.uniform(0.8, 1.2)


def camera_effects(img: np.ndarray, rng: np.random.Generator, night: bool, jpeg: bool = True) -> np.ndarray:
    """Optics and sensor: blur, noise, gamma, sometimes a low-resolution stream, JPEG artefacts."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        s = rng.uniform(0.3, 1.3)
        img = cv2.GaussianBlur(img, (0, 0), s)
    if rng.random() < 0.2:
        k = rng.uniform(0.4, 0.8)
        img = cv2.resize(cv2.resize(img, (int(w * k), int(h * k)), interpolation=cv2.INTER_AREA), (w, h))
    sigma = rng.uniform(4, 10) if night else rng.uniform(1, 6)
    img = img + rng.standard_normal(img.shape[:2] + (1,)).astype(np.float32) * sigma
    gamma = rng.uniform(0.85, 1.15)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    out = np.clip(img, 0, 255).astype(np.uint8)
    if jpeg:
        q = int(rng.integers(35, 92))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def render(scene: Scene, cutouts: list[np.ndarray] | None = None, things: list[Thing] | None = None,
           jpeg: bool = True, background: np.ndarray | None = None) -> tuple[np.ndarray, list[Label]]:
    """The finished camera image (uint8 BGR) and its labels; `background` replaces the rendered street
    (a real photo), with the camera then only a plausible guess of its pose."""
    if background is None:
        img, _ = render_background(scene)
    else:
        img = cv2.resize(background, (scene.camera.width, scene.camera.height)).astype(np.float32)
    labels = draw_things(scene, img, scene.things if things is None else things, cutouts or [])
    rng = np.random.default_rng(scene.seed ^ 0xE4EC7)
    img = apply_lighting(scene, img, rng)
    return camera_effects(img, rng, scene.lighting == "night", jpeg), labels
