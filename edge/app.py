"""The edge runtime: cameras → detector → rules → incident book → outbox → MQTT, in one process.

`EdgeApp.run()` starts in order (state, model, publisher, cameras) and stops in reverse. Live cameras each get a
thread that scans on their own cadence; a replay instead merges all clips by media time in one thread, so the
same clips always give the same events.
"""
from __future__ import annotations

import heapq
import json
import logging
import signal
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import Camera, ConfigError, Rules, Site, load_rules, load_site, mask_url, rules_path
from .detector import Detector
from .evidence import evidence_jpeg
from .incidents import IncidentBook
from .locate import Locator
from .messages import IncidentSink, camera_status_message
from .rules import RuleSet
from .sources import FileSource, RtspSource, SourceError, open_source
from .topics import Topics
from .types import Frame, IncidentEvent

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Summary:
    cameras: int = 0
    scans: int = 0
    opened: int = 0
    updated: int = 0
    resolved: int = 0
    published: int = 0
    pending: int = 0
    camera_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class Loaded:
    """A site with everything it refers to, checked: what `check` validates and `run`/`replay` use."""

    site: Site
    site_path: Path
    rules: dict[str, Rules]
    rulesets: dict[str, RuleSet]
    detector: Detector
    cameras: list[Camera]
    locator: Locator


def resolve(path: str, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for cand in (base / p, ROOT / p):
        if cand.exists():
            return cand
    return base / p


def load_everything(site_path: Path, model: Path | None = None, rules_override: Path | None = None) -> Loaded:
    """Load site, rules and model, and cross-check them; raise ConfigError listing every problem found."""
    site_path = Path(site_path).resolve()
    site = load_site(site_path)
    base = site_path.parent
    problems: list[str] = []
    from .detector import ModelMismatchError
    from .manifest import ManifestError

    model_path = model or resolve(site.model, base)
    try:
        det = Detector(model_path)
    except (ManifestError, ModelMismatchError) as e:
        raise ConfigError(f"{site_path}: model: {e}") from None
    except Exception as e:  # onnxruntime's own errors for a file that is not a model
        raise ConfigError(f"{site_path}: model {model_path}: cannot load ({type(e).__name__}: {e})") from None
    rules: dict[str, Rules] = {}
    rulesets: dict[str, RuleSet] = {}
    cams: list[Camera] = []
    for cam in site.cameras:
        rp = rules_override or rules_path(site_path, cam)
        try:
            r = load_rules(rp) if rp.exists() else Rules()
            if not rp.exists():
                log.warning("camera %s: no rule file %s; using defaults (whole frame, manifest thresholds)", cam.id, rp)
            if r.camera is not None and r.camera != cam.id and rules_override is None:
                problems.append(f"{rp}: camera: says {r.camera!r} but the site uses it for camera {cam.id!r}")
            rulesets[cam.id] = RuleSet.compile(r, det.class_names, det.manifest.thresholds)
            rules[cam.id] = r
        except ConfigError as e:
            problems.append(str(e))
        except ValueError as e:
            problems.append(f"{rp}: classes: {e}")
        url = cam.url
        if "://" not in url and "${" not in url:
            url = str(resolve(url, base))
            if not Path(url).exists():
                problems.append(f"{site_path}: cameras[{cam.id}].url: video file {url} does not exist")
        cams.append(cam.model_copy(update={"url": url}))
    try:
        locator = Locator.from_site(site, site_path, det.class_names)
    except ConfigError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems))
    return Loaded(site, site_path, rules, rulesets, det, cams, locator)


class BrokerRefused(RuntimeError):
    """The broker refused the edge's login (its message names host:port and user, never the password)."""


class JsonlSink:
    """Replay's sink: exactly the incident messages that would be published, one JSON object per line."""

    def __init__(self, path: Path | None, sink: IncidentSink) -> None:
        self.sink = sink
        self.f = open(path, "w", encoding="utf-8") if path else None
        self.messages: list[dict[str, Any]] = []

    def write_events(self, conn: sqlite3.Connection, events: list[IncidentEvent]) -> None:
        for topic, payload in self.sink.publications(events):
            if "/incident/" not in topic:
                continue
            msg = json.loads(payload)
            self.messages.append(msg)
            if self.f:
                self.f.write(json.dumps(msg, ensure_ascii=False) + "\n")
                self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


class EdgeApp:
    """One edge box: every camera of a site, one detector, one incident book, one outbox and publisher."""

    def __init__(self, loaded: Loaded, *, replay: bool = False, events_out: Path | None = None,
                 state_dir: Path | None = None, on_event: Callable[[IncidentEvent], None] | None = None,
                 max_media_s: float | None = None, speed: float | None = None, ts_offset: float = 0.0,
                 min_media_s: float | None = None) -> None:
        """`speed`: pace file cameras at this multiple of real time (the demo); None = as fast as possible.
        `min_media_s`/`max_media_s` bound a replay, so a test can stop one and resume it on the same state."""
        self.L = loaded
        self.speed = speed
        self.ts_offset = ts_offset  # replay: media second 0 is this epoch time (messages then carry real dates)
        self.replay = replay
        self.events_out = events_out
        self.on_event = on_event
        self.max_media_s = max_media_s
        self.min_media_s = min_media_s
        self.stop_event = threading.Event()
        self.summary = Summary(cameras=len(loaded.cameras))
        site = loaded.site
        if state_dir is None:
            state_dir = (Path(tempfile.mkdtemp(prefix="cityops-replay-")) if replay
                         else resolve(site.state_dir, loaded.site_path.parent))
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = state_dir / f"{site.edge_id}.sqlite"
        self.incident_sink = IncidentSink(edge_id=site.edge_id, admin_code=site.admin_code, utc_offset=site.utc_offset,
                                          manifest=loaded.detector.manifest, evidence_mode=site.broker.evidence,
                                          topic_prefix=site.broker.topic_prefix)
        self.jsonl = JsonlSink(events_out, self.incident_sink) if replay else None
        names = loaded.detector.class_names
        reportable = {c.name for c in loaded.detector.manifest.classes if c.incident_type}
        geo = site.geo
        self.book = IncidentBook(str(self.db_path), site.edge_id, names, loaded.rules,
                                 sink=self.jsonl if replay else self.incident_sink, evidence=evidence_jpeg,
                                 reportable=reportable, places=loaded.locator,
                                 merge_radius_m=geo.class_merge_radius_m, default_merge_m=geo.merge_radius_m)
        if loaded.locator.inventory is not None:
            from .geo import CoverLedger

            self._ledger_conn = sqlite3.connect(str(self.db_path), check_same_thread=False, isolation_level=None)
            loaded.locator.ledger = CoverLedger(self._ledger_conn)
        self.publisher = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ scanning
    def process(self, frame: Frame) -> list[IncidentEvent]:
        """One scan: detect, apply the camera's rules, vote. Runs on the frame's own timestamp."""
        rs = self.L.rulesets[frame.camera_id]
        h, w = frame.image.shape[:2]
        dets = self.L.detector.detect(frame.image, conf=rs.min_threshold)
        kept, zone_idx = rs.apply(dets, w, h)
        zones = [rs.zone_name(int(z)) for z in zone_idx]
        ground = self.L.locator.ground(frame.camera_id, kept, w, h)
        self.L.locator.record_covers(kept, ground, frame.ts)
        events = self.book.update(frame.camera_id, frame.ts, kept, zones, frame.image, ground)
        with self._lock:
            self.summary.scans += 1
            for ev in events:
                setattr(self.summary, ev.event, getattr(self.summary, ev.event) + 1)
        for ev in events:
            log.info("%s %s %s on %s at %.1fs (conf %.2f)", ev.event, ev.incident_id, ev.class_name, ev.camera_id,
                     ev.ts, ev.confidence)
            if self.on_event:
                self.on_event(ev)
        return events

    def _camera_loop(self, cam: Camera) -> None:
        try:
            src = open_source(cam)
            if isinstance(src, RtspSource):
                src.on_status = self._camera_status
            t0, ts0 = time.monotonic(), None
            for frame in src.frames(self.stop_event):
                if self.speed and isinstance(src, FileSource):
                    ts0 = frame.ts if ts0 is None else ts0
                    delay = t0 + (frame.ts - ts0) / self.speed - time.monotonic()
                    if delay > 0 and self.stop_event.wait(delay):
                        break
                self.process(frame)
        except SourceError as e:
            log.error("%s", e)
            with self._lock:
                self.summary.camera_errors[cam.id] = str(e)
        except Exception:  # one camera's failure must not stop the others
            log.exception("camera %s: scanning stopped by an unexpected error", cam.id)
            with self._lock:
                self.summary.camera_errors[cam.id] = "unexpected error (see log)"

    def _camera_status(self, camera_id: str, st: dict[str, Any]) -> None:
        """Retained camera status for the centre (never the URL: the source already masks it)."""
        if self.publisher is None:
            return
        site = self.L.site
        state = "online" if st.get("state") == "online" else "offline"
        detail = {k: st.get(k) for k in ("reconnects", "stalls", "last_frame_age_s")}
        reason = st.get("error") or (f"{st.get('state')}; " + ", ".join(f"{k} {v}" for k, v in detail.items() if v is not None))
        msg = camera_status_message(site.edge_id, camera_id, state, ts=time.time(), utc_offset=site.utc_offset, reason=reason)
        self.publisher.publish_retained(Topics(site.broker.topic_prefix, site.edge_id).camera_status(camera_id), msg)

    def _merged_files(self) -> Iterator[Frame]:
        """All file cameras' scans in media-time order (ties by camera order): a deterministic replay."""
        iters = []
        for k, cam in enumerate(self.L.cameras):
            if not cam.enabled:
                continue
            src = open_source(cam)
            if not isinstance(src, FileSource):
                raise ConfigError(f"camera {cam.id}: replay needs video files, not a live URL ({mask_url(cam.url)})")
            iters.append(((f.ts, k, f.seq, f) for f in src.frames(self.stop_event)))
        for _, _, _, f in heapq.merge(*iters, key=lambda x: (x[0], x[1], x[2])):
            if self.max_media_s is not None and f.ts > self.max_media_s:
                break
            if self.min_media_s is not None and f.ts <= self.min_media_s:
                continue
            yield f

    # ------------------------------------------------------------------ lifecycle
    def run_replay(self) -> Summary:
        try:
            for frame in self._merged_files():
                if self.stop_event.is_set():
                    break
                self.process(replace(frame, ts=frame.ts + self.ts_offset) if self.ts_offset else frame)
        finally:
            if self.jsonl:
                self.jsonl.close()
            self.book.close()
        return self.summary

    def run_live(self, duration_s: float | None = None, install_signals: bool = True,
                 startup_wait_s: float = 10.0) -> Summary:
        """Scan every camera until stopped (SIGINT/SIGTERM), `duration_s` passes, or every source ended.
        A broker that refuses our login at startup is a configuration error: BrokerRefused, nothing scanned."""
        from .outbox import Outbox
        from .publisher import Publisher

        site = self.L.site
        outbox = Outbox(self.db_path)
        self.publisher = Publisher(site.broker, site.edge_id, outbox, utc_offset=site.utc_offset)
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop_event.set())
        self.publisher.start()
        if not self.publisher.wait_connected(startup_wait_s):
            if self.publisher.refused:
                self.publisher.stop(timeout=1)
                outbox.close()
                self.book.close()
                raise BrokerRefused(self.publisher.refused)
            log.warning("MQTT broker %s:%d not reachable yet; scanning anyway, events wait in the outbox",
                        site.broker.host, site.broker.port)
        threads = []
        for cam in self.L.cameras:
            if not cam.enabled:
                continue
            t = threading.Thread(target=self._camera_loop, args=(cam,), name=f"cam-{cam.id}", daemon=True)
            t.start()
            threads.append(t)
        t0 = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if duration_s is not None and time.monotonic() - t0 >= duration_s:
                    break
                if threads and not any(t.is_alive() for t in threads):
                    break  # every source ended (files) or failed
                self.stop_event.wait(0.2)
        finally:
            self.stop_event.set()
            for t in threads:
                t.join(timeout=10)
            self.book.close()
            deadline = time.monotonic() + 10
            while outbox.pending_count() and time.monotonic() < deadline and self.publisher.connected:
                time.sleep(0.1)
            st = self.publisher.stats()
            self.summary.published, self.summary.pending = st.acked, outbox.pending_count()
            self.publisher.stop()
            outbox.close()
        return self.summary
