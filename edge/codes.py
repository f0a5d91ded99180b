"""Shipped defaults mapping detector classes to incident types and city-management codes.

Codes are configuration, not constants (../shared/STANDARDS.md): a deployment overrides them in the
manifest. Legacy = CJ/T 214-2007 / GB/T 30428.2-2013; gb2026 = GB/T 47678.5-2026.
"""
from __future__ import annotations

from typing import Any

DEFAULT_THRESHOLD = 0.4

CLASS_DEFAULTS: list[dict[str, Any]] = [
    {"name": "manhole_cover", "incident_type": None, "codes": None},
    {"name": "manhole_open", "incident_type": "manhole_missing",
     "codes": {"case_kind": "部件", "type_name": "井盖丢失", "legacy": {"major": "01", "minor": "14"},
               "gb2026": {"major": "01", "minor": "023"}}},
    {"name": "ponding", "incident_type": "ponding",
     "codes": {"case_kind": "事件", "type_name": "道路积水", "legacy": {"major": "04", "minor": "06"}, "gb2026": None}},
    {"name": "garbage_pile", "incident_type": "garbage_exposed",
     "codes": {"case_kind": "事件", "type_name": "暴露垃圾", "legacy": {"major": "01", "minor": "02"},
               "gb2026": {"major": "06", "minor": "010"}}},
    {"name": "material_pile", "incident_type": "material_pile",
     "codes": {"case_kind": "事件", "type_name": "乱堆物堆料", "legacy": {"major": "05", "minor": "07"},
               "gb2026": {"major": "06", "minor": "036"}}},
    {"name": "illegal_structure", "incident_type": "illegal_structure",
     "codes": {"case_kind": "事件", "type_name": "私搭乱建", "legacy": {"major": "01", "minor": "01"},
               "gb2026": {"major": "06", "minor": "001"}}},
]


def default_class_entries(thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """Manifest `classes` entries in class-id order with the given (or default) thresholds."""
    return [{"id": i, "name": c["name"], "threshold": round(float(thresholds.get(c["name"], DEFAULT_THRESHOLD)), 3),
             "incident_type": c["incident_type"], "codes": c["codes"]} for i, c in enumerate(CLASS_DEFAULTS)]
