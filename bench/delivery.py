"""How fast does the outbox drain to the broker, and how long does a backlog take after an outage?

    python bench/delivery.py [--events 2000] [--backlog 10000] [--rounds 2] [--broker-save changes|interval]
                             [--json]

Starts Mosquitto with the production config (broker_config/mosquitto.conf, rendered onto loopback ports as
the tests do), a subscriber in the centre's intake account that is online throughout, and measures, in the
same run and alternating:

- **baseline**: a bare paho-mqtt v5 client publishing the same messages QoS 1 with the same in-flight window,
  no outbox: the most the broker and link allow for this payload;
- **ours**: the same messages written to the durable outbox (SQLite, fsync per transaction) while the broker
  is away, then `Publisher` draining them — what a box does after an outage;

then one **backlog** of `--backlog` events through the outbox (default 10,000: an hour of a busy site). Each
event is a real schema-1 incident message carrying an evidence JPEG inline (a frame of the demo clip, at the
runtime's evidence quality), so the bytes on the wire are what a box sends. Rates are events per second
acknowledged by the broker (QoS 1), and end to end (stored by the subscriber). The ratio ours / baseline is
the figure to watch: machines are shared and noisy, absolute numbers are for orientation.

`--broker-save` picks how the broker saves its persistence file: `changes` (the production setting: after
every change, so a broker power cut loses nothing it acknowledged, at the price of one file write per
message) or `interval` (every second).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import cv2  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edge.config import Broker  # noqa: E402
from edge.messages import incident_publications  # noqa: E402
from edge.outbox import Outbox, OutboxLimits  # noqa: E402
from edge.publisher import Publisher  # noqa: E402
from fixtures_mqtt import Mosquitto  # noqa: E402
from incident_factory import make_event, make_manifest  # noqa: E402

EDGE, EDGE_PW = "bench-edge", "bench-Edge-pw-2291"
INTAKE, INTAKE_PW = "intake", "bench-Intake-pw-5510"
WINDOW = 20  # the Publisher's default in-flight window: the baseline gets the same


def evidence_jpeg() -> bytes:
    """A real frame of the demo clip, 960 px wide, JPEG quality 85 (the evidence module's size and quality)."""
    clip = next((ROOT / "streams" / "demo").glob("*.mp4"))
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read a frame of {clip}")
    h, w = frame.shape[:2]
    frame = cv2.resize(frame, (960, round(h * 960 / w)))
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def payloads(n: int, jpeg: bytes, tag: str) -> list[tuple[str, bytes]]:
    manifest = make_manifest()
    out = []
    for i in range(n):
        ev = make_event(i, event=("opened", "updated", "resolved")[i % 3], camera_id=f"cam{(i // 3) % 8}",
                        message_id=f"{tag}-{i:06d}", jpeg=jpeg[:-2] + i.to_bytes(4, "big") + b"\xff\xd9")
        out += incident_publications(ev, edge_id=EDGE, admin_code="320582", utc_offset="+08:00", manifest=manifest,
                                     evidence_mode="inline")
    return out


class Counter:
    """The centre's intake account, subscribed QoS 1 to the box's incidents: counts what arrives."""

    def __init__(self, port: int):
        self.n = 0
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-intake", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(INTAKE, INTAKE_PW)
        self.c.on_connect = lambda c, *a: c.subscribe(f"cityops/{EDGE}/incident/#", qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.c.loop_start()
        if not self.ready.wait(10):
            raise SystemExit("the counting subscriber could not subscribe")

    def _on_message(self, *a: object) -> None:
        with self.cond:
            self.n += 1
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.n >= n, timeout)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def run_baseline(port: int, msgs: list[tuple[str, bytes]], sub: Counter) -> dict[str, float]:
    acked = threading.Semaphore(0)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{EDGE}-baseline", protocol=mqtt.MQTTv5)
    c.username_pw_set(EDGE, EDGE_PW)
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)
    c.on_publish = lambda *a: acked.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    start_n = sub.n
    t0 = time.perf_counter()
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1)
    for _ in msgs:
        if not acked.acquire(timeout=600):
            raise SystemExit("baseline: the broker stopped acknowledging")
    t_ack = time.perf_counter() - t0
    sub.wait_for(start_n + len(msgs), 600)
    t_e2e = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return {"acked_per_s": len(msgs) / t_ack, "e2e_per_s": len(msgs) / t_e2e, "seconds": t_ack}


def run_ours(port: int, msgs: list[tuple[str, bytes]], sub: Counter, work: Path) -> dict[str, float]:
    db = work / f"outbox-{time.monotonic_ns()}.sqlite"
    outbox = Outbox(db, OutboxLimits(max_messages=10 * len(msgs) + 1000, max_mb=1e6))
    t0 = time.perf_counter()
    for k in range(0, len(msgs), 100):  # as the incident book writes: a few events per transaction
        outbox.put_many(msgs[k:k + 100])
    t_put = time.perf_counter() - t0
    start_n = sub.n
    pub = Publisher(Broker(host="127.0.0.1", port=port, password_env="BENCH_EDGE_PW"), EDGE, outbox,
                    reconnect_delay=(0.1, 1.0))
    t0 = time.perf_counter()
    pub.start()
    last = time.perf_counter()
    while outbox.pending_count():
        time.sleep(0.02)
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            print(f"  … {outbox.pending_count()} still in the outbox", file=sys.stderr)
    t_ack = time.perf_counter() - t0
    sub.wait_for(start_n + len(msgs), 600)
    t_e2e = time.perf_counter() - t0
    pub.stop(5)
    outbox.close()
    return {"acked_per_s": len(msgs) / t_ack, "e2e_per_s": len(msgs) / t_e2e, "seconds": t_ack, "e2e_seconds": t_e2e,
            "put_per_s": len(msgs) / t_put}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000, help="events per alternating round")
    ap.add_argument("--rounds", type=int, default=2, help="baseline/ours pairs")
    ap.add_argument("--backlog", type=int, default=10000, help="events in the final backlog (0: skip)")
    ap.add_argument("--broker-save", choices=("changes", "interval"), default="changes")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = ap.parse_args(argv)
    os.environ["BENCH_EDGE_PW"] = EDGE_PW
    jpeg = evidence_jpeg()
    overrides = {} if a.broker_save == "changes" else {"autosave_on_changes": "false", "autosave_interval": "1"}
    with tempfile.TemporaryDirectory(prefix="cityops-bench-delivery-") as tmp:
        work = Path(tmp)
        with Mosquitto(work / "broker", {EDGE: EDGE_PW, INTAKE: INTAKE_PW}, overrides=overrides) as broker:
            sub = Counter(broker.port)
            size = len(payloads(1, jpeg, "probe")[0][1])
            print(f"events with inline evidence: {size / 1024:.0f} KiB each (JPEG {len(jpeg) / 1024:.0f} KiB); "
                  f"broker saves its persistence {'after every change' if a.broker_save == 'changes' else 'every second'}")
            base, ours = [], []
            for r in range(a.rounds):
                b = run_baseline(broker.port, payloads(a.events, jpeg, f"b{r}"), sub)
                base.append(b)
                print(f"round {r + 1} baseline (bare paho, no outbox): {b['acked_per_s']:7.1f} events/s acked, "
                      f"{b['e2e_per_s']:7.1f} end to end")
                o = run_ours(broker.port, payloads(a.events, jpeg, f"o{r}"), sub, work)
                ours.append(o)
                print(f"round {r + 1} ours (outbox → Publisher):     {o['acked_per_s']:7.1f} events/s acked, "
                      f"{o['e2e_per_s']:7.1f} end to end (outbox writes {o['put_per_s']:.0f} events/s)")
            med_b = statistics.median(x["acked_per_s"] for x in base)
            med_o = statistics.median(x["acked_per_s"] for x in ours)
            ratio = med_o / med_b
            print(f"sustained publish rate: ours {med_o:.1f} events/s, baseline {med_b:.1f} events/s, "
                  f"ratio ours/baseline {ratio:.2f}")
            result = {"event_bytes": size, "broker_save": a.broker_save, "events_per_round": a.events,
                      "rounds": a.rounds, "publish_rate_events_per_s": round(med_o, 1),
                      "baseline_publish_rate_events_per_s": round(med_b, 1), "ratio_ours_over_baseline": round(ratio, 3)}
            if a.backlog:
                print(f"backlog: {a.backlog} events waiting in the outbox, broker back …", flush=True)
                bl = run_ours(broker.port, payloads(a.backlog, jpeg, "backlog"), sub, work)
                print(f"backlog of {a.backlog} drained in {bl['seconds']:.1f} s ({bl['acked_per_s']:.1f} events/s); "
                      f"all stored by the subscriber after {bl['e2e_seconds']:.1f} s")
                result.update({"backlog_events": a.backlog, "backlog_drain_s": round(bl["seconds"], 1),
                               "backlog_e2e_s": round(bl["e2e_seconds"], 1)})
            sub.close()
    if a.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
