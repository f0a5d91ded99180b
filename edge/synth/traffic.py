"""Passing traffic for scenario clips: cars, vans and pedestrians on one straight street that runs along
world y. Each mover is a path and a time table planned up front, so a clip is the same every time it is
rendered, and no two vehicles in a lane ever drive through each other (a vehicle that would is not spawned)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import objects as ob
from .camera import PoleCamera
from .render import Layer
from .scene import Scene

DT = 0.1  # s: time step of braking/accelerating time tables and of the lane-conflict check
DECEL = 2.5  # m/s²: a calm stop, so a stopping vehicle is seen slowing down for a few seconds
ACCEL = 2.0
GAP_M = 2.0  # bumper-to-bumper gap kept between vehicles in one lane
PULL_M = 12.0  # distance over which a vehicle pulls over to the kerb before it stops
LENGTH_M = {"car": 5.0, "van": 5.6, "truck": 7.4, "pedestrian": 0.6}  # for spacing: at least the drawn length
LANE_W_MAX = 3.5  # the lane count rule of scene._markings, so vehicles drive between the painted lines


@dataclass(frozen=True)
class Lane:
    """A traffic lane: centre line at world `x`, driven towards +y (`direction` 1) or -y (-1)."""

    x: float
    direction: int


def lanes_of(scene: Scene) -> list[Lane]:
    """The street's lanes, west to east, with right-hand traffic (north-bound on the east half)."""
    n = max(1, int(scene.road_w / LANE_W_MAX))
    lw = scene.road_w / n
    out = []
    for k in range(n):
        x = scene.road_x - scene.road_w / 2 + (k + 0.5) * lw
        out.append(Lane(float(x), -1 if x < scene.road_x - 1e-6 else 1))
    return out


@dataclass(frozen=True, eq=False)
class Mover:
    """One vehicle or pedestrian: `s(t)` metres travelled along its path, given as keyframes (`t`, `s`) and
    linear in between; the path starts at world y `y0` and runs in `direction`, its x following (`path_s`,
    `path_x`). `lane` is the lane index for vehicles, -1 for pedestrians; `stop_for` names the incident a
    stopping vehicle was sent to hide (None for passing traffic)."""

    kind: str
    seed: int
    lane: int
    direction: int
    y0: float
    t: np.ndarray
    s: np.ndarray
    path_s: np.ndarray
    path_x: np.ndarray
    stop_for: str | None = None

    @property
    def t_start(self) -> float:
        return float(self.t[0])

    @property
    def t_end(self) -> float:
        return float(self.t[-1])

    @property
    def yaw(self) -> float:
        return 0.0 if self.direction > 0 else math.pi

    @property
    def length(self) -> float:
        return LENGTH_M[self.kind]

    def position(self, t: float) -> tuple[float, float]:
        s = float(np.interp(t, self.t, self.s))
        return float(np.interp(s, self.path_s, self.path_x)), self.y0 + self.direction * s


def cruise(kind: str, seed: int, lane_idx: int, lane: Lane, y_lo: float, y_hi: float, t0: float,
           speed: float) -> Mover:
    """A vehicle that enters the street segment at `t0` and drives through at constant `speed`."""
    length = y_hi - y_lo
    y0 = y_lo if lane.direction > 0 else y_hi
    return Mover(kind, seed, lane_idx, lane.direction, y0, np.array([t0, t0 + length / speed]),
                 np.array([0.0, length]), np.array([0.0, length]), np.array([lane.x, lane.x]))


def stopping(kind: str, seed: int, lane_idx: int, lane: Lane, y_lo: float, y_hi: float, y_stop: float,
             t_stop: float, dwell: float, speed: float, stop_for: str | None = None, x_stop: float | None = None) -> Mover:
    """A vehicle that brakes to stand at world y `y_stop` from `t_stop` for `dwell` seconds, then drives on;
    with `x_stop` it pulls over to that x (the kerb) over the last PULL_M metres and back out after."""
    length = y_hi - y_lo
    y0 = y_lo if lane.direction > 0 else y_hi
    s_stop = (y_stop - y0) * lane.direction
    v = min(speed, math.sqrt(2 * DECEL * max(s_stop, 0.1)))
    d_dec, t_dec = v * v / (2 * DECEL), v / DECEL
    t_brake = t_stop - t_dec
    tau = np.arange(0.0, t_dec, DT)
    ts = [t_brake - (s_stop - d_dec) / v, *(t_brake + tau), t_stop, t_stop + dwell]
    ss = [0.0, *(s_stop - d_dec + v * tau - DECEL * tau ** 2 / 2), s_stop, s_stop]
    t_go, t_acc = t_stop + dwell, v / ACCEL
    tau = np.arange(DT, t_acc, DT)
    d_acc = v * v / (2 * ACCEL)
    rest = max(length - s_stop - d_acc, 0.0)
    ts += [*(t_go + tau), t_go + t_acc, t_go + t_acc + rest / v]
    ss += [*(s_stop + ACCEL * tau ** 2 / 2), s_stop + d_acc, s_stop + d_acc + rest]
    end = max(ss[-1], length)
    if x_stop is None or abs(x_stop - lane.x) < 1e-6:
        path_s, path_x = np.array([0.0, end]), np.array([lane.x, lane.x])
    else:
        k = np.linspace(0, 1, 9)
        ease = k * k * (3 - 2 * k)
        path_s = np.concatenate([[0.0], s_stop - PULL_M * (1 - k), s_stop + PULL_M * k[1:], [end]])
        path_x = np.concatenate([[lane.x], lane.x + (x_stop - lane.x) * ease, x_stop + (lane.x - x_stop) * ease[1:],
                                 [lane.x]])
        keep = np.concatenate([[True], np.diff(path_s) > 0])  # a stop near the segment start clips the ramp
        path_s, path_x = np.maximum.accumulate(path_s)[keep], path_x[keep]
    return Mover(kind, seed, lane_idx, lane.direction, y0, np.array(ts), np.array(ss), path_s, path_x, stop_for)


def conflicts(a: Mover, b: Mover, gap: float = GAP_M) -> bool:
    """True when two vehicles in one lane come closer than their half lengths plus `gap` (so one would pass
    through the other); movers in different lanes, and pedestrians, never conflict."""
    if a.lane != b.lane or a.lane < 0:
        return False
    t0, t1 = max(a.t_start, b.t_start), min(a.t_end, b.t_end)
    if t1 <= t0:
        return False
    ts = np.append(np.arange(t0, t1, DT), t1)
    d = np.abs(np.interp(ts, a.t, a.s) - np.interp(ts, b.t, b.s))
    return bool((d < (a.length + b.length) / 2 + gap).any())


def passing_traffic(rng: np.random.Generator, lanes: list[Lane], y_lo: float, y_hi: float, t0: float, t1: float,
                    planned: list[Mover]) -> list[Mover]:
    """Vehicles at 5–15 m/s arriving at random in every lane over [t0, t1] (the street is already busy at
    `t0`); one that would run into a planned or earlier vehicle of its lane is left out."""
    out: list[Mover] = []
    by_lane = {k: [m for m in planned if m.lane == k] for k in range(len(lanes))}
    for k, lane in enumerate(lanes):
        headway = rng.uniform(6.0, 12.0)
        t = t0 - (y_hi - y_lo) / 5.0
        while t < t1:
            t += 1.5 + rng.exponential(headway)
            u = rng.random()
            kind = "truck" if u < 0.05 else "van" if u < 0.2 else "car"
            m = cruise(kind, int(rng.integers(2**31)), k, lane, y_lo, y_hi, t, float(rng.uniform(5.0, 15.0)))
            if m.t_end < t0 or t > t1 or any(conflicts(m, o) for o in by_lane[k]):
                continue
            by_lane[k].append(m)
            out.append(m)
    return out


def pedestrians(rng: np.random.Generator, scene: Scene, y_lo: float, y_hi: float, t0: float, t1: float,
                obstacles: list[tuple[float, float, float]]) -> list[Mover]:
    """People walking both ways along both pavements at about 1.4 m/s, stepping around `obstacles`
    (x, y, radius: bins, carts, piles and sheds on the pavement) instead of walking through them."""
    out: list[Mover] = []
    half = scene.road_w / 2 + 0.15
    length = y_hi - y_lo
    path_s = np.arange(0.0, length + 0.5, 0.5)
    for side in (-1, 1):
        curb = scene.road_x + side * half
        for direction in (-1, 1):
            headway = rng.uniform(8.0, 16.0)
            t = t0 - length / 1.2
            while t < t1:
                t += 1.0 + rng.exponential(headway)
                speed = float(rng.uniform(1.2, 1.6))
                base = curb + side * float(rng.uniform(0.5, max(scene.pave_w - 0.5, 0.6)))
                seed = int(rng.integers(2**31))
                if t + length / speed < t0 or t > t1:
                    continue
                y0 = y_lo if direction > 0 else y_hi
                ys = y0 + direction * path_s
                xs = np.full_like(ys, base)
                for ox, oy, r in obstacles:
                    if abs(ox - base) >= r + 0.5:
                        continue
                    lo, hi = sorted((curb + side * 0.3, curb + side * (scene.pave_w - 0.3)))
                    goals = [g for g in (ox - r - 0.6, ox + r + 0.6) if lo <= g <= hi] or [curb - side * 0.5]
                    goal = min(goals, key=lambda g: abs(g - base))
                    w = np.clip((r + 2.0 - np.abs(ys - oy)) / 1.8, 0, 1)
                    xs += (w * w * (3 - 2 * w)) * (goal - base)
                out.append(Mover("pedestrian", seed, -1, direction, y0, np.array([t, t + length / speed]),
                                 np.array([0.0, length]), path_s, xs))
    return out


def draw(m: Mover, cam: PoleCamera, xy: tuple[float, float]) -> Layer | None:
    """The mover at ground point `xy`, drawn from its own seed so it looks the same in every frame and camera."""
    rng = np.random.default_rng(m.seed)
    if m.kind == "pedestrian":
        return ob.pedestrian(rng, cam, xy)
    if m.kind == "van":
        return ob.van(rng, cam, xy, m.yaw)
    if m.kind == "truck":
        return ob.truck(rng, cam, xy, m.yaw)
    return ob.car(rng, cam, xy, m.yaw)
