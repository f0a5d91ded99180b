"""edge.geo: lon/lat <-> local metres, GCJ-02, projected CRS, unit-grid and cover-inventory layers, cover ledger."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import ConfigError, GeoAnchor
from edge.geo import (Component, CoverLedger, GridCell, GridLayer, Inventory, Projector, gcj02_to_wgs84,
                      local_to_lonlat, lonlat_to_local, wgs84_to_gcj02)

ANCHOR = {"lon": 120.57, "lat": 31.88}
DEG_M = 111_000.0  # metres per degree of latitude, roughly: for tolerances only


# ----------------------------------------------------------------------------- local frame
@pytest.mark.parametrize("anchor", [ANCHOR, GeoAnchor(lon=120.57, lat=31.88)])
def test_local_lonlat_round_trip_is_millimetres_over_a_kilometre(anchor: Any) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1000, 1000, 500), rng.uniform(-1000, 1000, 500)
    lon, lat = local_to_lonlat(x, y, anchor)
    bx, by = lonlat_to_local(lon, lat, anchor)
    assert np.max(np.hypot(bx - x, by - y)) < 1e-3
    # 1 km east is ~0.0106 degrees of longitude at 31.88 N
    lon1, lat1 = local_to_lonlat(1000.0, 0.0, anchor)
    assert lat1 == ANCHOR["lat"]
    assert lon1 - ANCHOR["lon"] == pytest.approx(1000 / (111320 * math.cos(math.radians(31.88))), rel=2e-3)


def test_scenario_still_exports_the_geography() -> None:
    from edge.synth import scenario

    assert scenario.local_to_lonlat is local_to_lonlat and scenario.lonlat_to_local is lonlat_to_local


# ----------------------------------------------------------------------------- GCJ-02
def test_gcj02_matches_published_reference_values() -> None:
    # reference pairs widely used by coordinate-transform libraries' tests
    for (lon, lat), (g_lon, g_lat) in [((116.404, 39.915), (116.41024449916938, 39.91640428150164)),
                                       ((116.0, 40.0), (116.006141221789, 40.001213650174))]:
        glon, glat = wgs84_to_gcj02(lon, lat)
        err_m = math.hypot((glon - g_lon) * DEG_M * math.cos(math.radians(lat)), (glat - g_lat) * DEG_M)
        assert err_m < 0.5


def test_gcj02_shift_direction_and_outside_china() -> None:
    glon, glat = wgs84_to_gcj02(116.397, 39.908)  # Beijing
    assert 0.0055 < glon - 116.397 < 0.0070 and 0.0008 < glat - 39.908 < 0.0020
    lon = np.array([139.69, 13.40, -74.0, 120.57])  # Tokyo, Berlin, New York, Zhangjiagang
    lat = np.array([35.69, 52.52, 40.7, 31.88])
    glon, glat = wgs84_to_gcj02(lon, lat)
    np.testing.assert_array_equal(glon[:3], lon[:3])
    np.testing.assert_array_equal(glat[:3], lat[:3])
    assert glon[3] != lon[3] and glat[3] != lat[3]


def test_gcj02_inverse_round_trip_below_a_centimetre() -> None:
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(75, 135, 1000), rng.uniform(18, 53, 1000)
    blon, blat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    err_m = np.hypot((blon - lon) * DEG_M * np.cos(np.radians(lat)), (blat - lat) * DEG_M)
    assert err_m.max() < 0.01
    slon, slat = gcj02_to_wgs84(*wgs84_to_gcj02(120.57, 31.88))
    assert abs(slon - 120.57) < 1e-7 and abs(slat - 31.88) < 1e-7


# ----------------------------------------------------------------------------- projected CRS
def test_projector_gauss_kruger_zone() -> None:
    p = Projector("EPSG:4549")
    x, y = p.forward(120.57, 31.88)
    assert 500_000 < x < 600_000  # east of the 120E central meridian (false easting 500 km)
    assert 3.4e6 < y < 3.6e6
    xs, ys = p.forward(np.array([120.0, 120.57]), np.array([31.88, 31.88]))
    assert xs[0] == pytest.approx(500_000, abs=1e-3) and xs[1] == pytest.approx(x)


@pytest.mark.parametrize("crs, words", [("EPSG:999999", "EPSG:999999"), ("FOO:123", "FOO:123"),
                                         ("EPSG:4490", "geographic")])
def test_projector_rejects_unknown_or_geographic(crs: str, words: str) -> None:
    with pytest.raises(ConfigError, match="geo.projected_crs") as e:
        Projector(crs)
    assert words in str(e.value)


# ----------------------------------------------------------------------------- unit grid
def _square(x0: float, y0: float, size: float = 100.0) -> list[list[float]]:
    xs = np.array([x0, x0 + size, x0 + size, x0, x0])
    ys = np.array([y0, y0, y0 + size, y0 + size, y0])
    lon, lat = local_to_lonlat(xs, ys, ANCHOR)
    return [[float(a), float(b)] for a, b in zip(lon, lat)]


def _grid_feature(code: Any, x0: float, y0: float, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"grid_code": code, **props},
            "geometry": {"type": "Polygon", "coordinates": [_square(x0, y0)]}}


def _write(path: Path, features: list[Any], **top: Any) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features, **top}, ensure_ascii=False),
                    encoding="utf-8")
    return path


@pytest.fixture()
def grid_file(tmp_path: Path) -> Path:
    # a 3 x 2 block of 100 m cells east/north of the anchor; file order is not code order
    feats = [_grid_feature(f"320582101002{3 * j + i + 1:03d}", 100.0 * i, 100.0 * j) for i in range(3)
             for j in range(2)]
    feats[0]["properties"].update(street_code="320582199", community_code="320582199009", name="港城一号网格")
    feats.append({"type": "Feature", "properties": {"grid_code": "32058210100399"},  # 14 digits, MultiPolygon
                  "geometry": {"type": "MultiPolygon", "coordinates": [[_square(-300.0, 0.0)],
                                                                        [_square(-300.0, 200.0)]]}})
    return _write(tmp_path / "grids.geojson", list(reversed(feats)))


def test_grid_lookup_inside_outside_and_codes(grid_file: Path) -> None:
    layer = GridLayer.load(grid_file)
    assert len(layer) == 7
    x = np.array([50.0, 150.0, 250.0, 250.0, -250.0, -250.0, -250.0, 400.0, 50.0])
    y = np.array([50.0, 50.0, 50.0, 150.0, 50.0, 250.0, 150.0, 50.0, -10.0])
    cells = layer.lookup(*local_to_lonlat(x, y, ANCHOR))
    codes = [c.grid_code if c else None for c in cells]
    assert codes == ["320582101002001", "320582101002002", "320582101002003", "320582101002006",
                     "32058210100399", "32058210100399", None, None, None]
    first = cells[0]
    assert first == GridCell("320582101002001", "320582199", "320582199009", "港城一号网格")
    assert first.admin_code == "320582"
    derived = cells[1]
    assert derived is not None and (derived.street_code, derived.community_code) == ("320582101", "320582101002")
    fourteen = cells[4]
    assert fourteen is not None and (fourteen.street_code, fourteen.community_code) == ("320582101", "320582101003")
    # scalars work too; NaN is nowhere
    assert [c.grid_code for c in layer.lookup(*local_to_lonlat(10.0, 10.0, ANCHOR)) if c] == ["320582101002001"]
    assert layer.lookup(float("nan"), 31.88) == [None]


def test_grid_border_goes_to_the_smallest_code(grid_file: Path, tmp_path: Path) -> None:
    layer = GridLayer.load(grid_file)
    # exact border points: the vertex four cells share, an edge between two cells side by side, one between
    # two cells one above the other
    border_lon, border_lat = local_to_lonlat(np.array([100.0, 200.0, 250.0]), np.array([100.0, 50.0, 100.0]), ANCHOR)
    got = [c.grid_code if c else None for c in layer.lookup(border_lon, border_lat)]
    assert got == ["320582101002001", "320582101002002", "320582101002003"]
    # and the same answer whatever the file order
    feats = json.loads(grid_file.read_text(encoding="utf-8"))["features"]
    again = GridLayer.load(_write(tmp_path / "shuffled.geojson", feats[3:] + feats[:3]))
    assert [c.grid_code if c else None for c in again.lookup(border_lon, border_lat)] == got


def test_grids_within_a_radius_of_a_point(grid_file: Path) -> None:
    """A place 0.4 m from the border of 001 and 002 with a 0.6 m radius may lie in either; with 0.3 m it may not;
    at the corner four cells share, all four."""
    layer = GridLayer.load(grid_file)
    codes = lambda x, y, r: [c.grid_code for c in layer.within(*local_to_lonlat(x, y, ANCHOR), r)]  # noqa: E731
    assert codes(99.6, 50.0, 0.6) == ["320582101002001", "320582101002002"]
    assert codes(99.6, 50.0, 0.3) == ["320582101002001"]
    assert codes(50.0, 99.6, 0.6) == ["320582101002001", "320582101002004"]  # north: metres of latitude
    assert codes(100.3, 100.3, 0.5) == ["320582101002001", "320582101002002", "320582101002004",
                                        "320582101002005"]
    assert codes(50.0, -10.0, 5.0) == [] and codes(float("nan"), 0.0, 1.0) == [] and codes(50.0, 50.0, 0.0) == []


def test_grid_lookup_vectorised_ten_thousand_points(grid_file: Path) -> None:
    layer = GridLayer.load(grid_file)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-350, 350, 10_000), rng.uniform(-50, 250, 10_000)
    cells = layer.lookup(*local_to_lonlat(x, y, ANCHOR))
    assert len(cells) == 10_000
    inside = (x > 0) & (x < 300) & (y > 0) & (y < 200)
    assert all(c is not None for c, k in zip(cells, inside) if k)
    assert all(c is None for c, xx, yy in zip(cells, x, y) if yy < 0 or yy > 300 or xx > 300)


def _bad_grid_cases() -> list[tuple[str, Any, str]]:
    ok = _grid_feature("320582101002001", 0, 0)
    bow = _grid_feature("320582101002002", 0, 0)
    ring = _square(0.0, 0.0)
    bow["geometry"]["coordinates"] = [[ring[0], ring[2], ring[1], ring[3], ring[0]]]  # self-crossing
    projected = _grid_feature("320582101002002", 0, 0)
    projected["geometry"]["coordinates"] = [[[500000, 3.5e6], [500100, 3.5e6], [500100, 3.5001e6], [500000, 3.5e6]]]
    return [
        ("missing code", [ok, {"type": "Feature", "properties": {"name": "x"},
                               "geometry": _grid_feature("1", 0, 0)["geometry"]}],
         r"features\[1\]\.properties\.grid_code: missing"),
        ("short code", [_grid_feature(f"32058210100200{k}", 100.0 * k, 0) for k in range(3)]
         + [_grid_feature("12345", 0, 0)],
         r"features\[3\]\.properties\.grid_code: '12345' must be 15 digits \(or 14\)"),
        ("letters", [_grid_feature("32058210100200A", 0, 0)], r"features\[0\]\.properties\.grid_code"),
        ("bad street", [ok, _grid_feature("320582101002002", 0, 0, street_code="3205")],
         r"features\[1\]\.properties\.street_code: '3205' must be 9 digits"),
        ("bad community", [_grid_feature("320582101002002", 0, 0, community_code="320582101")],
         r"features\[0\]\.properties\.community_code: '320582101' must be 12 digits"),
        ("duplicate", [ok, _grid_feature("320582101002002", 100, 0), _grid_feature("320582101002001", 200, 0)],
         r"features\[2\]\.properties\.grid_code: '320582101002001' repeats features\[0\]"),
        ("invalid polygon", [ok, bow], r"features\[1\]\.geometry: invalid polygon"),
        ("point geometry", [ok, {"type": "Feature", "properties": {"grid_code": "320582101002002"},
                                 "geometry": {"type": "Point", "coordinates": [120.5, 31.8]}}],
         r"features\[1\]\.geometry: 'Point'"),
        ("no geometry", [ok, {"type": "Feature", "properties": {"grid_code": "320582101002002"}, "geometry": None}],
         r"features\[1\]\.geometry: missing"),
        ("short ring", [{"type": "Feature", "properties": {"grid_code": "320582101002002"},
                         "geometry": {"type": "Polygon", "coordinates": [[[120.5, 31.8], [120.6, 31.8]]]}}],
         r"features\[0\]\.geometry: malformed Polygon"),
        ("projected metres", [ok, projected], r"features\[1\]\.geometry: coordinates .* not lon/lat"),
        ("not a feature", [ok, ["x"]], r"features\[1\]: expected a GeoJSON Feature"),
    ]


@pytest.mark.parametrize("name, feats, pattern", _bad_grid_cases(), ids=[c[0] for c in _bad_grid_cases()])
def test_grid_malformed_feature_is_one_config_error(tmp_path: Path, name: str, feats: Any, pattern: str) -> None:
    path = _write(tmp_path / "grids.geojson", feats)
    with pytest.raises(ConfigError, match=pattern) as e:
        GridLayer.load(path)
    assert str(e.value).startswith(f"{path}: ")


@pytest.mark.parametrize("text, pattern", [
    (None, "file not found"),
    ("{not json", r"grids\.geojson:1: not JSON"),
    ('{"type": "Feature", "features": []}', "expected a GeoJSON FeatureCollection, got 'Feature'"),
    ("[1, 2]", "expected a GeoJSON FeatureCollection, got 'list'"),
    ('{"type": "FeatureCollection", "features": {}}', "features: expected a list"),
    ('{"type": "FeatureCollection", "features": [], "crs": {"type": "name", "properties": {"name": "EPSG:4549"}}}',
     "crs: 'EPSG:4549'"),
])
def test_grid_malformed_file_is_one_config_error(tmp_path: Path, text: str | None, pattern: str) -> None:
    path = tmp_path / "grids.geojson"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=pattern) as e:
        GridLayer.load(path, where="geo.grid_layer")
    assert "grids.geojson" in str(e.value)


def test_grid_layer_accepts_bom_and_integer_codes(tmp_path: Path) -> None:
    path = tmp_path / "grids.geojson"
    body = json.dumps({"type": "FeatureCollection", "features": [_grid_feature(320582101002001, 0, 0)]})
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert [c.grid_code for c in GridLayer.load(path).cells] == ["320582101002001"]
    empty = GridLayer.load(_write(tmp_path / "empty.geojson", []))
    assert empty.lookup([120.57, 120.58], [31.88, 31.88]) == [None, None]


# ----------------------------------------------------------------------------- inventory
def _point(cid: Any, x: float, y: float, **props: Any) -> dict[str, Any]:
    lon, lat = local_to_lonlat(x, y, ANCHOR)
    return {"type": "Feature", "properties": {"component_id": cid, **props},
            "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]}}


@pytest.fixture()
def inventory_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "covers.geojson", [
        _point("3205820102048188", 0.0, 0.0),                        # legacy sewage cover
        _point("32058201003000017", 10.0, 0.0),                      # 2026 rain cover
        _point("3205820105000002", 20.0, 0.0, kind="电力井盖(高压)"),  # the city's own kind name wins
        _point("32058201023000003", 30.0, 0.0),                      # 2026 unknown-kind cover
        _point("3205820299000004", 40.0, 0.0),                       # not a cover class
        _point("3205820107000006", 5.0, 5.0),                        # a communications cover off the line
    ])


def test_inventory_kinds_and_codes(inventory_file: Path) -> None:
    inv = Inventory.load(inventory_file)
    assert len(inv) == 6
    sewage = inv.get("3205820102048188")
    assert sewage is not None
    assert (sewage.kind, sewage.legacy_code, sewage.gb2026_code) == ("污水井盖", "0102", "01002")
    assert sewage.admin_code == "320582"
    rain = inv.get("32058201003000017")
    assert rain is not None and (rain.kind, rain.legacy_code, rain.gb2026_code) == ("雨水井盖", "0103", "01003")
    power = inv.get("3205820105000002")
    assert power is not None and (power.kind, power.legacy_code, power.gb2026_code) == ("电力井盖(高压)", "0105",
                                                                                        "01005")
    unknown = inv.get("32058201023000003")
    assert unknown is not None and (unknown.kind, unknown.gb2026_code) == ("不明井盖", "01023")
    other = inv.get("3205820299000004")
    assert other is not None and (other.kind, other.legacy_code, other.gb2026_code) == (None, "0299", None)
    assert isinstance(sewage, Component)


def test_inventory_nearest_within_radius(inventory_file: Path) -> None:
    inv = Inventory.load(inventory_file)
    x = np.array([0.5, 9.0, 21.9, 30.0, 50.0, 15.0, -3.0])
    y = np.array([0.0, 0.5, 0.0, 2.5, 0.0, 0.0, 0.0])
    got = inv.nearest(*local_to_lonlat(x, y, ANCHOR), radius_m=2.0)
    ids = [c.component_id if c else None for c in got]
    assert ids == ["3205820102048188", "32058201003000017", "3205820105000002", None, None, None, None]
    # a wider radius reaches more; equidistant covers (15 m from 10 and 20) resolve to the smallest id
    wide = inv.nearest(*local_to_lonlat(x, y, ANCHOR), radius_m=6.0)
    assert [c.component_id if c else None for c in wide][3:6] == ["32058201023000003", None, "32058201003000017"]
    assert inv.nearest(float("nan"), float("nan"), 2.0) == [None]
    with pytest.raises(ValueError):
        inv.nearest(120.57, 31.88, 0.0)


@pytest.mark.parametrize("feats, pattern", [
    ([_point("3205820102048188", 0, 0), _point("3205820102048188", 5, 0)],
     r"features\[1\]\.properties\.component_id: '3205820102048188' repeats features\[0\]"),
    ([_point("3205820102048188", 0, 0), _point("320582010204818", 5, 0)],
     r"features\[1\]\.properties\.component_id: '320582010204818' must be 16 digits \(or 17\)"),
    ([{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [120.5, 31.8]}}],
     r"features\[0\]\.properties\.component_id: missing"),
    ([_point("3205820102048188", 0, 0, kind=3)], r"features\[0\]\.properties\.kind"),
    ([{"type": "Feature", "properties": {"component_id": "3205820102048188"},
       "geometry": {"type": "Point", "coordinates": [120.5]}}], r"features\[0\]\.geometry\.coordinates"),
    ([{"type": "Feature", "properties": {"component_id": "3205820102048188"},
       "geometry": {"type": "LineString", "coordinates": [[120.5, 31.8], [120.6, 31.8]]}}],
     r"features\[0\]\.geometry: 'LineString'"),
], ids=["duplicate", "digits", "missing", "kind", "coordinates", "geometry"])
def test_inventory_malformed_is_one_config_error(tmp_path: Path, feats: Any, pattern: str) -> None:
    path = _write(tmp_path / "covers.geojson", feats)
    with pytest.raises(ConfigError, match=pattern) as e:
        Inventory.load(path)
    assert str(e.value).startswith(f"{path}: ")


def test_inventory_missing_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"covers\.geojson: file not found \(named by geo\.inventory\)"):
        Inventory.load(tmp_path / "covers.geojson")
    assert Inventory.load(_write(tmp_path / "none.geojson", [])).nearest([120.5], [31.8], 2.0) == [None]


# ----------------------------------------------------------------------------- ledger
def test_cover_ledger_keeps_the_latest_and_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    conn = sqlite3.connect(db)
    ledger = CoverLedger(conn)
    assert ledger.last_intact("3205820102048188") is None
    ledger.record_intact(["3205820102048188", "32058201003000017"], 1000.0)
    ledger.record_intact(["3205820102048188"], 900.0)  # an older sighting arriving late
    ledger.record_intact(["32058201003000017"], 1100.0)
    ledger.record_intact([], 5000.0)
    assert ledger.last_intact("3205820102048188") == 1000.0
    assert ledger.last_intact("32058201003000017") == 1100.0
    conn.close()
    again = CoverLedger(sqlite3.connect(db))
    assert again.last_intact("3205820102048188") == 1000.0
    assert again.last_intact("32058201003000017") == 1100.0
    with pytest.raises(ValueError):
        again.record_intact(["3205820102048188"], float("nan"))
