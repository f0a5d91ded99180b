"""The centre's reference intake: receives incident messages from every edge over MQTT v5 (a durable
subscription, or a shared one for several intakes), validates them, stores each once (by `message_id`), follows each incident's state in event order,
merges nearby incidents of one class from different edges into cases, and exports the open cases.

- :mod:`edge.intake.records` — one MQTT message → an incident event, an evidence picture or an invalid record
- :mod:`edge.intake.store` — the :class:`Store` interface and :class:`SQLiteStore`
- :mod:`edge.intake.client` — :class:`Intake`, the MQTT side (manual acks after the commit)
- :mod:`edge.intake.export` — GeoJSON / CSV of the open cases
- :mod:`edge.intake.cli` — `run_edge.py intake` (`add_intake_parser`, `cmd_intake`)
"""
from __future__ import annotations

from .cli import add_intake_parser, cmd_intake
from .client import Intake, IntakeStats, subscriptions
from .export import cases_csv, cases_geojson, write_csv, write_geojson
from .records import EvidenceRecord, IncidentRecord, InvalidRecord, parse_message
from .store import CaseRow, EventRow, IncidentRow, InvalidRow, SQLiteStore, SqlStore, Store, StoreError

__all__ = ["CaseRow", "EventRow", "EvidenceRecord", "IncidentRecord", "IncidentRow", "Intake", "IntakeStats",
           "InvalidRecord", "InvalidRow", "SQLiteStore", "SqlStore", "Store", "StoreError", "add_intake_parser",
           "cases_csv", "cases_geojson", "cmd_intake", "parse_message", "subscriptions", "write_csv",
           "write_geojson"]
