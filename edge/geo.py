"""Where a ground point lands on the city's map: lon/lat, GCJ-02, a projected CRS, the unit grid and the cover.

A detection's ground point (local metres east/north of a camera's anchor) becomes lon/lat (CGCS2000, equal to
WGS84 at this scale), optionally GCJ-02 for consumer maps and x/y in the city's projected CRS; the unit-grid
layer says which 万米单元网格 (and so which street and community) owns it, and the cover inventory says which
manhole cover an open manhole was. Layers are GeoJSON files an operator supplies: every mistake in them is one
ConfigError naming the file and the feature, never a traceback.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import shapely
import shapely.affinity
from shapely import STRtree
from shapely.geometry import shape

from .config import ConfigError

log = logging.getLogger(__name__)

WGS84_A, WGS84_E2 = 6378137.0, 6.69437999014e-3
CGCS2000 = "EPSG:4490"


# ----------------------------------------------------------------------------- local tangent plane
def _radii(lat_deg: float) -> tuple[float, float]:
    """Meridian and prime-vertical radii of curvature of WGS84 at a latitude (metres)."""
    s2 = math.sin(math.radians(lat_deg)) ** 2
    w = 1 - WGS84_E2 * s2
    return WGS84_A * (1 - WGS84_E2) / w ** 1.5, WGS84_A / math.sqrt(w)


def _anchor_lonlat(anchor: Any) -> tuple[float, float]:
    """(lon, lat) of an anchor given as a mapping {"lon", "lat"} or an object with .lon/.lat (GeoAnchor)."""
    if isinstance(anchor, Mapping):
        return float(anchor["lon"]), float(anchor["lat"])
    return float(anchor.lon), float(anchor.lat)


def local_to_lonlat(x: Any, y: Any, anchor: Any) -> tuple[Any, Any]:
    """Local metres (x east, y north of `anchor` {"lon", "lat"}) → (lon, lat) degrees, WGS84/CGCS2000.

    A tangent-plane (equirectangular) step with the ellipsoid's radii at the anchor: within 1 km of it the
    error is millimetres, far below what a camera's ground point is worth, and it needs no pyproj. Takes
    floats or numpy arrays; the anchor is a mapping or an object with .lon/.lat."""
    lon0, lat0_deg = _anchor_lonlat(anchor)
    m, n = _radii(lat0_deg)
    lat0 = math.radians(lat0_deg)
    return lon0 + np.degrees(np.divide(x, n * math.cos(lat0))), lat0_deg + np.degrees(np.divide(y, m))


def lonlat_to_local(lon: Any, lat: Any, anchor: Any) -> tuple[Any, Any]:
    """The inverse of `local_to_lonlat`: (lon, lat) degrees → local metres east and north of `anchor`."""
    lon0, lat0_deg = _anchor_lonlat(anchor)
    m, n = _radii(lat0_deg)
    lat0 = math.radians(lat0_deg)
    return (np.radians(np.subtract(lon, lon0)) * n * math.cos(lat0),
            np.radians(np.subtract(lat, lat0_deg)) * m)


# ----------------------------------------------------------------------------- GCJ-02
# The published GCJ-02 obfuscation: Krasovsky-1940 ellipsoid constants and a fixed trigonometric offset
# field centred on (105 E, 35 N). It only applies inside China's rough bounding box.
_GCJ_A, _GCJ_EE = 6378245.0, 0.00669342162296594323
_CHINA_LON, _CHINA_LAT = (72.004, 137.8347), (0.8293, 55.8271)


def _in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return (lon >= _CHINA_LON[0]) & (lon <= _CHINA_LON[1]) & (lat >= _CHINA_LAT[0]) & (lat <= _CHINA_LAT[1])


def _gcj_offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GCJ-02 shift (degrees) at a WGS84 point, ignoring the China box."""
    x, y = lon - 105.0, lat - 35.0
    pi = math.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x)) + common
            + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x)) + common
            + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0)
    rad = np.radians(lat)
    w = 1.0 - _GCJ_EE * np.sin(rad) ** 2
    sw = np.sqrt(w)
    dlat = dlat * 180.0 / ((_GCJ_A * (1.0 - _GCJ_EE)) / (w * sw) * pi)
    dlon = dlon * 180.0 / (_GCJ_A / sw * np.cos(rad) * pi)
    return dlon, dlat


def _out(a: np.ndarray) -> Any:
    return a[()] if a.ndim == 0 else a


def wgs84_to_gcj02(lon: Any, lat: Any) -> tuple[Any, Any]:
    """WGS84/CGCS2000 → GCJ-02 lon/lat, the frame consumer maps in China draw in (offsets of a few hundred
    metres). Points outside China are returned unchanged. Floats or numpy arrays."""
    lon, lat = np.broadcast_arrays(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    dlon, dlat = _gcj_offset(lon, lat)
    inside = _in_china(lon, lat)
    return _out(np.where(inside, lon + dlon, lon)), _out(np.where(inside, lat + dlat, lat))


def gcj02_to_wgs84(lon: Any, lat: Any, tol_deg: float = 1e-11, max_iter: int = 30) -> tuple[Any, Any]:
    """GCJ-02 → WGS84 by fixed-point iteration (the offset field has no closed-form inverse); converges to
    far below a centimetre in a few steps because the offset varies slowly."""
    g_lon, g_lat = np.broadcast_arrays(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    w_lon, w_lat = g_lon.copy(), g_lat.copy()
    for _ in range(max_iter):
        f_lon, f_lat = wgs84_to_gcj02(w_lon, w_lat)
        e_lon, e_lat = np.asarray(f_lon) - g_lon, np.asarray(f_lat) - g_lat
        w_lon, w_lat = w_lon - e_lon, w_lat - e_lat
        err = np.maximum(np.abs(e_lon), np.abs(e_lat))
        if err.size == 0 or not np.any(err[np.isfinite(err)] > tol_deg):
            break
    return _out(w_lon), _out(w_lat)


# ----------------------------------------------------------------------------- projected CRS
class Projector:
    """CGCS2000 lon/lat → x/y in the city's projected CRS (e.g. EPSG:4549), because many platforms take
    coordinates in a local Gauss-Krüger zone rather than degrees. Uses pyproj's bundled proj.db only."""

    def __init__(self, crs: str, where: str = "geo.projected_crs") -> None:
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError

        try:
            target = CRS.from_user_input(crs)
        except (CRSError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {crs!r} is not a CRS pyproj knows ({e}); give e.g. 'EPSG:4549'") from None
        if not target.is_projected:
            kind = "geographic" if target.is_geographic else "not projected"
            raise ConfigError(f"{where}: {crs!r} ({target.name}) is {kind}; give a projected CRS in metres, "
                              "e.g. 'EPSG:4549' (CGCS2000 / 3-degree Gauss-Kruger CM 120E)")
        self.crs: str = crs
        self.name: str = target.name
        self._tf: Transformer = Transformer.from_crs(CRS.from_user_input(CGCS2000), target, always_xy=True)

    def forward(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        """(lon, lat) degrees CGCS2000 → (x, y) metres (easting, northing) in the configured CRS; vectorised."""
        x, y = self._tf.transform(lon, lat)
        return x, y

    def __repr__(self) -> str:
        return f"Projector({self.crs!r})"


# ----------------------------------------------------------------------------- GeoJSON reading
def _read_collection(path: Path, where: str) -> list[Any]:
    """The `features` list of a GeoJSON FeatureCollection; file-level mistakes are one ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # GIS tools on Windows often write a BOM
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (named by {where})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (named by {where}); export the layer as UTF-8 GeoJSON") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}) (named by {where})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not JSON: {e.msg} (named by {where})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        got = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{path}: expected a GeoJSON FeatureCollection, got {got!r} (named by {where})")
    feats = data.get("features")
    if not isinstance(feats, list):
        raise ConfigError(f"{path}: features: expected a list of features, got {type(feats).__name__}")
    crs = data.get("crs")
    if isinstance(crs, dict):
        name = str((crs.get("properties") or {}).get("name", ""))
        if name and not re.search(r"(4326|4490|CRS84)$", name):
            raise ConfigError(f"{path}: crs: {name!r}: coordinates must be lon/lat degrees (CGCS2000/WGS84); "
                              "reproject the layer to EPSG:4490 or EPSG:4326")
    return feats


def _feature(path: Path, i: int, feat: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(geometry, properties) of feature i, checked to be a GeoJSON Feature."""
    if not isinstance(feat, dict) or feat.get("type") != "Feature":
        raise ConfigError(f"{path}: features[{i}]: expected a GeoJSON Feature object")
    props = feat.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise ConfigError(f"{path}: features[{i}].properties: expected an object")
    geom = feat.get("geometry")
    if not isinstance(geom, dict):
        raise ConfigError(f"{path}: features[{i}].geometry: missing")
    return geom, props


def _digits(path: Path, i: int, props: dict[str, Any], key: str, sizes: tuple[int, ...], required: bool,
            what: str) -> str | None:
    """A digit-string property (JSON string or integer) of exactly one of `sizes` digits."""
    v = props.get(key)
    if v is None:
        if required:
            raise ConfigError(f"{path}: features[{i}].properties.{key}: missing ({what} is required)")
        return None
    s = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(s, str) or not s.isascii() or not s.isdigit() or len(s) not in sizes:
        need = f"{sizes[0]} digits" + "".join(f" (or {n})" for n in sizes[1:])
        raise ConfigError(f"{path}: features[{i}].properties.{key}: {v!r} must be {need}")
    return s


def _check_lonlat(path: Path, i: int, bounds: Sequence[float]) -> None:
    x0, y0, x1, y1 = bounds
    if not all(math.isfinite(b) for b in bounds) or x0 < -180 or x1 > 180 or y0 < -90 or y1 > 90:
        raise ConfigError(f"{path}: features[{i}].geometry: coordinates {tuple(round(b, 3) for b in bounds)} are "
                          "not lon/lat degrees (CGCS2000/WGS84); projected metres? reproject the layer")


def _as_points(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat float arrays of the query points and the mask of finite ones."""
    lo, la = np.broadcast_arrays(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    lo, la = lo.ravel(), la.ravel()
    return lo, la, np.isfinite(lo) & np.isfinite(la)


# ----------------------------------------------------------------------------- unit grid
@dataclass(frozen=True)
class GridCell:
    """One unit grid (单元网格): the codes a case report carries for where it happened."""

    grid_code: str
    street_code: str
    community_code: str
    name: str | None = None

    @property
    def admin_code(self) -> str:
        """The GB/T 2260 county code: the grid code's first six digits."""
        return self.grid_code[:6]


class GridLayer:
    """The city's unit-grid polygons, indexed so a batch of ground points finds its grids in one query."""

    def __init__(self, cells: Sequence[GridCell], geoms: Sequence[Any], source: str = "") -> None:
        order = sorted(range(len(cells)), key=lambda k: cells[k].grid_code)  # index == tie-break rank
        self.cells: tuple[GridCell, ...] = tuple(cells[k] for k in order)
        self._geoms = np.array([geoms[k] for k in order], dtype=object)
        self._tree = STRtree(self._geoms)
        self.source = source

    @classmethod
    def load(cls, path: Path, where: str = "geo.grid_layer") -> "GridLayer":
        """Read a GeoJSON FeatureCollection of Polygon/MultiPolygon grids with `grid_code` (15 or 14 digits)
        and optional `street_code` (9), `community_code` (12), `name`; missing codes come from the prefix."""
        path = Path(path)
        cells: list[GridCell] = []
        geoms: list[Any] = []
        seen: dict[str, int] = {}
        for i, feat in enumerate(_read_collection(path, where)):
            gj, props = _feature(path, i, feat)
            code = _digits(path, i, props, "grid_code", (15, 14), True, "the unit grid code")
            assert code is not None
            if code in seen:
                raise ConfigError(f"{path}: features[{i}].properties.grid_code: {code!r} repeats features[{seen[code]}]")
            seen[code] = i
            street = _digits(path, i, props, "street_code", (9,), False, "") or code[:9]
            community = _digits(path, i, props, "community_code", (12,), False, "") or code[:12]
            if not code.startswith(community[:12]) or not community.startswith(street):
                log.warning("%s: features[%d]: grid %s, community %s and street %s do not nest by prefix",
                            path, i, code, community, street)
            name = props.get("name")
            if gj.get("type") not in ("Polygon", "MultiPolygon"):
                raise ConfigError(f"{path}: features[{i}].geometry: {gj.get('type')!r}: a unit grid must be a "
                                  "Polygon or MultiPolygon")
            try:
                g = shape(gj)
            except Exception as e:  # shapely/GEOS raise several types for malformed coordinates
                raise ConfigError(f"{path}: features[{i}].geometry: malformed {gj.get('type')}: {e}") from None
            if g.is_empty:
                raise ConfigError(f"{path}: features[{i}].geometry: empty polygon")
            _check_lonlat(path, i, g.bounds)
            if not g.is_valid:
                raise ConfigError(f"{path}: features[{i}].geometry: invalid polygon ({shapely.is_valid_reason(g)})")
            cells.append(GridCell(code, street, community, None if name is None else str(name)))
            geoms.append(g)
        log.info("%s: %d unit grids", path, len(cells))
        return cls(cells, geoms, str(path))

    def __len__(self) -> int:
        return len(self.cells)

    def lookup(self, lon: Any, lat: Any) -> list[GridCell | None]:
        """The grid that owns each point (None outside every grid); a point on a shared border goes to the
        smallest grid_code, so the answer never depends on file order. One index query for all points."""
        lo, la, ok = _as_points(lon, lat)
        best = np.full(lo.size, len(self.cells), dtype=np.int64)
        if lo.size and len(self.cells):
            idx = np.flatnonzero(ok)
            inp, hit = self._tree.query(shapely.points(lo[idx], la[idx]), predicate="intersects")
            np.minimum.at(best, idx[inp], hit)
        cells = self.cells + (None,)
        return [cells[k] for k in best.tolist()]

    def within(self, lon: float, lat: float, radius_m: float) -> list[GridCell]:
        """Every grid that comes within `radius_m` of the point, by grid_code: a place whose uncertainty
        reaches across a grid border may belong to the grid next door, which a dispatcher should know."""
        if not (math.isfinite(lon) and math.isfinite(lat) and radius_m > 0) or not len(self.cells):
            return []
        # the circle as an ellipse in degrees (a degree of longitude is shorter than one of latitude)
        m, n = _radii(lat)
        circle = shapely.affinity.scale(shapely.Point(lon, lat).buffer(1.0, 16),
                                        math.degrees(radius_m / (n * math.cos(math.radians(lat)))),
                                        math.degrees(radius_m / m))
        return [self.cells[k] for k in sorted(self._tree.query(circle, predicate="intersects").tolist())]


# ----------------------------------------------------------------------------- cover inventory
# Manhole cover component classes (name, legacy 4-digit major+minor, GB/T 47678.5-2026 5-digit), shipped
# defaults from ../shared/STANDARDS.md; 0114 for 不明井盖 follows the lists (and edge.codes) that use it.
COVER_KINDS: tuple[tuple[str, str | None, str | None], ...] = (
    ("上水(供水)井盖", "0101", "01001"), ("污水井盖", "0102", "01002"), ("雨水井盖", "0103", "01003"),
    ("雨水箅子", "0104", "01004"), ("电力井盖", "0105", "01005"), ("路灯井盖", "0106", "01006"),
    ("通信井盖", "0107", "01007"), ("有线电视井盖", "0108", "01008"), ("网络井盖", "0109", "01009"),
    ("热力井盖", "0110", "01010"), ("燃气井盖", "0111", "01011"), ("公安井盖", "0112", "01012"),
    ("不明井盖", "0114", "01023"),
)


@dataclass(frozen=True)
class Component:
    """One inventoried city component (部件), e.g. a manhole cover, with the codes its id implies."""

    component_id: str
    lon: float
    lat: float
    kind: str | None = None
    legacy_code: str | None = None  # 2 major + 2 minor (CJ/T 214-2007 / GB/T 30428.2-2013)
    gb2026_code: str | None = None  # 2 major + 3 minor (GB/T 47678.5-2026)

    @property
    def admin_code(self) -> str:
        return self.component_id[:6]


def component_codes(component_id: str, kind: str | None = None,
                    kinds: Sequence[tuple[str, str | None, str | None]] = COVER_KINDS
                    ) -> tuple[str | None, str | None, str | None]:
    """(kind, legacy_code, gb2026_code) of a 16-digit (legacy) or 17-digit (2026) component id: the id's own
    code set is read from its digits, the other from the cover table's equivalent when one is known; a given
    kind name is kept (the city's inventory knows best), else it comes from the table."""
    if len(component_id) == 16:
        legacy: str | None = component_id[6:10]
        row = next((r for r in kinds if r[1] == legacy), None)
        new = row[2] if row else None
    else:
        new = component_id[6:11]
        row = next((r for r in kinds if r[2] == new), None)
        legacy = row[1] if row else None
    return (row[0] if kind is None and row else kind), legacy, new


_TIE_M = 1e-6


class Inventory:
    """The city's inventoried manhole covers, indexed in local metres so an open manhole finds its cover."""

    def __init__(self, components: Sequence[Component], source: str = "") -> None:
        self.components: tuple[Component, ...] = tuple(sorted(components, key=lambda c: c.component_id))
        self._by_id = {c.component_id: c for c in self.components}
        self.source = source
        lon = np.array([c.lon for c in self.components], dtype=float)
        lat = np.array([c.lat for c in self.components], dtype=float)
        self.anchor = {"lon": float(lon.mean()), "lat": float(lat.mean())} if lon.size else {"lon": 0.0, "lat": 0.0}
        x, y = lonlat_to_local(lon, lat, self.anchor)
        self._xy = (np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        self._tree = STRtree(shapely.points(x, y)) if lon.size else None

    @classmethod
    def load(cls, path: Path, where: str = "geo.inventory",
             kinds: Sequence[tuple[str, str | None, str | None]] = COVER_KINDS) -> "Inventory":
        """Read a GeoJSON FeatureCollection of Point components with `component_id` (16 or 17 digits) and
        optional `kind`; the kind and both code sets come from the id when not given."""
        path = Path(path)
        comps: list[Component] = []
        seen: dict[str, int] = {}
        for i, feat in enumerate(_read_collection(path, where)):
            gj, props = _feature(path, i, feat)
            cid = _digits(path, i, props, "component_id", (16, 17), True, "the component id")
            assert cid is not None
            if cid in seen:
                raise ConfigError(f"{path}: features[{i}].properties.component_id: {cid!r} repeats "
                                  f"features[{seen[cid]}]")
            seen[cid] = i
            kind = props.get("kind")
            if kind is not None and not isinstance(kind, str):
                raise ConfigError(f"{path}: features[{i}].properties.kind: {kind!r} must be a name, e.g. '污水井盖'")
            if gj.get("type") != "Point":
                raise ConfigError(f"{path}: features[{i}].geometry: {gj.get('type')!r}: a component must be a Point")
            xy = gj.get("coordinates")
            try:
                lon, lat = float(xy[0]), float(xy[1])  # type: ignore[index]
            except (TypeError, ValueError, IndexError, KeyError):
                raise ConfigError(f"{path}: features[{i}].geometry.coordinates: {xy!r} must be [lon, lat]") from None
            _check_lonlat(path, i, (lon, lat, lon, lat))
            k, legacy, new = component_codes(cid, kind or None, kinds)
            comps.append(Component(cid, lon, lat, k, legacy, new))
        log.info("%s: %d components", path, len(comps))
        return cls(comps, str(path))

    def __len__(self) -> int:
        return len(self.components)

    def get(self, component_id: str) -> Component | None:
        return self._by_id.get(component_id)

    def nearest(self, lon: Any, lat: Any, radius_m: float) -> list[Component | None]:
        """The nearest component within `radius_m` metres of each point (None when none is); equidistant
        components resolve to the smallest id. One index query for all points."""
        if not radius_m > 0:
            raise ValueError(f"radius_m must be > 0, got {radius_m}")
        lo, la, ok = _as_points(lon, lat)
        best = np.full(lo.size, len(self.components), dtype=np.int64)
        if lo.size and self._tree is not None:
            idx = np.flatnonzero(ok)
            x, y = lonlat_to_local(lo[idx], la[idx], self.anchor)
            inp, hit = self._tree.query(shapely.points(x, y), predicate="dwithin", distance=radius_m)
            dist = np.hypot(self._xy[0][hit] - x[inp], self._xy[1][hit] - y[inp])
            dmin = np.full(idx.size, np.inf)
            np.minimum.at(dmin, inp, dist)
            keep = dist <= dmin[inp] + _TIE_M  # ties within a micrometre: rounding must not pick the cover
            np.minimum.at(best, idx[inp[keep]], hit[keep])
        comps = self.components + (None,)
        return [comps[k] for k in best.tolist()]


# ----------------------------------------------------------------------------- cover ledger
class CoverLedger:
    """When each cover was last seen intact: a manhole_cover detection matched to the inventory refreshes it,
    so an open manhole later at that spot can say how long the cover has been gone at most."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS cover_seen (component_id TEXT PRIMARY KEY, last_intact_ts REAL)")

    def record_intact(self, component_ids: Sequence[str], ts: float) -> None:
        """Mark covers seen intact at `ts` (epoch seconds); an older ts never overwrites a newer one."""
        ts = float(ts)
        if not math.isfinite(ts):
            raise ValueError(f"ts must be finite, got {ts}")
        ids = sorted(set(component_ids))
        if not ids:
            return
        with self._conn:
            self._conn.executemany(
                "INSERT INTO cover_seen (component_id, last_intact_ts) VALUES (?, ?) ON CONFLICT(component_id) "
                "DO UPDATE SET last_intact_ts = max(coalesce(last_intact_ts, excluded.last_intact_ts), "
                "excluded.last_intact_ts)", [(c, ts) for c in ids])

    def last_intact(self, component_id: str) -> float | None:
        """Epoch seconds the cover was last seen intact, None if never."""
        row = self._conn.execute("SELECT last_intact_ts FROM cover_seen WHERE component_id = ?",
                                 (component_id,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])
