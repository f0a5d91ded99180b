"""Open cases as GeoJSON (RFC 7946: Points, lon/lat) and CSV, for a GIS layer or a spreadsheet.

Coordinates are CGCS2000 (EPSG:4490) as the edges send them; RFC 7946 GeoJSON means WGS84, which CGCS2000
equals within centimetres here. A case without a ground position has `"geometry": null` (GeoJSON allows it)
and empty lon/lat cells. Files are written atomically (a temp file renamed over the target), so a reader
never sees half a file. The CSV is UTF-8 with a byte-order mark, so spreadsheet programs show the Chinese
case-type names correctly.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .store import CaseRow, Store

__all__ = ["CSV_COLUMNS", "cases_csv", "cases_geojson", "write_csv", "write_geojson"]

CSV_COLUMNS = ("case_id", "class", "state", "lon", "lat", "members", "open_members", "incidents", "edges", "cameras",
               "incident_type", "type_name", "legacy_code", "major_code", "minor_code", "admin_code",
               "first_discovered_at", "last_observed_at", "confidence", "evidence_sha256", "updated_at")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _properties(c: CaseRow) -> dict[str, Any]:
    return {
        "case_id": c.case_id, "class": c.class_name, "state": c.state, "members": c.members,
        "open_members": c.open_members, "incidents": list(c.incidents), "edges": list(c.edges),
        "cameras": list(c.cameras), "incident_type": c.incident_type, "type_name": c.type_name,
        "legacy_code": c.legacy_code, "major_code": c.major_code, "minor_code": c.minor_code,
        "admin_code": c.admin_code, "first_discovered_at": c.first_discovered_at,
        "last_observed_at": c.last_observed_at, "confidence": c.confidence, "evidence_sha256": c.evidence_sha256,
        "updated_at": _iso(c.updated_at),
    }


def cases_geojson(store: Store, state: str | None = "open") -> dict[str, Any]:
    """A FeatureCollection of the cases in `state` (default the open ones; None: all)."""
    feats = []
    for c in store.cases(state):
        geom = None if c.lon is None or c.lat is None else \
            {"type": "Point", "coordinates": [round(c.lon, 7), round(c.lat, 7)]}
        feats.append({"type": "Feature", "id": c.case_id, "geometry": geom, "properties": _properties(c)})
    return {"type": "FeatureCollection", "features": feats}


def cases_csv(store: Store, state: str | None = "open") -> str:
    """The cases as CSV text (header + one row per case; list cells joined with `;`)."""
    return _csv(store.cases(state))


def _csv(cases: list[CaseRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in cases:
        p = _properties(c)
        p["lon"] = "" if c.lon is None else f"{c.lon:.7f}"
        p["lat"] = "" if c.lat is None else f"{c.lat:.7f}"
        w.writerow(["" if p[k] is None else (";".join(p[k]) if isinstance(p[k], list) else p[k])
                    for k in CSV_COLUMNS])
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_geojson(store: Store, path: str | Path, state: str | None = "open") -> int:
    """Write the cases as GeoJSON; returns how many features."""
    fc = cases_geojson(store, state)
    _atomic_write(Path(path), (json.dumps(fc, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    return len(fc["features"])


def write_csv(store: Store, path: str | Path, state: str | None = "open") -> int:
    """Write the cases as CSV (UTF-8 with BOM); returns how many rows."""
    cases = store.cases(state)
    _atomic_write(Path(path), _csv(cases).encode("utf-8-sig"))
    return len(cases)
