"""The edge runtime: cameras → detector → rules → incident book → outbox → MQTT, in one process.

`EdgeApp.run()` starts in order (state, model, publisher, cameras) and stops in reverse. Live cameras each get a
thread that scans on their own cadence; a replay instead merges all clips by media time in one thread, so the
same clips always give the same events.

Commands from the centre (edge/commands.py) arrive on paho's network thread, which only queues them; they are
applied between scans (at the start of a scan, and by the supervising loop while cameras are silent) under the
app's state lock, which every scan holds for its rules → incident book part: the book and the rules are never
touched by a command and a scan at once. A replay has no broker: `submit_command` or `commands.handle` drive it.
"""
from __future__ import annotations

import collections
import ctypes
import heapq
import json
import logging
import os
import queue
import signal
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from .batcher import SharedDetector
from .commands import CommandDispatcher
from .config import DEFAULT_PROFILE, Camera, ConfigError, Rules, Site, load_rules, load_site, mask_url, rules_path
from .detector import CUT_EDGE_PX, Detector
from .evidence import evidence_jpeg
from .incidents import IncidentBook
from .locate import Locator
from .messages import IncidentSink, camera_status_message
from .rules import RuleSet
from .sources import FileSource, RtspSource, SourceError, link_state, open_source
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
    scans_by_camera: dict[str, int] = field(default_factory=dict)
    site_reloads: int = 0


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
    rules_paths: dict[str, Path] = field(default_factory=dict)  # camera → its rule file (re-read by `reload`)
    rules_override: bool = False  # one rule file for every camera (replay --rules): no `camera:` check


def resolve(path: str, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for cand in (base / p, ROOT / p):
        if cand.exists():
            return cand
    return base / p


def load_camera_rules(paths: dict[str, Path], class_names: list[str], thresholds: list[float],
                      check_camera: bool = True) -> tuple[dict[str, Rules], dict[str, RuleSet], list[str]]:
    """Read and compile each camera's rule file (every profile in it too); problems come back as lines naming file
    and key, so a caller can report them all at once (`check`) or refuse them all (a `reload` command)."""
    problems: list[str] = []
    rules: dict[str, Rules] = {}
    rulesets: dict[str, RuleSet] = {}
    for cam_id, rp in paths.items():
        try:
            r = load_rules(rp) if rp.exists() else Rules()
            if not rp.exists():
                log.warning("camera %s: no rule file %s; using defaults (whole frame, manifest thresholds)", cam_id, rp)
            if r.camera is not None and r.camera != cam_id and check_camera:
                problems.append(f"{rp}: camera: says {r.camera!r} but the site uses it for camera {cam_id!r}")
            rulesets[cam_id] = RuleSet.compile(r, class_names, thresholds)
            for name in r.profiles:
                try:
                    RuleSet.compile(r.with_profile(name), class_names, thresholds)
                except ValueError as e:
                    problems.append(f"{rp}: profiles.{name}.classes: {e}")
            rules[cam_id] = r
        except ConfigError as e:
            problems.append(str(e))
        except ValueError as e:
            problems.append(f"{rp}: classes: {e}")
    return rules, rulesets, problems


REPLAY_THREADS = 2  # a replay is for speed: onnxruntime threads for its one-frame-at-a-time inference
MALLOC_ARENAS = 2


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's heap arenas. glibc gives threads that allocate at once their own arenas (up to 8 per core),
    and a box runs two threads per camera, each freeing multi-megabyte frames: memory freed in one arena is not
    reused by another. Measured (bench/README.md, 16 -> 32 cameras): RSS 812 -> 633 MB at 16 cameras, 26.5 ->
    24.6 MB per added camera, no CPU cost seen. MALLOC_ARENA_MAX in the environment wins; elsewhere than glibc
    this does nothing. True when the cap was set here."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return ctypes.CDLL("libc.so.6").mallopt(-8, n) == 1  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def single_threaded_opencv() -> None:
    """One thread per OpenCV call on a live box. Its cameras already run in parallel; splitting a 1080p resize or
    colour conversion over the cores as well only adds wake-ups: measured, converting and letterboxing one frame
    costs 2.7 ms of CPU with OpenCV's default pool (2 threads here) and 2.1 ms with one (bench/README.md)."""
    cv2.setNumThreads(1)


def load_everything(site_path: Path, model: Path | None = None, rules_override: Path | None = None,
                    threads: int | None = None) -> Loaded:
    """Load site, rules and model, and cross-check them; raise ConfigError listing every problem found.
    `threads`: onnxruntime threads per inference (default: the site's `inference.threads`)."""
    site_path = Path(site_path).resolve()
    site = load_site(site_path)
    base = site_path.parent
    from .detector import ModelMismatchError
    from .manifest import ManifestError

    model_path = model or resolve(site.model, base)
    try:
        det = Detector(model_path, intra_op_num_threads=threads or site.inference.threads, flip=site.inference.flip)
    except (ManifestError, ModelMismatchError) as e:
        raise ConfigError(f"{site_path}: model: {e}") from None
    except Exception as e:  # onnxruntime's own errors for a file that is not a model
        raise ConfigError(f"{site_path}: model {model_path}: cannot load ({type(e).__name__}: {e})") from None
    return complete_site(site, site_path, det, rules_override)


def complete_site(site: Site, site_path: Path, det: Detector, rules_override: Path | None = None) -> Loaded:
    """A loaded site around a detector already made: its cameras' rules, video paths and calibrations, checked
    together (ConfigError listing every problem). Also what a running box re-reads when its site file changes."""
    base = site_path.parent
    paths = {cam.id: rules_override or rules_path(site_path, cam) for cam in site.cameras}
    rules, rulesets, problems = load_camera_rules(paths, det.class_names, det.manifest.thresholds,
                                                  check_camera=rules_override is None)
    cams: list[Camera] = []
    for cam in site.cameras:
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
    return Loaded(site, site_path, rules, rulesets, det, cams, locator, paths, rules_override is not None)


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
                 min_media_s: float | None = None, clock: Callable[[], float] | None = None) -> None:
        """`speed`: pace file cameras at this multiple of real time (the demo); None = as fast as possible.
        `min_media_s`/`max_media_s` bound a replay, so a test can stop one and resume it on the same state.
        `clock`: the time commands act at (default: wall time live, the latest frame's time in a replay)."""
        self.L = loaded
        self.speed = speed
        self.ts_offset = ts_offset  # file cameras (replay, demo): media second 0 is this epoch time (real dates)
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
                                 merge_radius_m=geo.class_merge_radius_m, default_merge_m=geo.merge_radius_m,
                                 other_class_m=geo.other_class_m, may_share_place=geo.may_share_place)
        if loaded.locator.inventory is not None:
            from .geo import CoverLedger

            self._ledger_conn = sqlite3.connect(str(self.db_path), check_same_thread=False, isolation_level=None)
            loaded.locator.ledger = CoverLedger(self._ledger_conn)
        self.publisher = None
        # a replay runs one frame at a time; `run_live` swaps in the batching one for its camera threads
        self.detector: Detector | SharedDetector = loaded.detector
        self._lock = threading.Lock()
        # commands: queued by paho's thread, applied between scans under _state_lock (see the module docstring)
        self._clock = clock
        self._frame_now: float | None = None
        self._state_lock = threading.Lock()
        self._commands_in: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=256)
        self._sources: dict[str, Any] = {}
        self._cams: dict[str, tuple[threading.Thread, threading.Event]] = {}  # live camera threads, their stops
        self._status_sent: dict[str, tuple[str, float]] = {}  # camera → (state, monotonic) last published
        self._scan_times: dict[str, collections.deque[float]] = {}  # camera → monotonic times of its scans (1 h)
        self._base_rules: dict[str, Rules] = dict(loaded.rules)
        self.profile = DEFAULT_PROFILE
        saved = self.book.setting("profile")
        if saved and saved != DEFAULT_PROFILE:
            if saved in self.profile_names():
                self._use_rules(self._base_rules, saved)
                log.info("rule profile %r in force (set by the centre before the restart)", saved)
            else:
                log.warning("rule profile %r (set by the centre) is in no rule file any more; using the default", saved)
        self.commands = CommandDispatcher(self, Topics(site.broker.topic_prefix, site.edge_id),
                                          utc_offset=site.utc_offset, settings=site.commands)

    # ------------------------------------------------------------------ scanning
    def process(self, frame: Frame) -> list[IncidentEvent]:
        """One scan: detect, apply the camera's rules, vote. Runs on the frame's own timestamp. Commands that
        came since the last scan are applied first; a snapshot waiting for this camera gets this frame."""
        with self._lock:
            self._frame_now = frame.ts if self._frame_now is None else max(self._frame_now, frame.ts)
        self.apply_commands()
        rs = self.L.rulesets.get(frame.camera_id)
        if rs is None:  # the camera left the site file while this frame was on its way
            return []
        w, h = frame.size
        tiles = rs.tiles_px(w, h)
        # tiles are cut from the BGR picture (kept on the frame for evidence); without them the detector shrinks
        # the camera's planes before converting colour
        dets = self.detector.detect_tiled(frame.image if tiles else frame.pixels, tiles, conf=rs.min_threshold)
        with self._state_lock:
            kept, zone_idx, strong = rs.apply_with_weak(dets, w, h)
            zones = [rs.zone_name(int(z)) for z in zone_idx]
            ground = self.L.locator.ground(frame.camera_id, kept, w, h)
            water = self.L.locator.covers_read_as_water(kept, ground)
            if water.any():
                log.debug("%s: %d inventory cover(s) read as ponding at %.1fs, dropped", frame.camera_id,
                          int(water.sum()), frame.ts)
                dry = ~water
                kept, strong, ground = kept[dry], strong[dry], ground.subset(dry)
                zones = [z for z, k in zip(zones, dry) if k]
            unsure = self.L.locator.off_inventory_unsure(kept, ground)
            strong &= ~unsure
            # the sustained path's measure: score against the class threshold. Held-back manholes do not count, nor
            # boxes cut by the frame's edge: part of a thing, its foot unseen (801: a parked cart cut by the bottom
            # edge, read as a material pile at 0.6-0.7 of the threshold for a minute)
            cut = ((kept.xyxy[:, :2] <= CUT_EDGE_PX).any(axis=1) | (kept.xyxy[:, 2] >= w - CUT_EDGE_PX)
                   | (kept.xyxy[:, 3] >= h - CUT_EDGE_PX))
            strength = np.where(unsure | cut, 0.0, kept.confidence / rs.thresholds[kept.class_id])
            self.L.locator.record_covers(kept[strong], ground.subset(strong), frame.ts)
            events = self.book.update(frame.camera_id, frame.ts, kept, zones, frame, ground, strong=strong,
                                      strength=strength)
            if self.commands.wants_frame(frame.camera_id):
                self.commands.on_frame(frame.camera_id, frame.ts, frame.image)
        with self._lock:
            self.summary.scans += 1
            self.summary.scans_by_camera[frame.camera_id] = self.summary.scans_by_camera.get(frame.camera_id, 0) + 1
            if not self.replay:  # the camera status counts scans of the last hour
                self._scan_times.setdefault(frame.camera_id, collections.deque()).append(time.monotonic())
            for ev in events:
                setattr(self.summary, ev.event, getattr(self.summary, ev.event) + 1)
        for ev in events:
            log.info("%s %s %s on %s at %.1fs (conf %.2f)", ev.event, ev.incident_id, ev.class_name, ev.camera_id,
                     ev.ts, ev.confidence)
            if self.on_event:
                self.on_event(ev)
        return events

    def _camera_loop(self, cam: Camera, stop: threading.Event) -> None:
        """One live camera's thread, until `stop` (the app stopping, or the camera leaving the site file)."""
        try:
            src = self._open(cam)
            if isinstance(src, RtspSource):
                src.on_status = self._camera_status
            t0, ts0 = time.monotonic(), None
            for frame in src.frames(stop):
                if self.speed and isinstance(src, FileSource):
                    ts0 = frame.ts if ts0 is None else ts0
                    delay = t0 + (frame.ts - ts0) / self.speed - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                if stop.is_set():
                    break
                if self.ts_offset and isinstance(src, FileSource):  # a clip as a live camera: real dates
                    frame = replace(frame, ts=frame.ts + self.ts_offset)
                self.process(frame)
                frame = None  # type: ignore[assignment]  # not kept until the next scan (1080p: 3 MB, 9 as BGR)
        except SourceError as e:
            log.error("%s", e)
            with self._lock:
                self.summary.camera_errors[cam.id] = str(e)
        except Exception:  # one camera's failure must not stop the others
            log.exception("camera %s: scanning stopped by an unexpected error", cam.id)
            with self._lock:
                self.summary.camera_errors[cam.id] = "unexpected error (see log)"

    def _camera_status(self, camera_id: str, st: dict[str, Any]) -> None:
        """A live camera's reader changed state (its thread): tell the centre now."""
        with self._lock:
            src = self._sources.get(camera_id)
        if src is not None:
            self._publish_camera_status(camera_id, src, st, link_state(st, src.read_timeout_s))

    def _status_tick(self, every_s: float) -> None:
        """Republish each live camera's status when its state moved (degraded comes and goes with time, not with
        a reader event) or every `every_s`, so the centre sees frame age and link health while all is quiet."""
        with self._lock:
            sources = dict(self._sources)
            sent = dict(self._status_sent)
        now = time.monotonic()
        for cid, src in sources.items():
            if not isinstance(src, RtspSource):
                continue
            st = src.status()
            state = link_state(st, src.read_timeout_s)
            last = sent.get(cid)
            if last is None or last[0] != state or now - last[1] >= every_s:
                self._publish_camera_status(cid, src, st, state)

    def camera_health(self, camera_id: str, src: Any, st: dict[str, Any]) -> dict[str, Any]:
        """The `health` object of the camera's status message."""
        now = time.monotonic()
        with self._lock:
            scans = self._scan_times.get(camera_id)
            while scans and now - scans[0] > 3600:
                scans.popleft()
            n_scans = len(scans) if scans else 0
        health = {"reconnects_1h": st.get("reconnects_1h", 0), "stalls_1h": st.get("stalls_1h", 0),
                  "last_frame_age_s": st.get("last_frame_age_s"), "scans_1h": n_scans}
        ingest = getattr(src, "ingest", None)
        if ingest is not None:
            info = ingest()
            health.update(decode=info.get("mode"), gop_s=info.get("gop_s"))
        return health

    def _publish_camera_status(self, camera_id: str, src: Any, st: dict[str, Any], state: str) -> None:
        """A live camera's retained status from its reader's status `st` and its `link_state`."""
        with self._lock:
            self._status_sent[camera_id] = (state, time.monotonic())
        if self.publisher is None:
            return
        health = self.camera_health(camera_id, src, st)
        if st.get("error") and state == "offline":
            reason = st["error"]
        elif state == "degraded":
            reason = (f"link broke {health['stalls_1h']} (stalls) + {health['reconnects_1h']} (reopens) times in the "
                      f"last hour; last frame {health['last_frame_age_s']} s ago")
        else:
            reason = st.get("state") if st.get("state") != "online" else None
        self._send_camera_status(camera_id, state, reason, health)

    def _send_camera_status(self, camera_id: str, state: str, reason: str | None,
                            health: dict[str, Any] | None = None) -> None:
        """Retained camera status for the centre (never the URL: the source already masks it)."""
        if self.publisher is None:
            return
        site = self.L.site
        msg = camera_status_message(site.edge_id, camera_id, state, ts=time.time(),  # type: ignore[arg-type]
                                    utc_offset=site.utc_offset, reason=reason, health=health)
        self.publisher.publish_retained(Topics(site.broker.topic_prefix, site.edge_id).camera_status(camera_id), msg)

    def _merged_files(self) -> Iterator[Frame]:
        """All file cameras' scans in media-time order (ties by camera order): a deterministic replay."""
        iters = []
        for k, cam in enumerate(self.L.cameras):
            if not cam.enabled:
                continue
            src = self._open(cam)
            if not isinstance(src, FileSource):
                raise ConfigError(f"camera {cam.id}: replay needs video files, not a live URL ({mask_url(cam.url)})")
            iters.append(((f.ts, k, f.seq, f) for f in src.frames(self.stop_event)))
        for _, _, _, f in heapq.merge(*iters, key=lambda x: (x[0], x[1], x[2])):
            if self.max_media_s is not None and f.ts > self.max_media_s:
                break
            if self.min_media_s is not None and f.ts <= self.min_media_s:
                continue
            yield f

    def _open(self, cam: Camera) -> Any:
        """The camera's source at the scan interval in force (a profile may change it), kept so a later switch
        reaches it: both sources read `scan_interval_s` afresh for every scan."""
        src = open_source(cam.model_copy(update={"scan_interval_s": self.scan_interval(cam.id)}))
        with self._lock:
            self._sources[cam.id] = src
        return src

    # ------------------------------------------------------------------ cameras coming and going
    def _start_camera(self, cam: Camera) -> None:
        stop = threading.Event()
        t = threading.Thread(target=self._camera_loop, args=(cam, stop), name=f"cam-{cam.id}", daemon=True)
        with self._lock:
            self._cams[cam.id] = (t, stop)
        t.start()

    def _stop_camera(self, camera_id: str, why: str | None) -> None:
        """Stop a camera's thread (it ends within its open/read timeout); with `why`, the retained status says
        the camera is disabled and why."""
        with self._lock:
            entry = self._cams.pop(camera_id, None)
            src = self._sources.pop(camera_id, None)
            self._status_sent.pop(camera_id, None)
        if entry is not None:
            entry[1].set()
        if src is not None and isinstance(src, RtspSource):
            src.on_status = None  # its reader going offline is not news: the camera is gone
        if why:
            self._send_camera_status(camera_id, "disabled", why)

    def _site_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.L.site_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload_site_logged(self) -> None:
        try:
            result = self.reload_site()
        except ConfigError as e:
            log.error("site file changed but cannot be used; still running the previous cameras:\n%s", e)
            return
        if any(result[k] for k in ("added", "changed", "removed")):
            log.info("site file reloaded: added %s, changed %s, removed %s", result["added"] or "none",
                     result["changed"] or "none", result["removed"] or "none")

    def reload_site(self) -> dict[str, list[str]]:
        """Apply the site file as it is now to the running box: cameras added, changed (stopped, started anew) or
        removed/disabled, with their rule files and calibrations; nothing else stops. Only `cameras` may change
        while running: a changed edge id, broker, model, geo layer or outbox is a ConfigError (restart to apply),
        as is any problem `check` would report; then nothing changes at all."""
        old = self.L
        new_site = load_site(old.site_path)
        others = [k for k in Site.model_fields if k != "cameras" and getattr(new_site, k) != getattr(old.site, k)]
        if others:
            raise ConfigError(f"{old.site_path}: {', '.join(others)} changed; only cameras can change while the edge "
                              "runs: restart it to apply")
        new = complete_site(new_site, old.site_path, old.detector,
                            next(iter(old.rules_paths.values())) if old.rules_override else None)
        before = {c.id: c for c in old.cameras if c.enabled}
        after = {c.id: c for c in new.cameras if c.enabled}
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(cid for cid in set(after) & set(before) if after[cid] != before[cid])
        with self._state_lock:
            if old.locator.ledger is not None:
                new.locator.ledger = old.locator.ledger
            old.cameras, old.site, old.rules_paths, old.locator = new.cameras, new.site, new.rules_paths, new.locator
            self._use_rules(new.rules, self.profile)
        listed = {c.id for c in new.cameras}
        for cid in removed:
            self._stop_camera(cid, "disabled in the site file" if cid in listed else "removed from the site file")
        for cid in changed:
            self._stop_camera(cid, None)
        for cid in added + changed:
            self._start_camera(after[cid])
        with self._lock:
            self.summary.cameras = len(after)
            self.summary.site_reloads += 1
        return {"added": added, "changed": changed, "removed": removed}

    # ------------------------------------------------------------------ commands from the centre
    def submit_command(self, command: str, payload: bytes) -> None:
        """Queue a command for the pipeline (the Publisher's `on_command`, on paho's thread): returns at once."""
        try:
            self._commands_in.put_nowait((command, payload))
        except queue.Full:
            log.error("command %r dropped: %d commands already wait to be applied", command[:64],
                      self._commands_in.maxsize)

    def apply_commands(self) -> list[dict[str, Any]]:
        """Apply the queued commands in the order they came (one thread drains the queue at a time) and answer the
        snapshots that timed out; returns the replies made now."""
        replies: list[dict[str, Any]] = []
        with self._state_lock:
            while True:
                try:
                    command, payload = self._commands_in.get_nowait()
                except queue.Empty:
                    break
                reply = self.commands.handle(command, payload)
                if reply is not None:
                    replies.append(reply)
            replies += self.commands.expire(self.now())
        return replies

    def now(self) -> float:
        """The clock commands act at: injected, else the latest frame's time in a replay (media time, as the
        incident book sees it) and the wall clock live (frames are stamped with capture time)."""
        if self._clock is not None:
            return self._clock()
        if self.replay:
            with self._lock:
                return self._frame_now if self._frame_now is not None else self.ts_offset
        return time.time()

    def camera_ids(self) -> dict[str, bool]:
        return {c.id: c.enabled for c in self.L.cameras}

    def profile_names(self) -> list[str]:
        return sorted({p for r in self._base_rules.values() for p in r.profiles})

    def scan_interval(self, camera_id: str) -> float:
        """The camera's scan interval under the profile in force."""
        cam = next(c for c in self.L.cameras if c.id == camera_id)
        base = self._base_rules.get(camera_id)
        return (base.scan_interval_s(self.profile) if base is not None else None) or cam.scan_interval_s

    def _use_rules(self, base: dict[str, Rules], profile: str) -> None:
        """Put `base` rules under `profile` in force for the next scans: compiled first, swapped whole."""
        names, thresholds = self.L.detector.class_names, self.L.detector.manifest.thresholds
        effective = {cid: r.with_profile(profile) for cid, r in base.items()}
        rulesets = {cid: RuleSet.compile(r, names, thresholds) for cid, r in effective.items()}
        self._base_rules, self.profile = dict(base), profile
        self.L.rules, self.L.rulesets = effective, rulesets
        self.book.set_rules(effective)
        with self._lock:
            sources = dict(self._sources)
        known = {c.id for c in self.L.cameras}
        for cid, src in sources.items():
            if cid in known:  # (a camera leaving the site file is stopped right after)
                src.scan_interval_s = self.scan_interval(cid)

    def _profile_result(self) -> dict[str, Any]:
        return {"profile": self.profile, "scan_interval_s": {c.id: self.scan_interval(c.id) for c in self.L.cameras}}

    def switch_profile(self, profile: str) -> dict[str, Any]:
        previous = self.profile
        self._use_rules(self._base_rules, profile)
        self.book.set_setting("profile", profile)
        log.info("rule profile %r in force (was %r)", profile, previous)
        return {**self._profile_result(), "previous_profile": previous}

    def reload_rules(self) -> dict[str, Any]:
        L = self.L
        rules, _, problems = load_camera_rules(L.rules_paths, L.detector.class_names, L.detector.manifest.thresholds,
                                               check_camera=not L.rules_override)
        if problems:
            raise ConfigError("\n".join(problems))
        if self.profile != DEFAULT_PROFILE and not any(self.profile in r.profiles for r in rules.values()):
            raise ConfigError(f"the profile in force, {self.profile!r}, is in none of the new rule files; "
                              "switch to another profile first")
        self._use_rules(rules, self.profile)
        log.info("rule files reloaded (%d cameras, profile %r)", len(rules), self.profile)
        return self._profile_result()

    def dismiss(self, incident_id: str, ts: float, until_ts: float, also: list[tuple[str, bytes]]) -> bool:
        try:
            ev = self.book.dismiss(incident_id, ts, until_ts, also)
        except KeyError:
            return False
        with self._lock:
            self.summary.resolved += 1
        if self.on_event:
            self.on_event(ev)
        return True

    def dismissed_until(self, incident_id: str) -> float | None:
        s = self.book.dismissal(incident_id)
        return None if s is None else s.until_ts

    def write(self, items: list[tuple[str, bytes]]) -> None:
        """Replies and snapshots go into the outbox table of the state file, like incident messages."""
        self.book.enqueue(items)

    def _abandon_snapshots(self, reason: str) -> None:
        with self._state_lock:
            self.commands.abandon(reason)

    def close(self) -> None:
        """Close the state file (for callers that drive `process` themselves; the run methods close it)."""
        self.book.close()

    # ------------------------------------------------------------------ lifecycle
    def run_replay(self) -> Summary:
        try:
            for frame in self._merged_files():
                if self.stop_event.is_set():
                    break
                self.process(replace(frame, ts=frame.ts + self.ts_offset) if self.ts_offset else frame)
            self.apply_commands()
            self._abandon_snapshots("the replay ran out of frames")
        finally:
            if self.jsonl:
                self.jsonl.close()
            self.book.close()
        return self.summary

    def run_live(self, duration_s: float | None = None, install_signals: bool = True,
                 startup_wait_s: float = 10.0, watch_site: bool = True) -> Summary:
        """Scan every camera until stopped (SIGINT/SIGTERM), `duration_s` passes, or every source ended.
        A broker that refuses our login at startup is a configuration error: BrokerRefused, nothing scanned.
        `watch_site`: cameras added, changed or removed in the site file are applied within a second or two,
        without a restart (see `reload_site`)."""
        from .outbox import Outbox, OutboxLimits
        from .publisher import Publisher

        site = self.L.site
        limit_malloc_arenas()  # before the camera threads allocate
        single_threaded_opencv()
        outbox = Outbox(self.db_path, OutboxLimits(**site.outbox.model_dump()))
        self.publisher = Publisher(site.broker, site.edge_id, outbox, utc_offset=site.utc_offset,
                                   on_command=self.submit_command)
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
        shared = SharedDetector(self.L.detector, site.inference.max_batch).start()
        self.detector = shared
        for cam in self.L.cameras:
            if cam.enabled:
                self._start_camera(cam)
        site_stamp = self._site_stamp()
        t0 = next_tick = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if duration_s is not None and time.monotonic() - t0 >= duration_s:
                    break
                with self._lock:
                    threads = [t for t, _ in self._cams.values()]
                if threads and not any(t.is_alive() for t in threads):
                    break  # every source ended (files) or failed
                self.apply_commands()  # also while every camera is silent
                if time.monotonic() >= next_tick:
                    self._status_tick(self.L.site.broker.camera_status_s)
                    if watch_site and (stamp := self._site_stamp()) != site_stamp:
                        site_stamp = stamp
                        self._reload_site_logged()
                    next_tick = time.monotonic() + 1.0
                self.stop_event.wait(0.2)
        finally:
            self.stop_event.set()
            with self._lock:
                cams = list(self._cams.values())
            for _, stop in cams:
                stop.set()
            for t, _ in cams:
                t.join(timeout=10)
            shared.close()
            log.info("inference: %s", shared.stats())
            self.apply_commands()
            self._abandon_snapshots("the edge stopped first")
            self.book.close()
            deadline = time.monotonic() + 10
            while outbox.pending_count() and time.monotonic() < deadline and self.publisher.connected:
                time.sleep(0.1)
            st = self.publisher.stats()
            self.summary.published, self.summary.pending = st.acked, outbox.pending_count()
            self.publisher.stop()
            outbox.close()
        return self.summary
