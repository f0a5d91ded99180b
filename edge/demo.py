"""`python run_edge.py` with no arguments: the bundled demo site, offline.

A rendered scenario clip plays as the camera (paced faster than real time), the shipped model scans it, the
incident book votes, and every event goes through the durable outbox to an in-process MQTT broker; a
subscriber — standing in for the city's intake — prints each incident as it arrives.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from .app import EdgeApp, load_everything
from .broker import EmbeddedBroker
from .config import ConfigError
from .topics import Topics

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DEMO_SITE = ROOT / "streams" / "demo.yaml"


class IntakePrinter:
    """A stand-in for the centre: subscribes to the edge's incident topics and prints what arrives."""

    def __init__(self, host: str, port: int, topics: Topics) -> None:
        self.received: list[dict] = []
        self.seen: set[str] = set()
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-intake", protocol=mqtt.MQTTv311)
        self.c.on_message = self._on_message
        self.c.connect(host, port, keepalive=30)
        self.c.subscribe(f"{topics.base}/incident/#", qos=1)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            d = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if d.get("message_id") in self.seen:  # at-least-once: drop the duplicates
                return
            self.seen.add(d.get("message_id"))
            self.received.append(d)
        where = f" zone {d['zone']}" if d.get("zone") else ""
        ev = d.get("evidence") or {}
        print(f"  ← centre received {d['event']:<8} {d['incident_id']}  {d['class']:<17} {d.get('type_name', '')} "
              f"camera {d['camera_id']}{where}  conf {d['confidence']:.2f}  at {d['observed_at']}"
              f"{'  evidence ' + str(len(ev.get('data_b64', '')) * 3 // 4 // 1024) + ' KB' if ev.get('data_b64') else ''}",
              flush=True)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def run_demo(a: argparse.Namespace) -> int:
    print(f"cityops-edge demo: bundled site {DEMO_SITE.relative_to(ROOT)}, offline, embedded MQTT broker")
    try:
        loaded = load_everything(DEMO_SITE, Path(a.model) if getattr(a, "model", None) else None)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    broker = EmbeddedBroker().start()
    site = loaded.site
    loaded.site = site.model_copy(update={"broker": site.broker.model_copy(update={"port": broker.port, "host": broker.host})})
    intake = IntakePrinter(broker.host, broker.port, Topics(site.broker.topic_prefix, site.edge_id))
    speed = 10.0
    print(f"camera(s): {', '.join(c.id for c in loaded.cameras)}; clip played at {speed:g}x real time; "
          f"model {loaded.detector.manifest.name} {loaded.detector.manifest.version}")
    with tempfile.TemporaryDirectory(prefix="cityops-demo-") as tmp:
        # media second 0 = now, so the messages carry today's date (the clip runs 10x: its times run ahead)
        start = round(time.time())
        app = EdgeApp(loaded, state_dir=Path(tmp), speed=speed, ts_offset=start,
                      on_event=lambda ev: _edge_line(ev, start))
        s = app.run_live(duration_s=a.duration)
    intake.stop()
    broker.stop()
    n = len(intake.received)
    print(f"\nsummary: {s.cameras} camera(s), {s.scans} scans; incidents opened {s.opened}, updated {s.updated}, "
          f"resolved {s.resolved}; messages acknowledged by the broker {s.published}, incident messages received by "
          f"the centre {n}, still queued {s.pending}")
    for cam, err in s.camera_errors.items():
        print(f"camera {cam}: {err}")
    return 0 if not s.camera_errors else 1


def _edge_line(ev, start: float) -> None:
    print(f"edge: {ev.event:<8} {ev.incident_id}  {ev.class_name:<17} at media {ev.ts - start:6.1f}s", flush=True)
