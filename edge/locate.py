"""The geo stage: where each detection stands on the ground, and what the centre needs to know about that place.

Each calibrated camera maps pixels to its own local metres (`calibration.GroundMap`); the locator moves every
camera's points into one site frame (metres east/north of the first calibrated camera's anchor), so the incident
book can tell that two cameras see the same puddle. For a message it turns a site point back into lon/lat
(CGCS2000), the unit grid that contains it, the inventory cover an open manhole replaces, and the optional
GCJ-02 / projected coordinates the deployment asked for.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import GroundMap, ground_maps
from .config import ConfigError, Site
from .detections import Detections
from .geo import (Component, CoverLedger, GridLayer, Inventory, Projector, local_to_lonlat, lonlat_to_local,
                  wgs84_to_gcj02)
from .incidents import Ground

log = logging.getLogger(__name__)
COVER_MISSING = "丢失"


def _anchor(gm: GroundMap) -> dict[str, float]:
    a = gm.anchor
    return {"lon": float(a["lon"] if isinstance(a, dict) else a.lon), "lat": float(a["lat"] if isinstance(a, dict) else a.lat)}


class Locator:
    """Ground positions for one site's cameras (the `Places` the incident book asks)."""

    def __init__(self, maps: dict[str, GroundMap], class_names: list[str], ground_point: dict[str, str],
                 grid: GridLayer | None = None, inventory: Inventory | None = None,
                 component_radius_m: float = 2.0, gcj02: bool = False, projector: Projector | None = None,
                 ledger: CoverLedger | None = None, base_depth_m: dict[str, float] | None = None,
                 off_inventory_open_threshold: float | None = None, cover_sized_water_m: float = 0.0) -> None:
        self.maps = maps
        self.class_names = class_names
        self.grid = grid
        self.inventory = inventory
        self.component_radius_m = component_radius_m
        self.gcj02 = gcj02
        self.projector = projector
        self.ledger = ledger
        self._ledger_lock = threading.Lock()  # camera threads share the ledger's connection
        self.anchor = _anchor(next(iter(maps.values()))) if maps else {"lon": 0.0, "lat": 0.0}
        # per class: 1 where the box centre touches the ground (flat things), 0 for the bottom edge's centre
        self._centre = np.array([ground_point.get(n, "bottom") == "centre" for n in class_names], bool)
        # per class: metres from the bottom edge's ground point back to the footprint's middle (bottom mode only)
        self._depth = np.array([0.0 if c else float((base_depth_m or {}).get(n, 0.0))
                                for n, c in zip(class_names, self._centre)])
        # each camera's local frame → the site frame: a shift (anchors are metres apart, so no rotation)
        self._offset = {}
        for cid, gm in maps.items():
            a = _anchor(gm)
            dx, dy = lonlat_to_local(a["lon"], a["lat"], self.anchor)
            self._offset[cid] = np.array([float(dx), float(dy)])
        self._cover_id = class_names.index("manhole_cover") if "manhole_cover" in class_names else -1
        self._open_id = class_names.index("manhole_open") if "manhole_open" in class_names else -1
        self._ponding_id = class_names.index("ponding") if "ponding" in class_names else -1
        self.off_inventory_open_threshold = off_inventory_open_threshold
        self.cover_sized_water_m = cover_sized_water_m

    @classmethod
    def from_site(cls, site: Site, site_path: Path, class_names: list[str]) -> "Locator":
        """Build from a site's calibrations and geo section; a bad calibration or layer is a ConfigError."""
        base = Path(site_path).resolve().parent

        def path(p: str) -> Path:
            q = Path(p)
            return q if q.is_absolute() else base / q

        g = site.geo
        named = set(g.class_merge_radius_m) | set(g.ground_point) | set(g.base_depth_m) | set(g.may_share_place)
        unknown = sorted(named - set(class_names))
        if unknown:
            raise ConfigError(f"{site_path}: geo: classes {unknown} are not in the model (classes: {class_names})")
        maps = ground_maps(site, Path(site_path))
        grid = GridLayer.load(path(g.grid_layer), f"{site_path}: geo.grid_layer") if g.grid_layer else None
        inv = Inventory.load(path(g.inventory), f"{site_path}: geo.inventory") if g.inventory else None
        proj = Projector(g.projected_crs) if g.projected_crs else None
        return cls(maps, class_names, dict(g.ground_point), grid, inv, g.component_match_radius_m, g.gcj02, proj,
                   base_depth_m={n: d for n, d in g.base_depth_m.items() if n in class_names},
                   off_inventory_open_threshold=g.off_inventory_open_threshold,
                   cover_sized_water_m=g.cover_sized_water_m)

    # ------------------------------------------------------------------ per scan
    def ground(self, camera_id: str, dets: Detections, width: int, height: int) -> Ground:
        """Each detection's site-frame ground point and uncertainty (NaN for an uncalibrated camera)."""
        gm = self.maps.get(camera_id)
        n = len(dets)
        if gm is None or n == 0:
            return Ground.unknown(n)
        if tuple(gm.image_size) != (width, height):
            gm = gm.scaled(width, height)
        b = dets.xyxy.astype(np.float64)
        centre = self._centre[dets.class_id]
        uv = np.stack([(b[:, 0] + b[:, 2]) / 2, np.where(centre, (b[:, 1] + b[:, 3]) / 2, b[:, 3])], axis=1)
        xy = gm.to_ground(uv)
        away = np.zeros_like(xy)
        if not centre.all():  # away from the camera: the ground direction in which the image goes up there
            step = gm.to_ground(uv - [0.0, 1.0]) - xy
            norm = np.linalg.norm(step, axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                away = np.where((norm > 0) & ~centre[:, None], step / norm, 0.0)
            xy = xy + away * self._depth[dets.class_id][:, None]
        # half the thing's size on the ground: flat things, the larger side of the box's footprint (its edge
        # midpoints on the ground); upright things, the width of the box's bottom edge there
        half = np.zeros(n)
        if centre.any():
            f = b[centre]
            xc, yc = (f[:, 0] + f[:, 2]) / 2, (f[:, 1] + f[:, 3]) / 2
            e = gm.to_ground(np.concatenate([np.stack([f[:, 0], yc], 1), np.stack([f[:, 2], yc], 1),
                                             np.stack([xc, f[:, 1]], 1), np.stack([xc, f[:, 3]], 1)])).reshape(4, -1, 2)
            half[centre] = np.maximum(np.linalg.norm(e[0] - e[1], axis=1), np.linalg.norm(e[2] - e[3], axis=1)) / 2
            # a flat thing's centre is midway between its near and far edges on the ground, not where the box's
            # middle row lands: perspective shrinks the far half, so that row lies beyond the middle in the image
            # and its ground point falls short of the centre, by about L^2/4d for a thing L long at distance d
            mid = (e[2] + e[3]) / 2
            ok = np.all(np.isfinite(mid), axis=1)
            xy[np.flatnonzero(centre)[ok]] = mid[ok]
        if not centre.all():
            u = b[~centre]
            e = gm.to_ground(np.concatenate([u[:, [0, 3]], u[:, [2, 3]]])).reshape(2, -1, 2)
            half[~centre] = np.linalg.norm(e[0] - e[1], axis=1) / 2
        xy = xy + self._offset[camera_id]
        acc = np.asarray(gm.accuracy_m(uv), np.float64)
        bad = ~np.all(np.isfinite(xy), axis=1)
        acc[bad] = np.nan
        half[bad] = np.nan
        reach = np.where(centre | bad, half, 0.0)  # how far a flat thing's footprint reaches: its half size
        return Ground(xy, acc, away, reach, half)

    def record_covers(self, dets: Detections, ground: Ground, ts: float) -> list[str]:
        """Intact covers seen in this scan refresh their inventory entry's last-seen-intact time."""
        if self.inventory is None or self.ledger is None or self._cover_id < 0:
            return []
        sel = (dets.class_id == self._cover_id) & np.all(np.isfinite(ground.xy), axis=1)
        if not sel.any():
            return []
        ids = sorted({c.component_id for c in self._covers_near(ground.xy[sel]) if c is not None})
        if ids:
            with self._ledger_lock:
                self.ledger.record_intact(ids, ts)
        return ids

    def off_inventory_unsure(self, dets: Detections, ground: Ground) -> np.ndarray:
        """The open-manhole sightings to hold back as weak: where the inventory has no cover and under
        `off_inventory_open_threshold`. With a complete inventory a cover-less spot that looks open is most likely a
        drain grate or a dark patch, so it needs a surer sighting to open a case, by the vote or by persistence."""
        out = np.zeros(len(dets), bool)
        thr = self.off_inventory_open_threshold
        if thr is None or self.inventory is None or self._open_id < 0 or len(dets) == 0:
            return out
        sel = (dets.class_id == self._open_id) & (dets.confidence < thr) & np.all(np.isfinite(ground.xy), axis=1)
        if not sel.any():
            return out
        idx = np.flatnonzero(sel)
        out[idx[np.array([c is None for c in self._covers_near(ground.xy[idx])], bool)]] = True
        return out

    def covers_read_as_water(self, dets: Detections, ground: Ground) -> np.ndarray:
        """Which ponding sightings are an inventory cover read as water: no wider and no deeper on the ground than
        `cover_sized_water_m`, and centred on the cover (within half that, plus the point's accuracy). A light-grey
        cover shines like a puddle (883: an intact cover 23 m out read as ponding at 0.87 opened a case 18 s before
        the real puddle 4 m beyond it appeared, and that puddle's sightings then joined it and were reported 3.9 m
        off). A real puddle around a cover is wider than the cover; one no bigger than it is not worth a case."""
        out = np.zeros(len(dets), bool)
        lim = self.cover_sized_water_m
        if not lim > 0 or self.inventory is None or self._ponding_id < 0 or ground.reach is None or len(dets) == 0:
            return out
        with np.errstate(invalid="ignore"):  # NaN reach (an edge above the horizon, no calibration): not small
            sel = (dets.class_id == self._ponding_id) & (2 * ground.reach <= lim) & np.all(np.isfinite(ground.xy), axis=1)
        if not sel.any():
            return out
        idx = np.flatnonzero(sel)
        acc = np.nan_to_num(ground.accuracy_m[idx], nan=0.0)
        within = lim / 2 + acc
        comps = self._covers_near(ground.xy[idx], float(within.max()))
        found = np.array([c is not None for c in comps], bool)
        if not found.any():
            return out
        clon = np.array([c.lon for c in comps if c is not None])
        clat = np.array([c.lat for c in comps if c is not None])
        cx, cy = lonlat_to_local(clon, clat, self.anchor)
        d = np.hypot(ground.xy[idx[found], 0] - cx, ground.xy[idx[found], 1] - cy)
        out[idx[found][d <= within[found]]] = True
        return out

    def _covers_near(self, xy: np.ndarray, radius_m: float | None = None) -> list[Component | None]:
        """The inventory cover within `radius_m` (default `component_radius_m`) of each site-frame point (None where
        there is none)."""
        assert self.inventory is not None
        lon, lat = local_to_lonlat(xy[:, 0], xy[:, 1], self.anchor)
        return self.inventory.nearest(np.atleast_1d(lon), np.atleast_1d(lat),
                                      self.component_radius_m if radius_m is None else radius_m)

    # ------------------------------------------------------------------ Places
    def in_view(self, camera_id: str, xy: np.ndarray) -> bool:
        gm = self.maps.get(camera_id)
        if gm is None:
            return False
        local = np.asarray(xy, np.float64).reshape(1, 2) - self._offset[camera_id]
        return bool(gm.in_view(local)[0])

    def describe(self, class_name: str, xy: np.ndarray, accuracy_m: float | None) -> dict[str, Any]:
        """What a message says about a site point: lon/lat, accuracy, grid, the cover it replaces, extra CRSs."""
        lon, lat = local_to_lonlat(float(xy[0]), float(xy[1]), self.anchor)
        lon, lat = float(lon), float(lat)
        out: dict[str, Any] = {"lon": lon, "lat": lat, "accuracy_m": accuracy_m}
        if self.grid is not None:
            cell = self.grid.lookup(np.array([lon]), np.array([lat]))[0]
            if cell is not None:
                out.update(grid_code=cell.grid_code, street_code=cell.street_code, community_code=cell.community_code)
            if accuracy_m:
                near = [c.grid_code for c in self.grid.within(lon, lat, accuracy_m) if c != cell]
                if near:
                    out["grid_codes_near"] = near
        if class_name == "manhole_open" and self.inventory is not None:
            comp = self.inventory.nearest(np.array([lon]), np.array([lat]), self.component_radius_m)[0]
            if comp is not None:
                out.update(component_id=comp.component_id, component_status=COVER_MISSING, component_kind=comp.kind,
                           component_codes={"legacy": comp.legacy_code, "gb2026": comp.gb2026_code})
        if self.gcj02:
            glon, glat = wgs84_to_gcj02(lon, lat)
            out["gcj02"] = {"lon": round(float(glon), 7), "lat": round(float(glat), 7)}
        if self.projector is not None:
            px, py = self.projector.forward(lon, lat)
            out["projected"] = {"crs": self.projector.crs, "x": round(float(px), 3), "y": round(float(py), 3)}
        return out
